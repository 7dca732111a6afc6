"""The outside world: image models, chat models, run artifacts and the trace."""
