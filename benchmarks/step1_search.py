"""Step-1 figures on CPU (issue: the spine).

1. Batched FAISS search vs one query per call on a synthetic 200k x 768 IndexFlatIP (targets: >= 10x at 256).
2. Peak RSS of ``kb_import`` on a synthetic 100k-entity KB JSON vs the JSON's size (target: under half),
   beside the peak RSS of ``json.load`` of the same file (what the published code does) as the baseline.

    python benchmarks/step1_search.py [--entities 200000] [--kb_entities 100000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402
from omgm.retrieval.index import build_flat_ip, search  # noqa: E402
from utils.synthetic_kb import write_synthetic_kb  # noqa: E402

# VmHWM is the peak RSS of this address space; ru_maxrss would inherit the (large) parent's peak across fork.
RSS_SNIPPET = """
import sys
sys.argv = {argv!r}
{body}
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) * 1024)
"""


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_search(n: int, d: int, k: int, batch: int, n_single: int, n_batched: int) -> dict:
    rng = np.random.default_rng(0)
    index = build_flat_ip(unit_rows(rng, n, d))
    q = unit_rows(rng, max(n_single, n_batched), d)
    search(index, q[:8], k, batch_size=1)                           # warm-up
    t = time.perf_counter()
    s1, i1 = search(index, q[:n_single], k, batch_size=1)
    single_qps = n_single / (time.perf_counter() - t)
    t = time.perf_counter()
    s2, i2 = search(index, q[:n_batched], k, batch_size=batch)
    batched_qps = n_batched / (time.perf_counter() - t)
    same = bool(np.array_equal(i1, i2[:n_single]))
    return {"index": f"{n} x {d} IndexFlatIP", "k": k, "one_per_call_qps": round(single_qps, 1),
            f"batch_{batch}_qps": round(batched_qps, 1), "speedup": round(batched_qps / single_qps, 1),
            "same_results": same}


def peak_rss(body: str, argv: list[str]) -> int:
    out = subprocess.run([sys.executable, "-c", RSS_SNIPPET.format(argv=argv, body=body)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench_import(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src = write_synthetic_kb(Path(tmp) / "kb.json", n, sections=5, words=60)
        size = src.stat().st_size
        t = time.perf_counter()
        rss_import = peak_rss("from omgm.data.kb_import import main; assert main() == 0",
                              ["kb_import", "--kb_json", str(src), "--out", str(Path(tmp) / "kb.sqlite")])
        secs = time.perf_counter() - t
        from omgm.data.kb import open_kb

        assert len(open_kb(Path(tmp) / "kb.sqlite")) == n
        rss_json = peak_rss(f"import json; d = json.load(open({str(src)!r}))", ["json_load"])
        rss_python = peak_rss("import omgm.data.kb_import", ["baseline"])
    return {"entities": n, "json_mb": round(size / 2**20, 1), "import_peak_rss_mb": round(rss_import / 2**20, 1),
            "import_rss_over_json": round(rss_import / size, 3), "json_load_peak_rss_mb": round(rss_json / 2**20, 1),
            "interpreter_baseline_rss_mb": round(rss_python / 2**20, 1), "import_seconds": round(secs, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entities", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--kb_entities", type=int, default=100_000)
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), entities=3000, dim=32, batch=16, kb_entities=300)
    s = bench_search(a.entities, a.dim, 20, a.batch, n_single=200, n_batched=2048)
    print(f"search  {s['index']}, k=20: one query per call {s['one_per_call_qps']} q/s, batch {a.batch} "
          f"{s[f'batch_{a.batch}_qps']} q/s -> {s['speedup']}x (target >= 10x); identical results: {s['same_results']}")
    m = bench_import(a.kb_entities)
    print(f"kb import  {m['entities']} entities, JSON {m['json_mb']} MB: peak RSS {m['import_peak_rss_mb']} MB = "
          f"{m['import_rss_over_json']:.2f} x JSON (target < 0.5); json.load of the same file "
          f"{m['json_load_peak_rss_mb']} MB; interpreter baseline {m['interpreter_baseline_rss_mb']} MB; "
          f"{m['import_seconds']} s")
    print(json.dumps({"search": s, "kb_import": m}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
