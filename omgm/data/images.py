"""Image loading and the transforms the published pipeline uses."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from omgm.errors import OmgmError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageLoadError(OmgmError, OSError):
    """An image file that is missing or cannot be decoded; the message names the file."""


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, fully decoded, or raise :class:`ImageLoadError` naming the file."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {p}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot decode image {p}: {exc}") from None


def target_pad(image: Image.Image, ratio: float = 1.25) -> Image.Image:
    """Pad to a square with black (zeros), centred, when long/short side >= ``ratio``; else unchanged.

    The reranker's TargetPad(1.25); resize and centre-crop follow it.
    """
    w, h = image.size
    if max(w, h) / max(1, min(w, h)) < ratio:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), 0)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas
