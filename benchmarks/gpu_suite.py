"""One GPU proof run: every CUDA path with tiny models, then real-size throughput with random weights; one JSON.

    python benchmarks/gpu_suite.py                         # on a GPU box (scripts/gpu_check.sh wraps it)
    python benchmarks/gpu_suite.py --device cpu --small    # ~2 minutes on a 2-core CPU (the suite runs --smoke)

Parts (``--parts``, all by default): ``correctness`` (every stage's CLI on the demo data, CPU vs this device,
tolerances in :mod:`benchmarks.gpu_correctness`), ``reranker`` (EVA ViT-g + Q-Former, fp16: sections/s),
``vision`` (an EVA-CLIP-8B-size ViT, bf16: images/s), ``text`` (its text-tower size: texts/s), ``generator``
(a 7B Llama-size decoder, bf16: the published step-3 prompt lengths, one by one vs batched with a shared
prefix; vLLM when installed), ``search`` (flat inner-product search over 2M x 1280, fp16 and fp32, with faiss-gpu
when importable, else torch matmul + top-k, labelled so). Every figure is a median of ``--repeats`` timed runs
after a warm-up, with its range and the peak GPU memory; ``derived`` turns them into seconds per query and
GPU-hours. Random weights give real speed, never accuracy. Needs no network and no downloaded weights; parts
that cannot run are reported under ``skipped`` with the reason. ``--small`` shrinks every model (for CPU runs).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import gpu_models as models  # noqa: E402

PARTS = ("correctness", "reranker", "vision", "text", "generator", "search")
PAPER = {"retrieval_s_per_query": 0.40, "end_to_end_s_per_query": 2.0}
EVQA_KB, EVQA_TEST = 2_000_000, 4_750              # entities; kept test questions
SECTIONS_PER_QUERY = 20 * 8                         # 20 candidates x ~8 kept sections (an estimate, see scale.md)


def timed(fn, repeats: int, device: torch.device) -> dict:
    """Median and range of ``repeats`` runs after one warm-up, and the peak memory of the device."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"s_median": statistics.median(times), "s_range": [min(times), max(times)], "repeats": repeats,
            "peak_gib": None if peak is None else round(peak, 2)}


def rate(t: dict, items: int, unit: str) -> dict:
    return {f"{unit}_per_s": items / t["s_median"], f"{unit}_per_s_range": [items / t["s_range"][1],
                                                                           items / t["s_range"][0]], **t}


def part_reranker(dev, small, repeats) -> dict:
    model, batch = models.reranker(dev, small), 4 if small else 64
    pixels, ids, mask = models.reranker_inputs(model, batch, dev)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
        t = timed(lambda: model(pixels, ids, mask), repeats, dev)
    return {"what": "IT2IT reranker (EVA ViT-g 39 blocks fp16 + Q-Former, 512 text tokens), one candidate "
                    "section with its own image each", "batch": batch, **rate(t, batch, "sections")}


def part_tower(dev, small, repeats, kind: str) -> dict:
    model, inputs, label = models.tower(kind, dev, small)
    with torch.no_grad():
        t = timed(lambda: model(inputs), repeats, dev)
    return {"what": label, "batch": inputs.shape[0], **rate(t, inputs.shape[0], kind == "vision" and "images" or "texts")}


def part_generator(dev, small, repeats) -> dict:
    from omgm.generate.generators.base import greedy_ids
    from omgm.generate.generators.prefix import SharedPrefixGenerator

    model = models.decoder(dev, small)
    rows, new = models.step3_prompts(small), 8 if small else 32
    one = timed(lambda: [greedy_ids(model, [r], 0, new) for r in rows], max(1, repeats - 1), dev)
    shared = SharedPrefixGenerator(model)
    batched = timed(lambda: shared.generate(rows, 0, new), repeats, dev)
    out = {"what": "Llama-7B-size decoder (bf16), published step-3 prompt shapes: shared instruction prefix + "
                   "section context; greedy, fixed new tokens (random weights never stop early)",
           "prompts": len(rows), "prompt_tokens_mean": sum(map(len, rows)) / len(rows), "new_tokens": new,
           "one_by_one": rate(one, len(rows), "prompts"), "batched_shared_prefix": rate(batched, len(rows), "prompts")}
    for k in ("one_by_one", "batched_shared_prefix"):
        out[k]["new_tokens_per_s"] = out[k]["prompts_per_s"] * new
    out["speedup"] = one["s_median"] / batched["s_median"]
    return out


