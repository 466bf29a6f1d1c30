"""Image loading and the transforms the published pipeline uses."""
from __future__ import annotations

import logging
from pathlib import Path

import PIL
from PIL import Image, UnidentifiedImageError

from omgm.errors import OmgmError

log = logging.getLogger(__name__)
if int(PIL.__version__.split(".")[0]) >= 13:
    log.warning("Pillow %s resizes differently from the Pillow 10-12 the published pixels came from "
                "(docs/faithfulness.md): install 'pillow>=10.3,<13' for the published bytes", PIL.__version__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageLoadError(OmgmError, OSError):
    """An image file that is missing or cannot be decoded; the message names the file."""


def load_image(path: str | Path | Image.Image) -> Image.Image:
    """Open an image as RGB, fully decoded, or raise :class:`ImageLoadError` naming the file. An image already in
    memory is returned as an RGB copy (the caller's object is never changed)."""
    if isinstance(path, Image.Image):
        return path.convert("RGB") if path.mode != "RGB" else path.copy()
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageLoadError(f"image not found: {p}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode image {p}: {exc}") from None


def target_pad(image: Image.Image, ratio: float = 1.25) -> Image.Image:
    """The reranker's TargetPad(1.25), as EchoSight's ``data_utils.TargetPad``: when long/short side >= ``ratio``,
    pad with black (zeros) towards the target ratio, ``int((max(w, h) / ratio - side) / 2)`` on both ends of the
    short side (not to a square); else unchanged. Resize and centre-crop follow it.
    """
    w, h = image.size
    if max(w, h) / max(1, min(w, h)) < ratio:
        return image
    scaled = max(w, h) / ratio
    hp, vp = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
    canvas = Image.new(image.mode, (w + 2 * hp, h + 2 * vp), 0)
    canvas.paste(image, (hp, vp))
    return canvas


def clip_eval_transform(size: int = 224):
    """CLIP's evaluation transform: resize the shorter side to ``size`` (bicubic), centre crop, tensor, CLIP mean/std.

    As open_clip, EVA-CLIP's and Visualized-BGE's own code build it (through torchvision, on PIL images).
    """
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])
