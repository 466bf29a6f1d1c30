"""Step-3 generation on CPU: prefix-shared, length-grouped batches vs one request per call (the published way).

A small random-weight Llama-architecture chat model (transformers), greedy, the published prompts of each
dataset (official style: chat template, system prompt; InfoSeek's worked example inside the user message) with
contexts of varied length. Batched answers must equal one-by-one answers. Prints one JSON line per dataset with
the median and range of ``--repeats`` timings of each mode and of their ratio.

    python benchmarks/step3_generate.py [--requests 32] [--batch 8] [--new_tokens 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402
from omgm.generate.generators import GeneratorSpec, GenRequest, build_generator  # noqa: E402
from utils.make_tiny_models import demo_corpus, make_tiny_causal_lm  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(gen, reqs, batch: int, repeats: int) -> dict:
    gen.generate(reqs[:batch], batch_size=1)                            # warm-up, both ways
    gen.generate(reqs[:batch], batch_size=batch)
    singles, batched, ratios, same = [], [], [], 0
    for _ in range(repeats):
        gen.shared._caches.clear()                                       # each repeat pays for its prefix
        t1, one = _timed(lambda: gen.generate(reqs, batch_size=1))
        t2, many = _timed(lambda: gen.generate(reqs, batch_size=batch))
        singles.append(t1)
        batched.append(t2)
        ratios.append(t1 / t2)
        same = sum(a == b for a, b in zip(one, many))
    med = statistics.median
    return {"one_per_call_answers_per_s": round(len(reqs) / med(singles), 2),
            "batched_answers_per_s": round(len(reqs) / med(batched), 2),
            "speedup_median": round(med(ratios), 2), "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
            "identical_answers": f"{same}/{len(reqs)}", "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset", choices=["evqa", "infoseek", "both"], default="both")
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), requests=4, batch=2, new_tokens=4, hidden=32, layers=1, repeats=1, dataset="evqa")
    torch.set_num_threads(torch.get_num_threads())
    rng = random.Random(0)
    corpus = demo_corpus(ROOT / "assets/demo")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_causal_lm(Path(tmp) / "lm", corpus, hidden=a.hidden, layers=a.layers)
        gen = build_generator(GeneratorSpec(str(folder), device="cpu", max_new_tokens=a.new_tokens))
        gen.eos_ids = None                                               # every answer runs to max_new_tokens
        gen.model.generation_config.eos_token_id = None
        for dataset in (["evqa", "infoseek"] if a.dataset == "both" else [a.dataset]):
            reqs = [GenRequest(f"What is notable about item {i}?",
                               "# Wiki Article: X\n## Section Title: Y\n" + " ".join(rng.choices(corpus, k=rng.randint(1, 4))),
                               dataset) for i in range(a.requests)]
            prompt_tokens = sum(len(gen.input_ids(r)) for r in reqs) / len(reqs)
            res = run(gen, reqs, a.batch, a.repeats)
            print(json.dumps({"dataset": dataset, "mode": f"prefix-shared batches of {a.batch} vs one per call",
                              "model": f"random Llama {a.layers}x{a.hidden}, CPU", "new_tokens": a.new_tokens,
                              "mean_prompt_tokens": round(prompt_tokens, 1), "requests": a.requests, **res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
