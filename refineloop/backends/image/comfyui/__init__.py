"""The ComfyUI backend: a user's own workflow, drawn by their ComfyUI server.

`workflow` (where each value goes in an API-format workflow, and the workflow filled in: pure), `client`
(ComfyUI's HTTP and websocket API), `model` (`ComfyImageModel`, the ImageModel protocol) and `entry` (its line
in the backend table). Nothing here imports torch.
"""
