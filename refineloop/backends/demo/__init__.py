"""Offline stand-ins for the demo and the tests: a procedural image model and a heuristic critic. NOT real models."""
