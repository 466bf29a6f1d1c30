"""omgm's own costs at the real sizes: every stage on synthetic E-VQA- and InfoSeek-shaped releases at several scales.

Scale 1 is E-VQA's 2M entities x 8 sections with 5,750 questions and InfoSeek's 100k entities with 70k questions
(``_synthetic.py`` writes them in the real formats). Models are stand-ins so that only omgm's own work is measured:
the retriever is ``_standin.py``'s hashed vectors (1,280 wide, EVA-CLIP-8B's width, so the index has its real
size), the reranker, cross-encoder and LLaVA are the tiny RANDOM-weight models of ``utils.make_tiny_models``. No
figure here is a result; they are costs. Each command runs in its own process with one thread (so that CPU
seconds count work, not thread pools spinning while the machine is busy), measured from the inside
(``_standin.py``): CPU seconds, peak RSS (VmHWM), bytes written; ``disk_mb`` is the size of what the stage leaves.
``ask`` loads the flat summary index it searches (the vectors' size, read in full: ~17 CPU s at 2M x 1280): its
bounds are measured above that (the index's size, and FAISS reading it alone, measured as ``index_read``).

Growth exponents (log cost ratio / log size ratio, on CPU seconds above the command's start-up, i.e. above the
same command's ``--help``): ``N`` between the smallest and largest scale with the smallest scale's questions;
``Q`` at the largest scale between the smallest scale's questions and all of them; null where the smaller cost is
under 0.5 CPU seconds above start-up (noise, not a measurement: run larger scales). Start-up bounds compare the
CPU seconds of a one-question run (step 2, ``ask``) at the largest and the smallest scale: what grows with the
KB, in seconds that other load on the machine does not inflate. The last line is one JSON
document: ``{"stages": {...}, "bounds": {NAME: {"value", "limit", "ok"}}, ...}``.

    python benchmarks/full_scale.py --scales 0.01,0.1 [--shapes evqa,infoseek] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402
from benchmarks._synthetic import SHAPES, write_release  # noqa: E402

CACHE_MAX_GB = 0.01          # the step-2 disk cache's bound here: small enough that the larger scales must evict
STANDIN_DIM = 1280


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


class Runner:
    """Runs one omgm command in its own process and returns its measurement."""

    def __init__(self, work: Path, config: Path) -> None:
        self.work, self.config, self.n = work, config, 0
        self.env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
        self.env.update(OMGM_CONFIG=str(config), HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT),
                        OMGM_STANDIN_DIM=str(STANDIN_DIM), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def __call__(self, args: list[str], outputs: list[Path] = ()) -> dict:
        self.n += 1
        measure = self.work / f"measure_{self.n}.json"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "_standin.py"), str(measure), *args],
                              env=self.env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"omgm {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        m = json.loads(measure.read_text())
        m["disk_mb"] = round(sum(_size_mb(p) for p in outputs), 1)
        return m


def _config(path: Path, rel: dict, models: Path, work: Path) -> Path:
    lines = {"knowledge_base": work / "kb.sqlite", "kb_json": rel["kb_json"], "wiki_img_csv_dir": rel["csv_dir"],
             "wiki_img_path_prefix": rel["wiki_prefix"], "inat_dir": rel["images"], "gld_dir": rel["images"],
             "infoseek_dir": rel["images"], "faiss_index": work / "summary.index", "retriever_vit": "standin",
             "device": "cpu", "num_workers": 0, "reranker_model_name": models / "tiny_reranker.json",
             "tokenizer": models / "tiny_bert", "answer_generator": models / "tiny_llava",
             "section_reranker": models / "tiny_cross_encoder", "context_tokenizer": models / "tiny_llava",
             "max_new_tokens": 4, "top_ks": "[1, 5, 10, 20]", "retrieval_top_k": 20}
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


STAGES = ("kb_import", "index_build", "step1", "step2", "step3", "ask")


def run_scale(shape, scale: float, q0: int, work: Path, models: Path, large: bool, stages=STAGES,
              max_questions: int | None = None) -> dict:
    """Every stage at one scale: ``{stage: measurement}`` (``*_q0`` and ``*_one``: the same stage on the smallest
    scale's questions and on one question)."""
    n, q = max(200, round(shape.entities * scale)), max(q0, round(shape.questions * scale))
    q = min(q, max_questions) if max_questions else q
    rel = write_release(work / "release", shape, n, q, q0)
    run, out = Runner(work, _config(work / "config.yaml", rel, models, work)), work / "out"
    out.mkdir(exist_ok=True)
    m = {"_size": {"entities": n, "questions": q, "kb_json_mb": round(_size_mb(rel["kb_json"]), 1)}}
    m["kb_import"] = run(["kb", "import", "--out", str(work / "kb.sqlite"), "--no_progress"], [work / "kb.sqlite"])
    m["kb_import"]["store_mb"] = round(_size_mb(work / "kb.sqlite"), 1)
    m["index_build"] = run(["index", "build", "--summarizer", "lead", "--summary_file", str(work / "sums.jsonl"),
                            "--no_progress"], [work / "summary.index", work / "sums.jsonl"])
    m["index_build"]["vectors_mb"] = round(n * STANDIN_DIM * 4 / 2**20, 1)
    if "ask" in stages:
        m["index_read"] = run(["--read_index", str(work / "summary.index")])
    cuts = {"": (rel["all"], q), "_one": (rel["one"], 1)} | ({"_q0": (rel["q0"], q0)} if large else {})
    done: dict[int, str] = {}                  # a cut with as many questions as one already run is that run
    for cut, (csv, count) in cuts.items():
        if count in done:
            for stage in ("step1", "step2", "step3"):
                if stage + done[count] in m:
                    m[stage + cut] = m[stage + done[count]]
            continue
        done[count] = cut
        s1, s2 = out / f"step1{cut}.json", out / f"step2{cut}.json"
        m["step1" + cut] = run(["step1", "--sample_file", str(csv), "--save_result_path", str(s1), "--no_progress"],
                               [s1])
        cache = work / f"cache{cut}"
        if "step2" not in stages:
            continue
        m["step2" + cut] = run(["step2", "rerank", "--sample_file", str(csv), "--step1_result", str(s1),
                                "--save_result_path", str(s2), "--cache_dir", str(cache), "--cache_max_gb",
                                str(CACHE_MAX_GB), "--no_progress"], [s2, cache])
        m["step2" + cut]["cache_mb"] = round(_size_mb(cache), 2)
        if cut != "_one" and "step3" in stages:
            ans = out / f"answers{cut}.json"
            m["step3" + cut] = run(["step3", "--test_file", str(csv), "--retrieval_results_file", str(s2),
                                    "--output_file", str(ans), "--no_eval", "--no_progress"], [ans])
    if "ask" in stages:
        image = next(rel["images"].glob("*.jpg"))
        m["ask"] = run(["ask", "--image", str(image), "--question", "What is this known for?", "--json"])
    return m


def _startup(work: Path, stages=STAGES) -> dict:
    """Each command's cost with nothing to do (``--help``): what the growth exponents are measured above."""
    run = Runner(work, work / "none.yaml")
    (work / "none.yaml").write_text("device: cpu\n")
    cmds = {"kb_import": ["kb", "import"], "index_build": ["index", "build"], "step1": ["step1"],
            "step2": ["step2", "rerank"], "step3": ["step3"], "ask": ["ask"]}
    return {k: run([*v, "--help"]) for k, v in cmds.items() if k in stages}


NOISE_FLOOR_S = 0.5      # CPU seconds above start-up below which a cost is start-up noise, not a measurement


def exponent(c0: float, c1: float, s0: float, s1: float) -> float | None:
    """log(c1 / c0) / log(s1 / s0); None where the smaller cost is under the noise floor (not measurable)."""
    if c0 < NOISE_FLOOR_S or c1 <= 0 or s1 == s0:
        return None
    return round(math.log(c1 / c0) / math.log(s1 / s0), 3)


def _net(m: dict, base: dict, stage: str) -> float:
    return m["cpu_s"] - base[stage.split("_")[0] if stage.startswith("step") else stage]["cpu_s"]


def summarise(shape: str, runs: list[dict], base: dict, stages=STAGES) -> dict:
    """Per stage: the figures at each scale and the growth exponents (see the module docstring)."""
    first, last = runs[0], runs[-1]
    n0, n1 = first["_size"]["entities"], last["_size"]["entities"]
    q0, q1 = first["_size"]["questions"], last["_size"]["questions"]
    out = {}
    for stage in stages:
        row = {k: [r[stage][k] for r in runs] for k in ("cpu_s", "peak_rss_mb", "disk_mb", "written_mb")}
        if stage in ("kb_import", "index_build", "ask"):
            row["growth_exponent_N"] = exponent(_net(first[stage], base, stage), _net(last[stage], base, stage), n0, n1)
            row["growth_exponent_Q"] = None          # not per question (ask: one question)
        else:
            c00, c10, c11 = (_net(first[stage], base, stage), _net(last[stage + "_q0"], base, stage),
                             _net(last[stage], base, stage))
            row["growth_exponent_N"] = exponent(c00, c10, n0, n1)
            row["growth_exponent_Q"] = exponent(c10, c11, q0, q1)
        out[f"{shape}/{stage}"] = row
    return out


def bounds(shape: str, runs: list[dict], stages=STAGES) -> dict:
    first, last = runs[0], runs[-1]
    ib, kb = last["index_build"], last["kb_import"]

    def b(value: float, limit: float) -> dict:
        return {"value": round(value, 3), "limit": round(limit, 3), "ok": value <= limit}

    out = {
        f"{shape}/index_build_peak_rss_mb": b(ib["peak_rss_mb"], 1.25 * ib["vectors_mb"] + 1024),
        f"{shape}/kb_import_rss_growth_mb": b(kb["peak_rss_mb"] - first["kb_import"]["peak_rss_mb"], 64),
        f"{shape}/kb_import_write_amplification": b(kb["written_mb"] / max(kb["store_mb"], 1e-9), 1.3),
    }
    if "step2" in stages:
        out[f"{shape}/step2_startup_growth_s"] = b(last["step2_one"]["cpu_s"] - first["step2_one"]["cpu_s"], 2.0)
        out[f"{shape}/step2_startup_rss_growth_mb"] = b(last["step2_one"]["peak_rss_mb"]
                                                        - first["step2_one"]["peak_rss_mb"], 100)
        out[f"{shape}/step2_cache_mb"] = b(max(r["step2"]["cache_mb"] for r in runs), CACHE_MAX_GB * 1e9 / 2**20)
    if "ask" in stages:
        read = last["index_read"]["cpu_s"] - first["index_read"]["cpu_s"]     # reading the index it searches
        out[f"{shape}/ask_startup_growth_s"] = b(last["ask"]["cpu_s"] - first["ask"]["cpu_s"] - read, 2.0)
        index_growth = ib["vectors_mb"] - first["index_build"]["vectors_mb"]     # the flat index ask searches
        out[f"{shape}/ask_startup_rss_growth_mb"] = b(last["ask"]["peak_rss_mb"] - first["ask"]["peak_rss_mb"]
                                                      - index_growth, 100)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="0.01,0.1", help="comma-separated, smallest first (1 = the real sizes)")
    p.add_argument("--shapes", default="evqa,infoseek")
    p.add_argument("--work", help="keep the releases and outputs here (default: a temporary folder, removed)")
    p.add_argument("--stages", default=",".join(STAGES), help="kb_import, index_build and step1 always run; step3 "
                                                              "runs step2 too")
    p.add_argument("--max_questions", type=int, default=None, help="at most this many questions per scale (the "
                                                                   "question stages' cost is per question: 70k "
                                                                   "InfoSeek questions take hours on 2 cores)")
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), scales="0.0002,0.0004", shapes="evqa", stages="kb_import,index_build,step1")
    chosen = set(a.stages.split(",")) | set(STAGES[:3]) | ({"step2"} if "step3" in a.stages.split(",") else set())
    stages = tuple(s for s in STAGES if s in chosen)
    scales = sorted(float(s) for s in a.scales.split(","))
    if len(scales) < 2:
        p.error("--scales needs two scales or more (the growth exponents compare the smallest and the largest)")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="omgm-full-scale-"))
    try:
        models = work / "models"
        if {"step2", "step3", "ask"} & set(stages):
            subprocess.run([sys.executable, "-m", "utils.make_tiny_models", "--out", str(models)], cwd=ROOT,
                           check=True, capture_output=True)
        base = _startup(work, stages) if not a.smoke else {k: {"cpu_s": 0.0} for k in stages}
        figures, limits, sizes = {}, {}, {}
        for name in a.shapes.split(","):
            shape = SHAPES[name]
            q0 = max(1, round(shape.questions * scales[0]))
            q0 = min(q0, a.max_questions // 2) if a.max_questions else q0
            runs = []
            for i, s in enumerate(scales):
                runs.append(run_scale(shape, s, q0, work / name / str(s), models, large=i > 0, stages=stages,
                                      max_questions=a.max_questions))
                print(json.dumps({"shape": name, "scale": s, **runs[-1]}), flush=True)
            figures |= summarise(name, runs, base, stages)
            limits |= bounds(name, runs, stages)
            sizes[name] = [r["_size"] for r in runs]
        print(json.dumps({"scales": scales, "sizes": sizes, "startup_cpu_s": {k: v["cpu_s"] for k, v in base.items()},
                          "stand_ins": "hashed-vector retriever (no model), tiny RANDOM-weight reranker / "
                                       "cross-encoder / LLaVA: costs are omgm's own, no figure is a result",
                          "cpu_cores": os.cpu_count(), "stages": figures, "bounds": limits}))
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
