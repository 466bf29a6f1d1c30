"""Data-parallel scaling on the CPU: one process vs two (torchrun, gloo) for index encoding and reranking.

Tiny random models. Index encoding: lead summaries of a synthetic KB (``--entities``). Reranking: the demo's test
questions repeated (``--repeat``, each copy as if about other images), with 20 step-1 candidates per query image
(as image-only step 1 gives: questions about one image share them) drawn at random from the demo KB copied
``--kb_copies`` times under new names (many distinct candidates, as in a real KB). Each
process uses one thread (``OMP_NUM_THREADS=1``), as each rank of a multi-GPU job uses one device, so the ratio
measures how well the work splits; one process with every core (intra-op threads) is printed beside it.
Wall times include starting Python and loading the models. Prints JSON: median and range over ``--repeats``.

    python benchmarks/scale_out.py [--entities 100000] [--repeat 10] [--kb_copies 2000] [--repeats 3] [--stages index,rerank]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402


def _env(threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "OMGM_CONFIG")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    return env


def timed(cmd: list[str], threads: int | None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return time.perf_counter() - t0


def compare(name: str, module: str, args_for, work: Path, repeats: int) -> dict:
    times = {"1 process, 1 thread": [], "2 processes, 1 thread each": [], "1 process, all cores": []}
    for r in range(repeats):
        for mode, launcher, threads in (("1 process, 1 thread", [sys.executable, "-m"], 1),
                                        ("2 processes, 1 thread each", [sys.executable, "-m", "torch.distributed.run",
                                                                        "--standalone", "--nproc_per_node=2", "-m"], 1),
                                        ("1 process, all cores", [sys.executable, "-m"], None)):
            out = work / f"{name}-{r}-{len(times[mode])}-{mode.split()[0]}"
            times[mode].append(timed([*launcher, *module.split(), *args_for(out)], threads))
            shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["1 process, 1 thread"], times["2 processes, 1 thread each"])]
    return {"stage": name, "wall_s_median": {k: round(v, 2) for k, v in med.items()},
            "speedup_2_vs_1_process": round(statistics.median(ratios), 2),
            "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
            "speedup_2_processes_vs_1_process_all_cores": round(med["1 process, all cores"] /
                                                                med["2 processes, 1 thread each"], 2),
            "repeats": repeats, "cpu_cores": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=10, help="copies of the demo's test questions to rerank")
    p.add_argument("--kb_copies", type=int, default=2000, help="copies of the demo KB's 40 entities to rerank among")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stages", default="index,rerank")
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), entities=500, repeat=1, kb_copies=1, repeats=1, stages="index")
    from omgm.data.kb_import import run_import
    from utils.make_tiny_models import demo_corpus, make_tiny_clip, make_tiny_reranker_files
    from utils.synthetic_kb import write_synthetic_kb

    demo = ROOT / "assets" / "demo"
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        if "index" in a.stages:
            kb = run_import(write_synthetic_kb(w / "kb.json", a.entities), w / "kb.sqlite", progress=False)
            clip = make_tiny_clip(w / "clip.pt")

            def index_args(out, kb=kb, clip=clip):
                return ["--knowledge_base", str(kb), "--faiss_index", str(out / "s.index"), "--retriever_vit",
                        "omgm-tiny-eva", "--retriever_pretrained", str(clip), "--device", "cpu", "--summarizer", "lead",
                        "--shard_size", "4096", "--no_progress"]
            print(json.dumps(compare("index encoding", "omgm index build", index_args, w, a.repeats)), flush=True)
        if "rerank" in a.stages:
            rerank_args = _rerank_world(w, demo, a.repeat, a.kb_copies, make_tiny_reranker_files, demo_corpus)
            print(json.dumps(compare("reranking", "omgm.step2", rerank_args, w, a.repeats)), flush=True)
    return 0


def _copies_kb(w: Path, demo: Path, copies: int) -> tuple[Path, Path, list[str]]:
    """The demo KB repeated ``copies`` times under new titles and URLs (copy 0 is the demo itself), with
    wiki-image rows giving each copy its original's images: many distinct candidates, as in a real KB."""
    kb = json.loads((demo / "kb.json").read_text())
    images = [r for f in sorted((demo / "wiki_image_csv").glob("*.csv")) for r in csv.DictReader(f.open())]
    out, rows = {}, []
    for c in range(copies):
        for url, ent in kb.items():
            title = ent["title"] if c == 0 else f"{ent['title']} {c}"
            new_url = url if c == 0 else f"{url}_{c}"
            out[new_url] = {**ent, "title": title, "url": new_url}
            rows += [{**r, "entity_title": title} for r in images if r["entity_title"] == ent["title"]]
    (w / "many_kb.json").write_text(json.dumps(out))
    (w / "many_csv").mkdir(exist_ok=True)
    with (w / "many_csv" / "wiki_image_url_part_1_processed.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(images[0]))
        writer.writeheader()
        writer.writerows(rows)
    return w / "many_kb.json", w / "many_csv", list(out)


def _rerank_world(w: Path, demo: Path, repeat: int, copies: int, make_reranker, corpus):
    """The demo's test questions repeated, a step-1 file ranking 20 of the KB copies' entities for each, a tiny
    reranker."""
    import random

    import torch

    from omgm.data.kb_import import run_import
    from omgm.data.results import write_retrieval
    from omgm.data.samples import read_samples, samples_fingerprint
    from omgm.rerank.convert import save_ours
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    kb_json, csv_dir, urls = _copies_kb(w, demo, copies)
    kb = run_import(kb_json, w / "demo.sqlite", csv_dir, progress=False)
    rows = list(csv.DictReader((demo / "test.csv").open()))
    with (w / "many.csv").open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows * repeat)
    samples = read_samples(w / "many.csv")
    per_copy, res = len(samples) // repeat, {}
    for i, s in enumerate(samples):          # step 1 is image-only: one image (per copy) -> one candidate list
        rng = random.Random(f"{s.image_id}-{i // per_copy}")
        res[s.sample_id] = {"retrieved_entities": [{"url": u, "title": ""} for u in rng.sample(urls, 20)],
                            "retrieval_similarities": sorted((rng.random() for _ in range(20)), reverse=True)}
    write_retrieval(w / "s1.json", res, "step1", {"samples_hash": samples_fingerprint(samples)})
    tok, cfg = make_reranker(w / "models", corpus(demo))
    torch.manual_seed(0)
    from omgm.rerank.inputs import load_tokenizer

    save_ours(IT2ITReranker(IT2ITConfig.tiny(len(load_tokenizer(str(tok))))), w / "reranker.pth")
    return lambda out: ["rerank", "--sample_file", str(w / "many.csv"), "--step1_result", str(w / "s1.json"),
                        "--knowledge_base_path", str(kb), "--reranker_ckpt_path", str(w / "reranker.pth"),
                        "--tokenizer", str(tok), "--wiki_img_path_prefix", str(demo / "wiki_images"),
                        "--inat_dir", str(demo / "images/inat"), "--gld_dir", str(demo / "images/gld"),
                        "--save_result_path", str(out / "s2.json"), "--device", "cpu", "--no_progress"]


if __name__ == "__main__":
    raise SystemExit(main())
