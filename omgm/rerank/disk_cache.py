"""Step 2's on-disk cache of candidate tokens, bounded: one file per entity under ``CACHE_DIR/<model hash>/``, at
most ``max_bytes`` for the whole ``CACHE_DIR`` (every model's entries together), the least recently used removed
first (a hit refreshes a file's modification time). At BLIP-2 size an entity's tokens take ~393 KB (fp16, 8
sections): E-VQA's test candidates alone would fill ~40 GB, and every new set of weights would add a copy.

Entries are read with ``weights_only`` (tensors, numbers, strings only); a damaged or foreign file is removed
and recomputed, never a traceback.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from omgm.io import atomic_write

log = logging.getLogger(__name__)


def _entries(root: Path) -> list[tuple[float, int, str]]:
    """``(modification time, size, path)`` of every cache file under ``root``."""
    out = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".pt"):
                p = os.path.join(folder, name)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, p))
    return out


class DiskCache:
    """See the module doc. ``max_bytes`` None: unbounded."""

    def __init__(self, root: Path, max_bytes: float | None) -> None:
        self.root, self.max_bytes, self.evicted = root, max_bytes, 0
        self._bytes: int | None = None        # the folder is walked at the first write, not at start-up

    @property
    def bytes(self) -> int:
        if self._bytes is None:
            self._bytes = sum(size for _, size, _ in _entries(self.root)) if self.root.is_dir() else 0
        return self._bytes

    def load(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or not {"section_ids", "tokens", "reason"} <= set(obj):
                raise ValueError("not a cache entry")
        except Exception as exc:  # noqa: BLE001 - a torn write, a planted pickle, another file: recompute it
            log.warning("%s: a damaged cache entry (%s), removed; its tokens are computed again", path,
                        str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__)
            self._remove(path)
            return None
        os.utime(path)                                   # recently used
        return obj

    def save(self, path: Path, obj: dict) -> None:
        total = self.bytes                             # walked (once) before this file exists
        with atomic_write(path) as tmp:
            torch.save(obj, tmp)
        self._bytes = total + path.stat().st_size
        if self.max_bytes is not None and self._bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Oldest first, down to 80% of the bound (so that a full cache is not scanned at every write)."""
        entries = sorted(_entries(self.root))
        self._bytes = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if self._bytes <= 0.8 * self.max_bytes:
                break
            self._remove(Path(p), size)
            self.evicted += 1

    def _remove(self, path: Path, size: int | None = None) -> None:
        total = self.bytes                             # walked (once) while the file still exists
        try:
            size = path.stat().st_size if size is None else size
            path.unlink()
        except FileNotFoundError:
            return
        self._bytes = total - size

    def report(self) -> dict:
        return {"disk_cache_mb": round(self.bytes / 2**20, 1), "disk_cache_evicted": self.evicted,
                "disk_cache_max_mb": None if self.max_bytes is None else round(self.max_bytes / 2**20, 1)}
