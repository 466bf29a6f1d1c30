"""The benchmark helpers' arithmetic, and every benchmark run in its --smoke mode."""
import pytest

from benchmarks.estimate_kb import estimate, per_item


def test_estimate_extrapolates_the_median_per_item_cost():
    cost = per_item([2.0, 1.0, 3.0], 100)            # 0.02 s per item (median), range 0.01-0.03
    assert cost["s_per_item_median"] == pytest.approx(0.02) and cost["s_per_item_range"] == [0.01, 0.03]
    rows = estimate({"embeddings": cost}, 1_800_000, [1, 8])
    assert rows == [{"stage": "embeddings", "devices": 1, "hours_estimate": 10.0},
                    {"stage": "embeddings", "devices": 8, "hours_estimate": 1.25}]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["embedders_throughput", "estimate_kb", "faiss_options", "full_scale", "gpu_suite", "scale_out",
                                  "step1_search", "step2_rerank", "step3_generate"])
def test_every_benchmark_runs_in_its_smoke_mode(name):
    """Each benchmark at tiny sizes, as a user runs it (the step-2 one had stopped running unnoticed)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / f"{name}.py"), "--smoke"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out, decoder = proc.stdout, json.JSONDecoder()
    starts = [i for i, c in enumerate(out) if c == "{" and (i == 0 or out[i - 1] == "\n")]
    figures = []
    for i in starts:
        try:
            figures.append(decoder.raw_decode(out, i)[0])
        except json.JSONDecodeError:
            continue
    assert figures and all(isinstance(f, dict) for f in figures)     # the figures are printed as JSON