def part_search(dev, small, repeats) -> dict:
    n, d, q = (20_000, 64, 64) if small else (2_000_000, 1280, 1024)
    out = {"what": f"flat inner-product search, {n} x {d}, top 20, batches of {q} queries", "backend": None}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        db = torch.randn(n, d, device=dev, dtype=dtype)
        queries = torch.randn(q, d, device=dev, dtype=dtype)
        backend, fn = models.flat_search(db, queries, 20)
        out["backend"] = backend
        out[name] = rate(timed(fn, repeats, dev), q, "queries")
        del db, queries
        models.free(dev)
    return out


def derived(parts: dict) -> dict:
    """Seconds per query and GPU-hours, from the measured rates (the assumptions are stated in the output)."""
    need = ("vision", "search", "reranker", "generator", "text")
    if any(k not in parts or "error" in parts[k] for k in need):
        return {"skipped": "needs the vision, text, search, reranker and generator parts"}
    img = 1 / parts["vision"]["images_per_s"]
    search = 1 / parts["search"]["fp16"]["queries_per_s"]
    rerank = SECTIONS_PER_QUERY / parts["reranker"]["sections_per_s"]
    gen = 1 / parts["generator"]["batched_shared_prefix"]["prompts_per_s"]
    retrieval = img + search + rerank
    embed_kb_h = EVQA_KB / parts["text"]["texts_per_s"] / 3600
    return {"assumptions": f"{SECTIONS_PER_QUERY} sections reranked per query; step 3 = one prompt per query "
                           "(cross-encoder not measured); summaries' LLM time not included in the index figure",
            "retrieval_s_per_query": retrieval, "end_to_end_s_per_query": retrieval + gen, "paper": PAPER,
            "evqa_index_embedding_gpu_hours": embed_kb_h,
            "evqa_test_row_gpu_hours": EVQA_TEST * (retrieval + gen) / 3600}


def run_part(name: str, args, dev) -> dict:
    if name == "correctness":
        return part_correctness(args, dev)
    if name in ("vision", "text"):
        return part_tower(dev, args.small, args.repeats, name)
    return globals()[f"part_{name}"](dev, args.small, args.repeats)


def part_correctness(args, dev) -> dict:
    from benchmarks import gpu_correctness as gc

    work = Path(args.work or tempfile.mkdtemp(prefix="omgm_gpu_check_"))
    gc.prepare(work / "shared")
    runs = {"cpu": gc.run_chain(work / "shared", work / "cpu", "cpu")}
    if dev.type == "cpu":
        return {"runs": runs, "compared": False, "why": "the device is the CPU: nothing to compare against"}
    runs[str(dev)] = gc.run_chain(work / "shared", work / "device", str(dev))
    return {"runs": runs, "compared": True, **gc.compare(work / "cpu", work / "device")}


def environment(dev) -> dict:
    env = {"device": str(dev), "torch": torch.__version__, "python": sys.version.split()[0]}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1)
    for pkg in ("transformers", "faiss", "open_clip", "vllm", "deepspeed"):
        env[pkg] = bool(importlib.util.find_spec(pkg))
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny sizes everywhere (CPU check of the script)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=None, help="folder for the correctness runs (default: a temporary one)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--smoke", action="store_true", help="as the other benchmarks: --device cpu --small --repeats 1, "
                                                        "throughput parts only (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.small, args.repeats = "cpu", True, 1
        args.parts = ",".join(x for x in PARTS if x != "correctness")
    dev = torch.device(args.device)
    result = {"environment": environment(dev), "small": args.small, "parts": {}, "skipped": {}}
    for name in [x for x in args.parts.split(",") if x]:
        if name not in PARTS:
            p.error(f"--parts: unknown part {name!r} (known: {', '.join(PARTS)})")
        t0 = time.perf_counter()
        try:
            result["parts"][name] = run_part(name, args, dev)
        except models.Skip as exc:
            result["skipped"][name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others' figures
            result["parts"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:600]}"}
        result["parts"].get(name, {})["part_seconds"] = round(time.perf_counter() - t0, 1)
        models.free(dev)
    result["skipped"].update(models.not_measured(dev))
    result["derived"] = derived(result["parts"])
    if args.small:
        result["derived"]["note"] = "--small: tiny models, so these figures say nothing about real sizes"
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 1 if any("error" in v for v in result["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
