"""Applications of the graph: the engine that runs one, batches, forks."""
