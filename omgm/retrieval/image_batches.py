"""Encode many image files with a retriever: decoding and preprocessing in DataLoader workers, one model
call per batch. Files that cannot be decoded are reported (name and reason), never dropped silently."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from omgm.data.images import ImageLoadError, load_image
from omgm.retrieval.base import Retriever


class _Files(Dataset):
    def __init__(self, paths: Sequence[Path], preprocess) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.preprocess(load_image(self.paths[i])), None
        except ImageLoadError as exc:
            return i, None, str(exc)


def _collate(items):
    ok = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, e) for i, _, e in items if e is not None]
    idx = [i for i, _ in ok]
    tensors = [t for _, t in ok]
    pixels = (torch.stack(tensors) if isinstance(tensors[0], torch.Tensor) else tensors) if ok else None
    return idx, pixels, bad


def _identity(image):
    return image


def encode_image_files(retriever: Retriever, paths: Sequence[Path], batch_size: int = 64, num_workers: int = 0,
                       *, progress: bool = True, texts: Sequence[str] | None = None
                       ) -> tuple[np.ndarray, list[bool], dict[int, str]]:
    """Returns ``(embeddings [n, dim], ok flags, {position: error})``; rows of failed files are zeros.
    With ``texts``, each image is encoded together with its text (a composed query)."""
    out = np.zeros((len(paths), retriever.dim), dtype=np.float32)
    ok = [False] * len(paths)
    errors: dict[int, str] = {}
    prep = _identity if texts is not None else retriever.preprocess
    loader = DataLoader(_Files(paths, prep), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate, shuffle=False)
    with tqdm(total=len(paths), desc="encode images", unit=" img", disable=not progress) as bar:
        for idx, pixels, bad in loader:
            if pixels is not None:
                out[idx] = (retriever.encode_composed(pixels, [texts[i] for i in idx]) if texts is not None
                            else retriever.encode_pixels(pixels))
                for i in idx:
                    ok[i] = True
            errors.update(dict(bad))
            bar.update(len(idx) + len(bad))
    return out, ok, errors
