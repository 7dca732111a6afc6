"""A run folder on disk: its lock and checkpoints, images, trace, artifacts and report."""
