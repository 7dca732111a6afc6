"""Graph nodes, one module each. Every node is a plain `def` (Studio's server rejects blocking async
nodes) and idempotent: re-run after a crash, it rewrites the same files and returns the same update."""
