"""The retriever interface and what names one (step 1 and the index builders).

A :class:`Retriever` embeds images and texts into one space, L2-normalised float32 rows:
``preprocess(image) -> tensor``, ``encode_pixels(batch) -> ndarray``, ``encode_images(images)``,
``encode_texts(texts)``, ``dim`` and ``model_id`` (what an index manifest records); composed models add
``encode_composed``. :class:`RetrieverSpec` is what ``--retriever_vit`` and its companion flags name;
:func:`omgm.retrieval.registry.build_retriever` turns one into the other. The adapters (``encoders``, ``vista``,
``mmret``) import this module; it imports none of them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from omgm.devices import device_setting
from omgm.settings import setting


def file_fingerprint(path: str | Path, block: int = 1 << 20) -> str:
    """A cheap identity of a (possibly multi-GB) weight file: size plus the first and last MiB."""
    p = Path(path)
    h = hashlib.sha256(str(p.stat().st_size).encode())
    with p.open("rb") as fh:
        h.update(fh.read(block))
        if p.stat().st_size > block:
            fh.seek(-block, os.SEEK_END)
            h.update(fh.read(block))
    return h.hexdigest()[:16]


def l2_normalise(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32, copy=False)


class Retriever:
    """Interface; see the module docstring. ``truncated_texts`` counts texts cut to the context length."""

    name: str = "retriever"
    model_id: str = ""
    dim: int = 0
    device: torch.device = torch.device("cpu")

    def __init__(self) -> None:
        self.truncated_texts = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One image as the model's pixel tensor."""
        raise NotImplementedError

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 embeddings of a batch of pixel tensors."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings of texts (cut to the text tower's context, counted)."""
        raise NotImplementedError

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised float32 embeddings of PIL images."""
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]))

    supports_composed = False

    def encode_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """One embedding per (image, text) pair, for models trained for composed queries."""
        raise NotImplementedError(f"{self.name} has no composed (image + text) encoding")


@dataclass
class RetrieverSpec:
    """What ``--retriever_vit`` and its companion flags name (the flags are made from these fields)."""

    retriever_vit: str = setting("eva-clip", help="a registered retriever (omgm list-models) or any open_clip model")
    _: KW_ONLY
    retriever_path: str | None = setting(help="hub id or folder of the model (eva-clip, hf-clip, vista BGE, mmret)")
    retriever_pretrained: str | None = setting(help="open_clip pretrained tag or checkpoint file; the released "
                                                    "Visualized-BGE .pth")
    device: str | None = device_setting()
    precision: str | None = setting(help="fp16 | bf16 | fp32 (default: fp16 on GPU, fp32 on CPU)")
    trust_remote_code: bool | None = setting(switch=True, help="run the model folder's own Python code: needed by "
                                             "eva-clip (EVA-CLIP-8B) and other remote-code models; never on unless given")
