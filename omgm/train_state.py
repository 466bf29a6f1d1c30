"""What resumable trainers share: finding the last complete checkpoint, reading a training state that holds
only tensors and numbers (``weights_only=True``, never code), capturing and restoring every RNG in that form,
and dropping log lines written after the checkpoint a resumed run restarts from.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from omgm.errors import OmgmError
from omgm.io import atomic_write, read_jsonl


class ResumeStateError(OmgmError, ValueError):
    """A training state file that cannot be read as tensors and numbers (damaged, or not one omgm wrote)."""


def latest_checkpoint(save_dir: Path, weights: str = "model_{}.pth") -> int | None:
    """The last step with both ``state_{step}.pt`` and its weights file (``weights`` formatted with the step)."""
    steps = [int(p.stem.split("_")[1]) for p in save_dir.glob("state_*.pt")
             if (save_dir / weights.format(p.stem.split("_")[1])).is_file()]
    return max(steps) if steps else None


def final_weights(folder: Path, weights: str = "model_{}.pth") -> Path | None:
    """The weights file of the highest step in ``folder`` (``weights`` formatted with the step), with or without
    its training state (the authors' release has none), None when there is none."""
    prefix, suffix = weights.split("{}")
    steps = [int(p.name[len(prefix):-len(suffix)]) for p in folder.glob(weights.format("*"))
             if p.name[len(prefix):-len(suffix)].isdigit()]
    return folder / weights.format(max(steps)) if steps else None


def load_state(path: Path) -> dict:
    """``state_N.pt`` with ``weights_only=True``: tensors, numbers, strings and lists only, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for unsafe or unreadable files
        raise ResumeStateError(f"cannot resume from {path}: {str(exc).splitlines()[0] if str(exc) else exc!r} "
                               f"(a training state holds only tensors and numbers; delete the file to restart "
                               f"from the previous checkpoint)") from None


def rng_state() -> dict:
    """Every RNG, as tensors, numbers and lists only (so the state loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    *state, version, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


def check_run_settings(path: Path, wanted: dict, resuming: bool, error: type[Exception] = ResumeStateError) -> None:
    """Refuse to resume a run made with other settings, naming them; a fresh run records its settings."""
    from omgm.bookkeeping import read_bookkeeping
    from omgm.io import write_json_atomic
    from omgm.resume import settings_diff

    if resuming and path.is_file():
        old = read_bookkeeping(path, {"*": object}, what="the settings of a training run",
                               fix="delete it to resume with the current settings, or use another output folder")
        what = settings_diff(old, wanted)
        if what:
            raise error(f"{path.parent} holds a run made with other settings ({what}); use the same settings to "
                        f"resume, or another output folder")
        return
    write_json_atomic(path, wanted, indent=2)
