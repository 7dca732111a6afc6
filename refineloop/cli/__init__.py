"""The `refineloop` command line."""
