"""Tiny random-weight diffusers pipelines, built from configs so tests never download anything.

Each builder writes a complete diffusers folder (model_index.json plus one subfolder per component) with
`save_pretrained`, so tests load it through the same `from_pretrained` path a real model takes. Torch,
diffusers and transformers are imported inside the builders: importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTokenizer, T5Tokenizer

# Words the tiny tokenizers know as whole tokens, so common prompts do not explode into single characters.
_WORDS = (
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "cat",
    "dog",
    "red",
    "blue",
    "green",
    "sky",
    "sea",
    "house",
    "tree",
    "photo",
    "painting",
    "light",
    "dark",
    "small",
    "large",
)


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 / CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            # Unprintable bytes map past U+00FF so every byte has a visible, distinct character.
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _write_clip_tokenizer(folder: Path) -> int:
    """Write vocab.json + merges.txt for a tiny CLIP BPE tokenizer; return the vocabulary size."""
    base = _byte_chars()
    vocab: dict[str, int] = {}
    for piece in base + [c + "</w>" for c in base]:
        vocab.setdefault(piece, len(vocab))
    merges: list[str] = []
    for word in _WORDS:
        # Merge left to right, so each listed word ends as one `word</w>` token.
        current = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{current} {right}")
            current += right
            vocab.setdefault(current, len(vocab))
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def _clip_tokenizer() -> CLIPTokenizer:
    """A tiny CLIP tokenizer loaded from freshly written files (the way a real one loads)."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="tiny-clip-tok-") as scratch:
        _write_clip_tokenizer(Path(scratch))
        return CLIPTokenizer.from_pretrained(scratch, model_max_length=77)


def _clip_config(tokenizer: CLIPTokenizer, *, hidden: int, projection: int | None = None) -> CLIPTextConfig:
    """A tiny CLIPTextConfig whose special-token ids match `tokenizer`."""
    from transformers import CLIPTextConfig

    extra = {"projection_dim": projection} if projection is not None else {}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _tiny_vae(*, shift_factor: float | None = None) -> AutoencoderKL:
    """A 4-block VAE: scale factor 8 like real SD (a 2-block one is very slow at large sizes)."""
    from diffusers import AutoencoderKL

    extra = {"shift_factor": shift_factor} if shift_factor is not None else {}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        **extra,
    )


def build_tiny_sd(path: str | Path) -> Path:
    """Save a tiny StableDiffusionPipeline (CLIP-only, 77-token budget, 64 px default) into `path`."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    out = Path(path)
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(_clip_config(tokenizer, hidden=32))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    return out


def _t5_tokenizer(max_length: int) -> T5Tokenizer:
    """A tiny unigram T5 tokenizer built in memory (no sentencepiece model needed)."""
    from transformers import T5Tokenizer

    # T5 layout: <pad>=0, </s>=1, <unk>=2, then pieces. Lower scores for single characters make the
    # unigram model prefer whole known words.
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"
    pieces += [(c, -5.0) for c in chars]
    pieces += [("▁" + c, -5.5) for c in chars]
    pieces += [("▁" + w, -1.0) for w in _WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def build_tiny_sd3(path: str | Path, *, largest: int = 256) -> Path:
    """Save a tiny StableDiffusion3Pipeline (2 CLIP + T5 with a 256-token budget, 64 px default) that draws up to
    `largest` px on a side (its position embedding covers that many pixels: 16 patches per 256 px)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    out = Path(path)
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    tokenizer_2 = _clip_tokenizer()
    # SD3 concatenates both CLIP hidden states and pads them to the T5 width, and concatenates both pooled
    # projections: so T5 d_model >= 2 * clip hidden, and pooled_projection_dim == 2 * projection.
    clip_hidden, projection, t5_width = 16, 16, 32
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer, hidden=clip_hidden, projection=projection))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, hidden=clip_hidden, projection=projection))
    tokenizer_3 = _t5_tokenizer(256)
    text_encoder_3 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_3),
            d_model=t5_width,
            d_ff=2 * t5_width,
            d_kv=8,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer_3.pad_token_id,
            eos_token_id=tokenizer_3.eos_token_id,
        )
    )
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=t5_width,
        caption_projection_dim=16,
        pooled_projection_dim=2 * projection,
        pos_embed_max_size=max(16, largest // 16),
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(shift_factor=0.0),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(str(out))
    return out
