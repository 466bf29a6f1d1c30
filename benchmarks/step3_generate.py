"""Step-3 figure on CPU (issue: step 3): answers/s of batched generation vs one request per call.

A small random-weight Llama-architecture chat model (transformers), greedy, the real step-3 prompts of one
dataset (``--dataset``; a run answers one dataset at a time) with contexts of varied length. Batched generation must give the same answers (left padding).

    python benchmarks/step3_generate.py [--requests 16] [--batch 8] [--new_tokens 32]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omgm.generate.generators import GenRequest, GeneratorSpec, build_generator  # noqa: E402
from utils.make_tiny_models import demo_corpus, make_tiny_causal_lm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dataset", choices=["evqa", "infoseek"], default="evqa")
    a = p.parse_args(argv)
    rng = random.Random(0)
    corpus = demo_corpus(ROOT / "assets/demo")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_causal_lm(Path(tmp) / "lm", corpus, hidden=a.hidden, layers=a.layers)
        gen = build_generator(GeneratorSpec(str(folder), device="cpu", max_new_tokens=a.new_tokens))
        gen.model.generation_config.eos_token_id = None          # every answer runs to max_new_tokens
        reqs = [GenRequest(f"What is notable about item {i}?", " ".join(rng.choices(corpus, k=rng.randint(1, 4))),
                           a.dataset) for i in range(a.requests)]
        gen.generate(reqs[:2])                                    # warm-up
        t0 = time.perf_counter()
        single = [gen.generate([r])[0] for r in reqs]
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = [x for i in range(0, len(reqs), a.batch) for x in gen._generate(reqs[i:i + a.batch])]
        t_batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        grouped = gen.generate(reqs, a.batch)
        t_grouped = time.perf_counter() - t0
    same = sum(x == y == z for x, y, z in zip(single, batched, grouped))
    print(f"{a.dataset}: generate {a.requests} answers x {a.new_tokens} new tokens, random {a.layers}-layer "
          f"{a.hidden}-wide Llama on CPU: one per call {a.requests / t_single:.2f} answers/s; batch {a.batch} in "
          f"input order {a.requests / t_batched:.2f} answers/s ({t_single / t_batched:.1f}x); batch {a.batch} grouped "
          f"by length (as step 3) {a.requests / t_grouped:.2f} answers/s ({t_single / t_grouped:.1f}x, target >= 3x); "
          f"identical answers {same}/{a.requests}")
    print(json.dumps({"single_answers_per_s": round(a.requests / t_single, 3),
                      "batched_answers_per_s": round(a.requests / t_batched, 3),
                      "grouped_answers_per_s": round(a.requests / t_grouped, 3),
                      "speedup_batched": round(t_single / t_batched, 2), "speedup_grouped": round(t_single / t_grouped, 2),
                      "identical": same, "requests": a.requests}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
