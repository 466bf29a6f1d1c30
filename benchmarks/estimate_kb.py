"""How long will summarising and encoding a whole KB take? Measured per-item costs, extrapolated.

Runs the real index-building code on the first ``--sample`` entities of a KB: LLM summaries with each engine
asked for (``--engines transformers,vllm``; vLLM where it is installed and CUDA is present), then the retriever's
text tower on those summaries. Prints JSON: the per-item seconds (median of ``--repeats`` timed runs after one
warm-up batch), and an **estimate** of the hours for ``--kb_size`` entities (2M: E-VQA) on each GPU count in
``--gpus``, assuming the linear data-parallel scaling of ``torchrun`` (units never shared between ranks; measure
your own with ``benchmarks/scale_out.py``).

    python benchmarks/estimate_kb.py --knowledge_base kb.sqlite --summary_model meta-llama/Meta-Llama-3-8B-Instruct \\
        --retriever_vit eva-clip --trust_remote_code --retriever_path BAAI/EVA-CLIP-8B --engines transformers,vllm --gpus 1,8
    python benchmarks/estimate_kb.py --demo        # tiny random models on the demo KB: checks the script, not a GPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()                                                # warm-up: kernels, caches, lazy loading
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def per_item(times: list[float], n: int) -> dict:
    return {"s_per_item_median": statistics.median(times) / n, "s_per_item_range": [min(times) / n, max(times) / n],
            "items_timed": n, "repeats": len(times)}


def engines_available(wanted: list[str]) -> tuple[list[str], dict]:
    import importlib.util

    import torch

    ok, skipped = [], {}
    for e in wanted:
        if e == "vllm" and not (torch.cuda.is_available() and importlib.util.find_spec("vllm")):
            skipped[e] = "needs CUDA and the vllm package"
        else:
            ok.append(e)
    return ok, skipped


def estimate(costs: dict, kb_size: int, gpus: list[int]) -> list[dict]:
    rows = []
    for stage, c in costs.items():
        for g in gpus:
            rows.append({"stage": stage, "devices": g, "hours_estimate": round(kb_size * c["s_per_item_median"] / g / 3600, 2)})
    return rows


def measure(a, kb, entities) -> dict:
    from omgm.retrieval.registry import build_retriever, retriever_spec
    from omgm.retrieval.summaries import LLMSummarizer, lead_summary

    costs, texts = {}, [lead_summary(e) for e in entities]
    engines, skipped = engines_available(a.engines.split(","))
    for engine in engines if a.summary_model else []:
        summarize = LLMSummarizer(a.summary_model, a.device, engine=engine)

        def summarize_all(summarize=summarize) -> None:       # the last run's summaries are embedded below
            texts[:] = [t for i in range(0, len(entities), a.summary_batch_size)
                        for t in summarize(entities[i:i + a.summary_batch_size])]

        runs = timed(summarize_all, a.repeats)
        costs[f"summaries ({engine}, batch {a.summary_batch_size})"] = per_item(runs, len(entities))
    retriever = build_retriever(retriever_spec(a))
    runs = timed(lambda: [retriever.encode_texts(texts[i:i + a.batch_size]) for i in range(0, len(texts), a.batch_size)],
                 a.repeats)
    costs[f"summary embeddings ({retriever.model_id}, batch {a.batch_size})"] = per_item(runs, len(texts))
    return {"costs": costs, "skipped_engines": skipped}


def _demo_args(a, work: Path) -> None:
    from omgm.data.kb_import import run_import
    from utils.make_tiny_models import demo_corpus, make_tiny_causal_lm, make_tiny_clip

    demo = ROOT / "assets" / "demo"
    a.knowledge_base = str(run_import(demo / "kb.json", work / "kb.sqlite", progress=False))
    a.summary_model = str(make_tiny_causal_lm(work / "llm", demo_corpus(demo)))
    a.retriever_vit, a.retriever_pretrained, a.device = "omgm-tiny-eva", str(make_tiny_clip(work / "clip.pt")), "cpu"


def main(argv: list[str] | None = None) -> int:
    from omgm.retrieval.registry import add_retriever_flags

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--knowledge_base")
    p.add_argument("--summary_model", default=None, help="omit to time the embeddings only")
    add_retriever_flags(p)
    for flag, default in (("--sample", 256), ("--repeats", 3), ("--summary_batch_size", 16), ("--batch_size", 256),
                          ("--kb_size", 2_000_000)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--engines", default="transformers")
    p.add_argument("--gpus", default="1,8")
    p.add_argument("--demo", action="store_true", help="tiny random models on the demo KB")
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), demo=True, sample=8, repeats=1, batch_size=8, summary_batch_size=4)
    import torch

    from omgm.data.kb import open_kb

    with tempfile.TemporaryDirectory() as tmp:
        if a.demo:
            _demo_args(a, Path(tmp))
        if not a.knowledge_base:
            p.error("--knowledge_base is required (or --demo)")
        kb = open_kb(a.knowledge_base)
        entities = [kb.at(i) for i in range(min(a.sample, len(kb)))]
        result = measure(a, kb, entities)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and a.device != "cpu" else "cpu"
    result.update(device=device, kb_size=a.kb_size, demo=a.demo,
                  estimate=estimate(result["costs"], a.kb_size, [int(g) for g in a.gpus.split(",")]),
                  note="estimate = kb_size x measured seconds per item / devices (linear data-parallel scaling assumed)")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
