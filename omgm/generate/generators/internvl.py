"""InternVL2.5 (``OpenGVLab/InternVL2_5-8B``, remote code) as the published code runs it.

Pixels, by InternVL's dynamic tiling (:func:`tile_image`): the tile grid (cols, rows) with 1 <= cols*rows <= 12
whose aspect ratio is closest to the image's (on an exact tie, a later grid of the list sorted by tile count
wins when the image has more than half the grid's pixel area); the image is resized to (448*cols, 448*rows) and
cut into 448x448 tiles row by row; a 448x448 thumbnail of the whole image follows when there is more than one
tile; each tile is resized to 448x448 (bicubic), turned into a tensor and normalised with ImageNet's mean/std.

Text: ``"<image>\\n"`` + the VLM instruction + prompt core, answered by the model's own ``chat()`` (its template,
greedy, 128 new tokens), in bf16. The omgm style is the same (InternVL already sees the image in its own template).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from omgm.data.images import load_image
from omgm.devices import resolve_device, torch_dtype
from omgm.generate.decoding import restore_v4_decoding
from omgm.generate.generators.base import Generator, GenRequest
from omgm.generate.prompts import check_style, vlm_text
from omgm.hub import load_pretrained

TILE = 448
MAX_TILES = 12
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(min_tiles: int = 1, max_tiles: int = MAX_TILES) -> list[tuple[int, int]]:
    """Every (cols, rows) with min_tiles <= cols*rows <= max_tiles, ordered by tile count (InternVL's order)."""
    grids = set((i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                if min_tiles <= i * j <= max_tiles)
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, max_tiles: int = MAX_TILES, tile: int = TILE) -> tuple[int, int]:
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(1, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def tile_image(image: Image.Image, max_tiles: int = MAX_TILES, tile: int = TILE) -> list[Image.Image]:
    """The tiles (row-major) and, when there are several, the thumbnail last."""
    cols, rows = choose_grid(image.width, image.height, max_tiles, tile)
    resized = image.resize((tile * cols, tile * rows))
    tiles = [resized.crop(((i % cols) * tile, (i // cols) * tile, (i % cols + 1) * tile, (i // cols + 1) * tile))
             for i in range(cols * rows)]
    if len(tiles) != 1:
        tiles.append(image.resize((tile, tile)))
    return tiles


def internvl_pixels(image: Image.Image, max_tiles: int = MAX_TILES, tile: int = TILE) -> torch.Tensor:
    """``[n_tiles, 3, tile, tile]``, normalised, for InternVL's ``chat``."""
    from torchvision import transforms as T

    tf = T.Compose([T.Resize((tile, tile), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    return torch.stack([tf(t) for t in tile_image(image.convert("RGB"), max_tiles, tile)])


class InternVLGenerator(Generator):
    family = "internvl-remote"
    needs_image = True

    def __init__(self, path: str | Path, style: str = "official", device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 128, max_tiles: int = MAX_TILES) -> None:
        from omgm.buffers import restore_nonpersistent_buffers

        self.style = check_style(style)
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype, self.device)
        self.tokenizer = restore_v4_decoding(load_pretrained("AutoTokenizer", path, what="InternVL tokenizer",
                                                             trust_remote_code=True, use_fast=False))
        self.model = load_pretrained("AutoModel", path, what="InternVL generator", dtype=self.dtype,
                                     trust_remote_code=True, low_cpu_mem_usage=True,
                                     use_flash_attn=_has_flash_attn()).eval()
        self.restored_buffers = restore_nonpersistent_buffers(self.model)
        self.model.to(self.device)
        self.max_new_tokens, self.max_tiles, self.name = max_new_tokens, max_tiles, f"internvl:{path}"

    def render(self, req: GenRequest) -> str:
        return "<image>\n" + vlm_text(req.question, req.context, req.dataset)

    def generate(self, reqs: Sequence[GenRequest], batch_size: int = 1) -> list[str]:
        return super().generate(reqs, batch_size=1)            # chat() answers one conversation at a time

    @torch.no_grad()
    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        (req,) = reqs
        pixels = internvl_pixels(load_image(req.image), self.max_tiles).to(self.dtype).to(self.device)
        return [self.model.chat(self.tokenizer, pixels, self.render(req),
                                dict(max_new_tokens=self.max_new_tokens, do_sample=False))]


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True
