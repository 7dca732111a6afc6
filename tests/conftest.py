"""Shared fixtures: scripted critics, tiny models and fake servers, all built locally."""
