"""Every stage's CLI on the demo data with tiny random models, on one device, and a comparison of two devices.

Used by :mod:`benchmarks.gpu_suite`: the chain runs once on the CPU and once on the GPU (fp16 reranker ViT, bf16
generators, shared-prefix batches, a 2-step LoRA fine-tune) from the same tiny weights, then
:func:`compare` checks the GPU's rankings and answers against the CPU's within these tolerances:

- step 1: the same top-20 entities in the same order for at least 90 % of queries, similarities within 2e-3
  (TF32/fp16 matrix products on the GPU reorder near-ties of random-weight embeddings);
- step 2: the same top-1 entity for at least 90 % of queries, fused scores within 5e-2 (the ViT runs in fp16
  there, as the authors ran it; fp32 on the CPU);
- step 3 (the tiny LLaVA, and a tiny chat LLM answering in shared-prefix batches of 4): at least 80 % identical
  answers for each (greedy decoding of a random-weight model in bf16 vs fp32 flips
  near-tied tokens; the prompts are byte-identical, which is what the pipeline controls);
- step-3 LoRA: finite losses, first-step loss within 5 % of the CPU's.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
TOLERANCES = {"step1_same_top20": 0.9, "step1_sim_abs": 2e-3, "step2_same_top1": 0.9, "step2_score_abs": 5e-2,
              "step3_same_answer": 0.8, "lora_first_loss_rel": 0.05}


def _run(args: list[str], env: dict, log: list) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    log.append({"cmd": " ".join(args[:2]), "seconds": round(time.perf_counter() - t0, 2), "rc": proc.returncode})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")


def prepare(shared: Path) -> None:
    """Tiny models and the SQLite KB, once, shared by every device's chain (same weights everywhere)."""
    env = _env(shared, shared, "cpu")
    if not (shared / "models" / "tiny_llava").is_dir():
        _run(["utils.make_tiny_models", "--out", str(shared / "models")], env, [])
    if not (shared / "kb.sqlite").is_file():
        _run(["omgm.data.kb_import", "--out", str(shared / "kb.sqlite"), "--overwrite"], env, [])


