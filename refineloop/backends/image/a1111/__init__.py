"""The A1111 backend: an A1111-compatible server (A1111 WebUI, Forge, SD.Next) draws with its own checkpoints.

`model` (`A1111ImageModel`: the txt2img and img2img calls, seeds, one-line errors) and `entry` (its line in the
backend table: the checkpoint and the credentials). Nothing here imports torch.
"""
