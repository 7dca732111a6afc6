"""Backends: the models the graph talks to (image models, chat critics) and the one cache that holds them."""
