"""The index build's memory at a scaled-down size: the vectors once (in the index) plus one shard, not the 2.5-3.8x
of concatenating every shard and copying it into the index, nor the 1.7x of add()'s doubling growth (its last
reallocation holds the old and the new copy: measured at 2M x 1280 by benchmarks/full_scale.py; issue: the real
sizes on one box)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

ROWS, DIM, SHARDS = 180_000, 256, 9          # 9 shards: past a power of two, where add() doubles

SCRIPT = """
import sys
from pathlib import Path
import faiss, numpy as np, psutil
from omgm.retrieval.assemble import build_from_shards
shards = sorted(Path(sys.argv[1]).glob("shard_*.npy"))
np.load(shards[0])[:1] @ np.ones((%d, 1), dtype=np.float32)          # numpy's BLAS warm before the baseline
base = psutil.Process().memory_info().rss
index, _ = build_from_shards(shards, %d, sys.argv[2] if sys.argv[2] != "flat" else None, recall_queries=200)
# VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec: a big pytest process's)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024
print(index.ntotal, max(0, peak - base))
""" % (DIM, DIM)


@pytest.mark.slow
def test_a_flat_index_is_built_from_shards_in_the_vectors_size_plus_one_shard(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(SHARDS):
        np.save(tmp_path / f"shard_{i:03d}.npy", rng.standard_normal((ROWS // SHARDS, DIM)).astype(np.float32))
    vectors, shard = ROWS * DIM * 4, ROWS // SHARDS * DIM * 4
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "flat"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, grew = map(int, proc.stdout.split())
    assert count == ROWS
    assert grew <= vectors + 2 * shard + 16 * 2**20, f"{grew / 2**20:.0f} MiB over {vectors / 2**20:.0f} MiB of vectors"


def test_the_flat_index_filled_in_place_equals_add(tmp_path):
    """The same bytes, count and search results as FAISS's own add(), with and without a row filter."""
    import faiss

    from omgm.retrieval.assemble import add_shards, fill_flat

    rng = np.random.default_rng(1)
    shards = []
    for i, n in enumerate((300, 0, 257)):
        shards.append(tmp_path / f"shard_{i}.npy")
        np.save(shards[-1], rng.standard_normal((n, 8)).astype(np.float32))
    q = rng.standard_normal((4, 8)).astype(np.float32)
    for keep in (None, lambda x: x[:, 0] > 0):
        ours, theirs = fill_flat(shards, 8, keep), add_shards(faiss.IndexFlatIP(8), shards, keep)
        assert ours.ntotal == theirs.ntotal
        assert faiss.vector_to_array(ours.codes).tobytes() == faiss.vector_to_array(theirs.codes).tobytes()
        assert (ours.search(q, 5)[1] == theirs.search(q, 5)[1]).all()
