"""What a reproduction ran on, recorded when it ran: each input file as the stage that read it found it (size,
sha256, modification time), each hub model with the revision its cache resolves to, the software and machine,
the checkout (commit, uncommitted changes) and each stage's seconds.

A stage's record is made just before it runs and kept in ``OUT/reproduce_state.json``; a stage whose recorded
inputs changed since (size or modification time, then sha256) is run again, with every stage after it. The tables
compare each recorded sha256 with the fetch lock's and flag a difference, and flag an input that changed after
the stage read it; they never list a hash the stage did not see.

Hashes are cached by (path, size, modification time) in the state file, so a multi-GB store read by three
stages is hashed once per change.
"""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import omgm
from omgm.fetch.lock import digest

LIBRARIES = ("torch", "torchvision", "transformers", "tokenizers", "open_clip_torch", "timm", "faiss-cpu",
             "faiss-gpu-cu12", "numpy", "pillow", "peft", "accelerate", "huggingface_hub")


def stamp(path: Path) -> dict:
    """Size and modification time of a file; of a folder, its files' total size and latest time (a walk of stats,
    no reading)."""
    if path.is_file():
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    stats = [p.stat() for p in path.rglob("*") if p.is_file()]
    return {"size": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


@dataclass
class Hashes:
    """sha256 of files and folders, cached by (path, size, modification time)."""

    cache: dict[str, dict] = field(default_factory=dict)

    def record(self, path: Path) -> dict:
        now = stamp(path)
        known = self.cache.get(str(path))
        if not known or {k: known.get(k) for k in now} != now:
            known = self.cache[str(path)] = {**now, "sha256": digest(path)["sha256"]}
        return {"file": str(path), **known}


def hub_revision(model_id: str, cache: Path | None) -> str | None:
    """The commit a hub id resolves to in the Hugging Face cache (``refs/main``), None when it is not cached."""
    if cache is None:
        return None
    ref = cache / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def inputs_of(values: list[str], hashes: Hashes, hub_cache: Path | None) -> list[dict]:
    """Records of a stage's inputs: a path that exists is hashed; anything else is a model name or hub id."""
    out = []
    for v in dict.fromkeys(str(x) for x in values if x not in (None, "")):
        p = Path(v)
        if p.exists():
            out.append(hashes.record(p))
        else:
            out.append({"model": v, "revision": hub_revision(v, hub_cache)})
    return out


def changed(recorded: list[dict], hashes: Hashes) -> list[str]:
    """The recorded input files that are not as the stage found them (gone, or another sha256)."""
    out = []
    for r in recorded:
        if "file" in r and (not Path(r["file"]).exists() or hashes.record(Path(r["file"]))["sha256"] != r["sha256"]):
            out.append(r["file"])
    return out


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=Path(omgm.__file__).parents[1], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def environment() -> dict[str, Any]:
    """The software and machine of this run, and the checkout it ran from."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop the tables
        accelerator = None
    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")
    return {"omgm_version": omgm.__version__, "git_commit": commit.strip() if commit else None,
            "uncommitted_changes": None if status is None else bool(status.strip()),
            "python": platform.python_version(), "libraries": versions, "machine": platform.machine(),
            "cpus": os.cpu_count(), "accelerator": accelerator or "none (CPU)"}
