"""FAISS options for a 2M-entity step-1 index, measured on a synthetic 200k x 1280 index on the CPU.

The vectors are L2-normalised draws around 2,000 cluster centres (embeddings cluster; uniform noise would make
every approximate index look bad), the queries 1,000 fresh draws from the same mixture. For each option:
build seconds, queries/s (batches of 1,000, all cores) and recall@20 against exact search (``Flat``, the
baseline, measured in the same run). ``SQfp16`` is the fp16 flat index; on GPUs the same choice is
``--faiss_gpu shard|replicate`` with ``--faiss_fp16``.

    python benchmarks/faiss_options.py [--n 200000] [--dim 1280] [--options Flat,SQfp16,HNSW32,...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402

DEFAULT_OPTIONS = "Flat,SQfp16,HNSW32,IVF1024,Flat,IVF1024,PQ64x4fs"
SEARCH_PARAMS = {"HNSW32": {"efSearch": 128}, "IVF1024,Flat": {"nprobe": 32}, "IVF1024,PQ64x4fs": {"nprobe": 32}}


def mixture(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, spread: float = 1.5) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def split_options(text: str) -> list[str]:
    """Factory strings contain commas: split on commas that start a new known option."""
    out, parts = [], text.split(",")
    i = 0
    while i < len(parts):
        if parts[i].startswith("IVF") and i + 1 < len(parts):
            out.append(parts[i] + "," + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--options", default=DEFAULT_OPTIONS)
    p.add_argument("--train", type=int, default=50_000, help="training vectors for IVF/PQ")
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), n=3000, dim=32, queries=50, train=2000, options="Flat,HNSW32,IVF16,Flat")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, a.dim)).astype(np.float32)
    base, queries = mixture(a.n, a.dim, centres, rng), mixture(a.queries, a.dim, centres, rng)
    exact = None
    for name in split_options(a.options):
        t0 = time.perf_counter()
        index = faiss.index_factory(a.dim, name, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(base[rng.choice(a.n, size=min(a.train, a.n), replace=False)])
        index.add(base)
        build = time.perf_counter() - t0
        for key, value in SEARCH_PARAMS.get(name, {}).items():
            faiss.ParameterSpace().set_index_parameter(index, key, value)
        index.search(queries[:10], a.k)                        # warm-up
        t0 = time.perf_counter()
        _, ids = index.search(queries, a.k)
        qps = a.queries / (time.perf_counter() - t0)
        if exact is None:
            exact, base_qps = ids, qps
        recall = float(np.mean([len(set(x) & set(y)) / a.k for x, y in zip(ids, exact)]))
        print(json.dumps({"index": name, "params": SEARCH_PARAMS.get(name, {}), "n": a.n, "dim": a.dim,
                          "build_s": round(build, 1), "queries_per_s": round(qps, 1),
                          "speed_vs_flat": round(qps / base_qps, 2), f"recall@{a.k}_vs_flat": round(recall, 4),
                          "memory_mb": round(faiss.serialize_index(index).nbytes / 2**20, 1)}), flush=True)
        del index
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
