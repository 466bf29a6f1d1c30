"""Reading weight files of a model folder (safetensors or PyTorch ``.bin``, single or sharded), safely.

``.bin`` files are read with ``torch.load(weights_only=True)``: tensors only, nothing executed.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from omgm.errors import OmgmError

_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLES = ("model.safetensors", "pytorch_model.bin")


class WeightFileError(OmgmError, ValueError):
    """A model folder whose weight files are missing or unreadable; the message names the file."""


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of ``folder``: the shards its index lists, or its single file."""
    folder = Path(folder)
    for name in _INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError, TypeError) as exc:   # JSON and UTF-8 errors are ValueErrors
                raise WeightFileError(f"{index}: not a weight index ({exc})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise WeightFileError(f"{index} lists shards that are not in {folder}: {missing[:3]}")
            return [folder / s for s in shards]
    for name in _SINGLES:
        if (folder / name).is_file():
            return [folder / name]
    raise WeightFileError(f"{folder}: no weights (expected {' or '.join(_SINGLES)}, or a sharded index)")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many types for a bad file
        raise WeightFileError(f"cannot read weights {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightFileError(f"{path}: expected a flat state dict of tensors")
    return obj


def read_folder_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder (all shards); a key in two shards is an error."""
    out: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        for k, v in read_weights(f).items():
            if k in out:
                raise WeightFileError(f"{f}: tensor {k!r} is also in another shard")
            out[k] = v
    return out