def _env(shared: Path, work: Path, device: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "device.yaml"
    cfg.write_text(f"work_root: {shared}\ndevice: {device}\nfaiss_index: {work}/summary.index\n"
                   f"knowledge_base: {shared}/kb.sqlite\nknowledge_base_file: {shared}/kb.sqlite\n"
                   f"knowledge_base_path: {shared}/kb.sqlite\n")
    env = dict(os.environ, OMGM_CONFIG=f"{ROOT / 'configs' / 'demo.yaml'}:{cfg}", PYTHONPATH=str(ROOT),
               WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    env.pop("OMGM_NO_VENV", None)
    return env


def run_chain(shared: Path, work: Path, device: str) -> dict:
    """Index, step 1, negatives, step 2 train + rerank, step 3 (LLaVA; a chat LLM in shared-prefix batches of 4), a
    2-step LoRA fine-tune; returns per-command times."""
    env, log, w, nop = _env(shared, work, device), [], str(work), "--no_progress"
    _run(["omgm", "index", "build", "--summarizer", "lead", "--summary_file", f"{w}/summaries.jsonl", nop], env, log)
    _run(["omgm.step1", "--sample_file", str(DEMO / "test.csv"), "--save_result_path", f"{w}/step1.json", nop],
         env, log)
    _run(["omgm.step1", "--sample_file", str(DEMO / "train.csv"), "--save_result_path", f"{w}/train1.json", nop],
         env, log)
    _run(["omgm.prep.mine_negatives", "--train_file", str(DEMO / "train.csv"), "--step1_result",
          f"{w}/train1.json", "--out", f"{w}/negatives.json"], env, log)
    _run(["omgm.step2", "train", "--train_file", str(DEMO / "train.csv"), "--negative_db_file",
          f"{w}/negatives.json", "--save_dir", f"{w}/reranker", "--num-epochs", "1", "--batch-size", "8",
          "--max_steps", "4", "--save_frequency", "1", nop], env, log)
    ckpt = max((work / "reranker").glob("model_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    _run(["omgm.step2", "rerank", "--sample_file", str(DEMO / "test.csv"), "--step1_result", f"{w}/step1.json",
          "--reranker_ckpt_path", str(ckpt), "--step1_alpha", "0.9", "--save_result_path", f"{w}/step2.json", nop],
         env, log)
    dtype = ["--dtype", "bf16"] if device != "cpu" else []
    _run(["omgm.step3", "--test_file", str(DEMO / "test.csv"), "--retrieval_results_file", f"{w}/step2.json",
          "--output_file", f"{w}/answers.json", "--max_new_tokens", "8", *dtype, nop], env, log)
    llm = str(shared / "models" / "tiny_llm")               # a chat LLM: batches of 4 share the prompt prefix
    _run(["omgm.step3", "--test_file", str(DEMO / "test.csv"), "--retrieval_results_file", f"{w}/step2.json",
          "--output_file", f"{w}/answers_llm.json", "--answer_generator", llm, "--context_tokenizer", llm,
          "--batch_size", "4", "--max_new_tokens", "8", *dtype, nop], env, log)
    _run(["omgm", "step3", "train", "--train_file", str(DEMO / "train.csv"), "--output_dir", f"{w}/sft",
          "--sft_file", f"{w}/sft.jsonl", "--train_section", "evidence", "--tuning", "lora", "--max_steps", "2",
          "--batch_size", "4", "--global_batch_size", "4", "--max_length", "1024",
          *dtype, nop], env, log)
    return {"device": device, "commands": log, "seconds": round(sum(c["seconds"] for c in log), 2)}


def _rankings(path: Path) -> dict[str, tuple[list[str], list[float]]]:
    from omgm.data.results import read_retrieval

    rf = read_retrieval(path)
    return {sid: (rf.urls(sid), [float(s) for s in r["retrieval_similarities"]]) for sid, r in rf.results.items()}


def _losses(work: Path) -> list[float]:
    from omgm.io import read_jsonl

    log = work / "sft" / "train_log.jsonl"
    return [r["loss"] for r in read_jsonl(log) if "loss" in r] if log.is_file() else []


def _same_answers(a: Path, b: Path) -> float:
    from omgm.metrics.evaluate import read_answers

    ans_a = {r["data_id"]: r["prediction"] for r in read_answers(a)}
    ans_b = {r["data_id"]: r["prediction"] for r in read_answers(b)}
    return sum(ans_a[k] == ans_b.get(k) for k in ans_a) / len(ans_a)


def compare(cpu: Path, dev: Path) -> dict:
    """The device run against the CPU run, with :data:`TOLERANCES`; ``ok`` is true when every check holds."""
    a, b = _rankings(cpu / "step1.json"), _rankings(dev / "step1.json")
    same20 = sum(a[s][0][:20] == b[s][0][:20] for s in a) / len(a)
    sim = max(abs(x - y) for s in a for x, y in zip(a[s][1], b[s][1]))
    ra, rb = _rankings(cpu / "step2.json"), _rankings(dev / "step2.json")
    same1 = sum(ra[s][0][:1] == rb[s][0][:1] for s in ra) / len(ra)
    score = max((abs(x - y) for s in ra for x, y in zip(ra[s][1], rb[s][1])), default=0.0)
    same_ans = min(_same_answers(cpu / name, dev / name) for name in ("answers.json", "answers_llm.json"))
    la, lb = _losses(cpu), _losses(dev)
    lora_rel = abs(la[0] - lb[0]) / max(abs(la[0]), 1e-9) if la and lb else None
    t = TOLERANCES
    checks = {"step1_same_top20": same20 >= t["step1_same_top20"], "step1_sim_abs": sim <= t["step1_sim_abs"],
              "step2_same_top1": same1 >= t["step2_same_top1"], "step2_score_abs": score <= t["step2_score_abs"],
              "step3_same_answer": same_ans >= t["step3_same_answer"],
              "lora_losses_finite": all(x == x and abs(x) != float("inf") for x in la + lb),
              "lora_first_loss_rel": lora_rel is not None and lora_rel <= t["lora_first_loss_rel"]}
    return {"ok": all(checks.values()), "checks": checks, "tolerances": t,
            "measured": {"step1_same_top20": same20, "step1_max_sim_diff": sim, "step2_same_top1": same1,
                         "step2_max_score_diff": score, "step3_same_answer": same_ans,
                         "lora_first_loss": [la[:1], lb[:1]], "lora_first_loss_rel": lora_rel}}
