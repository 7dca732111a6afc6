"""Image models: the protocol every one implements, and the diffusers backend."""
