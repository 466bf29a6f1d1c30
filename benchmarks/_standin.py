"""A stand-in retriever that costs (almost) nothing, and a runner that measures one omgm command in its own process.

``StandInRetriever`` gives every text and image a fixed pseudo-random unit vector derived from its content (its
sha1 seeds the generator), ``--standin_dim`` wide: the index, the search and every file have their real sizes,
but no model runs, so what a benchmark measures is omgm's own cost (reading, storing, searching, merging).
Its vectors mean nothing: recall figures under it are not results.

    python benchmarks/_standin.py MEASURE_JSON omgm-args...

runs ``omgm omgm-args...`` in this process (or ``--read_index INDEX``: FAISS reading the index, alone) with
the stand-in registered as ``--retriever_vit standin``, and writes
MEASURE_JSON: ``{"rc", "cpu_s" (user + system), "wall_s", "peak_rss_mb" (VmHWM: this process's own peak),
"written_mb" (bytes this process sent to storage, /proc/self/io)}``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIM = int(os.environ.get("OMGM_STANDIN_DIM", "1280"))     # EVA-CLIP-8B's width: real index sizes


def _vector(key: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha1(key).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_standin():
    from omgm.retrieval.base import Retriever

    class StandInRetriever(Retriever):
        """Content-hashed unit vectors in place of a model (see the module docstring)."""
        name = "standin"

        def __init__(self, dim: int = DIM) -> None:
            super().__init__()
            self.dim, self.model_id = dim, f"standin-{dim}"

        def preprocess(self, image) -> torch.Tensor:
            small = np.asarray(image.convert("L").resize((8, 8)), dtype=np.float32)
            return torch.from_numpy(small.reshape(-1))

        def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
            rows = [_vector(p.numpy().tobytes(), self.dim) for p in pixels]
            return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

        def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
            rows = [_vector(t.encode(), self.dim) for t in texts]
            return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    return StandInRetriever


def register() -> None:
    from omgm.retrieval.registry import REGISTRY, register_retriever

    if "standin" not in REGISTRY:
        cls = make_standin()
        register_retriever("standin", lambda spec: cls(), "benchmark stand-in: hashed vectors, no model (meaningless)")


def _measure(t0: float, rc: int) -> dict:
    status = Path("/proc/self/status").read_text().splitlines()
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    t = os.times()
    return {"rc": rc, "cpu_s": round(t.user + t.system, 3), "wall_s": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(hwm / 1024, 1), "written_mb": round(int(io["write_bytes"]) / 2**20, 1)}


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    out, args = Path(argv[0]), argv[1:]
    register()
    from omgm.cli import main as omgm_main

    try:
        if args[:1] == ["--read_index"]:              # what loading the index costs (ask's start-up includes it)
            import faiss

            rc = int(faiss.read_index(args[1]).ntotal < 0)
        else:
            rc = omgm_main(args)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out.write_text(json.dumps(_measure(t0, int(rc or 0))))
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
