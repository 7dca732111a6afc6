"""The user's own picture (`--init-image`): checked before the run folder exists, then fitted to the run's size
and kept in the run folder as image 0 (`00.png`), the baseline every drawn image is judged against.

Fitting keeps the middle: the picture is cropped to the run's aspect ratio around its centre, then resized
(Lanczos) to the run's width and height, so nothing is stretched. The run's size is --width/--height where
given, else the image model's default; a model without one keeps the picture's own size, each side rounded
down to a multiple of 8 (the latent grid of every diffusers VAE). A phone photo's EXIF rotation is applied
first, so the picture is judged the way it is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.errors import SettingsError

if TYPE_CHECKING:
    from PIL import Image

    from refineloop.settings import RunSettings

#: The formats --init-image takes, as Pillow names them.
FORMATS = ("PNG", "JPEG", "WEBP")


def checked_picture(path: str) -> str:
    """The absolute path of a readable PNG, JPEG or WebP picture; SettingsError in one line otherwise."""
    from PIL import Image, UnidentifiedImageError

    where = Path(path).expanduser()
    try:
        with Image.open(where) as img:
            kind = img.format
            img.verify()
    except FileNotFoundError:
        raise SettingsError(f"--init-image {path}: no such file, check the path") from None
    except IsADirectoryError:
        raise SettingsError(f"--init-image {path} is a folder: name a picture in it") from None
    except Image.DecompressionBombError:
        raise SettingsError(f"--init-image {path} has too many pixels to open safely: scale it down first") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        detail = type(exc).__name__
        raise SettingsError(
            f"--init-image {path} is not a readable picture ({detail}): pass a PNG, JPEG or WebP"
        ) from None
    if kind not in FORMATS:
        raise SettingsError(f"--init-image {path} is a {kind} file: convert it to PNG, JPEG or WebP")
    return str(where.resolve())


def run_size(settings: RunSettings, model: Any, own: tuple[int, int]) -> tuple[int, int]:
    """The size the run draws at: --width/--height, else the model's default, else `own` rounded down to 8s."""
    probe = getattr(model, "default_size", None)
    default = probe() if callable(probe) else (None, None)
    width = settings.width or default[0] or max(8, own[0] // 8 * 8)
    height = settings.height or default[1] or max(8, own[1] // 8 * 8)
    return int(width), int(height)


def fit_picture(path: str, settings: RunSettings, model: Any) -> Image.Image:
    """The picture at `path`, upright, RGB, centre-cropped to the run's aspect ratio and resized to its size."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        picture = ImageOps.exif_transpose(img).convert("RGB")
    width, height = run_size(settings, model, picture.size)
    return ImageOps.fit(picture, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def improvement(baseline: Mapping[str, Any] | None, best: Mapping[str, Any] | None) -> str | None:
    """Whether the run improved on the user's picture, in words (its sidecar `baseline`, the run's `best`); None
    for a run that did not start from one."""
    from refineloop.state import score_words

    if not baseline or baseline.get("decision") != "baseline":
        return None
    name = baseline.get("source") or "your picture"
    start = f"{name} (image 0, {score_words(baseline.get('score'))}/10)"
    if not best or not best.get("iteration"):
        return f"{start}: no drawn image beat it, so best.png is your picture"
    return f"{start}: image {best['iteration']} improved on it ({score_words(best.get('score'))}/10)"
