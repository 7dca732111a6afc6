"""Write a diffusers SD 1.x pipeline folder back as one checkpoint in the original training code's key layout
(the CompVis / LDM names that model sites' `.safetensors` files use), so the single-file backend can be tested on
a tiny file that diffusers' own conversion must turn back into exactly the folder's weights.

Only what the tiny SD 1.x pipeline of tests.tiny_models holds is mapped: a UNet of plain and cross-attention
blocks, a VAE of plain encoder/decoder blocks with a mid attention, and a CLIP text encoder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Resnet parts: diffusers' name -> the original one.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    (found,) = sorted(folder.glob("*.safetensors"))
    return load_file(str(found))


def _unet_key(key: str, layers: int) -> str:
    """One UNet weight's original name (`layers` resnets per down block); upsamplers are named by the caller."""
    head, _, leaf = key.rpartition(".")
    for new, old in _UNET_FIXED.items():
        if head == new:
            return f"{old}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers + 1) + layer
        return f"input_blocks.{index}.{_part(kind, rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        index = 1 if m[1] == "attentions" else 2 * int(m[2])
        return f"middle_block.{index}.{_part(m[1], m[3])[2:]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        index = int(m[1]) * (layers + 1) + int(m[3])
        return f"output_blocks.{index}.{_part(m[2], m[4])}"
    raise KeyError(f"no original name for UNet weight {key!r}")


def _part(kind: str, rest: str) -> str:
    """`0.<resnet part>` or `1.<attention part>`: the slot inside one original input or output block."""
    if kind == "attentions":
        return f"1.{rest}"
    name, _, leaf = rest.rpartition(".")
    return f"0.{_UNET_RESNET.get(name, name)}.{leaf}"


def unet_layout(weights: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The UNet's weights under `model.diffusion_model.`, named as the original code names them."""
    layers = int(config["layers_per_block"])
    out: dict[str, Any] = {}
    for key, value in weights.items():
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            index = block * (layers + 1) + layers
            slot = 2 if "CrossAttn" in config["up_block_types"][block] else 1
            name = f"output_blocks.{index}.{slot}.conv.{m[2]}"
        else:
            name = _unet_key(key, layers)
        out[f"model.diffusion_model.{name}"] = value
    return out


def _vae_key(key: str, blocks: int) -> tuple[str, bool]:
    """One VAE weight's original name, and whether it is an attention projection (stored as a 1x1 conv)."""
    coder, _, rest = key.partition(".")
    if coder not in ("encoder", "decoder"):
        return key, False  # quant_conv, post_quant_conv
    head, _, leaf = rest.rpartition(".")
    if head in _VAE_FIXED:
        return f"{coder}.{_VAE_FIXED[head]}.{leaf}", False
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        block = int(m[2]) if m[1] == "down" else blocks - 1 - int(m[2])
        return f"{coder}.{m[1]}.{block}.block.{m[3]}.{m[4].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{coder}.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{coder}.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{coder}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{coder}.mid.attn_1.{_VAE_ATTENTION[m[1]]}.{m[2]}", m[1] != "group_norm" and m[2] == "weight"
    return f"{coder}.{rest}", False  # conv_in, conv_out


def vae_layout(weights: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The VAE's weights under `first_stage_model.`, its attention projections as 1x1 convolutions."""
    blocks = len(config["down_block_types"])
    out = {}
    for key, value in weights.items():
        name, conv = _vae_key(key, blocks)
        out[f"first_stage_model.{name}"] = value[:, :, None, None] if conv else value
    return out


def clip_layout(weights: dict[str, Any]) -> dict[str, Any]:
    """The text encoder's weights under `cond_stage_model.transformer.text_model.` (the original files predate
    transformers' flattened CLIPTextModel, which saves them without `text_model.`)."""
    return {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v for k, v in weights.items()}


def write_ldm_checkpoint(pipeline_folder: Path, target: Path) -> Path:
    """Save the SD 1.x pipeline in `pipeline_folder` as one original-layout `.safetensors` file at `target`."""
    from safetensors.torch import save_file

    unet_config = json.loads((pipeline_folder / "unet" / "config.json").read_text())
    vae_config = json.loads((pipeline_folder / "vae" / "config.json").read_text())
    tensors = {
        **unet_layout(_weights(pipeline_folder / "unet"), unet_config),
        **vae_layout(_weights(pipeline_folder / "vae"), vae_config),
        **clip_layout(_weights(pipeline_folder / "text_encoder")),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target))
    return target
