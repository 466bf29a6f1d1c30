"""Step 2: the IT2IT reranker. ``train`` (step 2a) and ``rerank`` (step 2b, hybrid-grained, fused with step 1).

    python -m omgm.step2 train  --train_file train.csv --knowledge_base_file kb.sqlite --negative_db_file neg.json \
        --wiki_img_csv_dir csv/ --wiki_img_path_prefix wiki_images/ --init_ckpt blip2_pretrained.pth \
        --vit_ckpt eva_vit_g.pth --num-epochs 1 --learning-rate 1e-5 --batch-size 8 --neg-num 15
    python -m omgm.step2 rerank --sample_file test.csv --step1_result step1.json --reranker_ckpt_path model_X.pth \
        --knowledge_base_path kb.sqlite --top_ks 1,5,10,20 --step1_alpha 0.9 --save_result_path step2.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omgm import __version__
from omgm.config import ConfigError, int_list, parse_with_config, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import check_made_for, ranking, read_retrieval, write_retrieval
from omgm.data.samples import read_samples, samples_fingerprint
from omgm.errors import cli_errors
from omgm.harness import StageRun
from omgm.help import command_parser
from omgm.io import check_writable, file_sha256
from omgm.metrics.evaluate import evaluate
from omgm.metrics.recall import cutoffs_within
from omgm.pipeline.rerank import RerankConfig
from omgm.pipeline.rerank_train import RerankTrainConfig
from omgm.published import TOP_KS
from omgm.rerank.scoring import model_hash
from omgm.settings import add_flags, from_values

log = logging.getLogger("omgm.step2")


def train_parser() -> argparse.ArgumentParser:
    p = command_parser("step2 train", "Step 2a: train the IT2IT reranker")
    p.add_argument("--train_file", help="E-VQA-format training CSV")
    p.add_argument("--negative_db_file", help="hard-negative JSON (the authors' file, or omgm data mine-negatives)")
    add_flags(p, RerankTrainConfig)
    p.add_argument("--no_progress", action="store_true")
    return p


def rerank_parser() -> argparse.ArgumentParser:
    p = command_parser("step2 rerank", "Step 2b: hybrid-grained reranking")
    p.add_argument("--sample_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--step1_result")
    p.add_argument("--save_result_path", help="step-2 result JSON, or a directory for DIR/result.json")
    p.add_argument("--top_ks", type=int_list, default=list(TOP_KS))
    add_flags(p, RerankConfig)
    p.add_argument("--bare_output", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    return p


def run_train(argv: list[str]) -> int:
    from omgm.rerank.negatives import read_negative_db

    args = parse_with_config(train_parser(), argv)
    require(args, "train_file", "knowledge_base", "negative_db_file")
    cfg = from_values(RerankTrainConfig, args, progress=not args.no_progress)
    check_writable(Path(cfg.train.save_dir) / "run_settings.json", inputs=[args.train_file, args.negative_db_file])
    trainer = cfg.build(report=lambda text: print(text, file=sys.stderr))
    summary = trainer.run(read_samples(args.train_file, single_hop_only=False), read_negative_db(args.negative_db_file),
                          report=lambda text: print(text, file=sys.stderr))
    print(f"trained {summary['steps']} steps; last loss {summary['last_loss']:.4f}; final checkpoint "
          f"{summary['final_checkpoint']} (step 2b takes it, or the folder {cfg.train.save_dir}, as "
          f"--reranker_ckpt_path)")
    return 0


def run_rerank(argv: list[str]) -> int:
    args = parse_with_config(rerank_parser(), argv)
    require(args, "sample_file", "step1_result", "knowledge_base", "save_result_path")
    cfg = from_values(RerankConfig, args)
    with StageRun("step2", args.save_result_path, inputs=[args.sample_file, args.step1_result, cfg.knowledge_base,
                                                           cfg.reranker_ckpt_path]) as run:
        samples, step1 = read_samples(args.sample_file), read_retrieval(args.step1_result)
        kb = open_kb(cfg.knowledge_base)
        missing = check_made_for(step1, samples, args.sample_file, kb)
        top_ks = _top_ks(args, step1, kb)
        cfg.model.device = run.device(cfg.model.device)
        reranker = cfg.build(kb, report=lambda text: print(text, file=sys.stderr))
        run.uses(reranker.model)
        settings = run.parallel(lambda: _fingerprint(args, cfg, samples, kb, reranker))
        runs = reranker.run(samples, step1.results, not args.no_progress, parallel=settings)
        if runs is None:                 # another rank merges
            return 0
        summaries = [_write_run(args, cfg, r, _alpha_path(run.out, r.alpha, len(runs)), samples, top_ks) for r in runs]
        disk = reranker.candidates.disk
        run.finish({"runs": summaries, "counts": dict(reranker.counts), "samples_without_step1_result": len(missing),
                    **(disk.report() if disk is not None else {}),
                    "seconds_per_query": round(run.seconds / max(1, len(runs[0].results)), 4)})
    if missing:
        print(f"  {len(missing)} samples had no step-1 result (counted as misses), e.g. {missing[0].sample_id}")
    print(f"  candidates: {dict(reranker.counts)}")
    return 0


def _fingerprint(args, cfg: RerankConfig, samples, kb, reranker) -> dict:
    """What parts of this run must have been made with (merging, or redoing one rank)."""
    return {"samples": samples_fingerprint(samples), "kb": kb.url_order_hash(), "model": model_hash(reranker.model),
            "step1": file_sha256(args.step1_result), "query_norm": cfg.query_norm, "unit": cfg.query_chunk,
            "batch_size": cfg.batch_size, "pad_to_max": cfg.pad_to_max, "fusion": cfg.fusion}


def _top_ks(args, step1, kb) -> list[int]:
    """The cut-offs the candidate lists allow: with a KB smaller than k, R@k says nothing and is dropped."""
    kept, dropped = cutoffs_within(args.top_ks, step1.results)
    if not dropped:
        return kept
    longest = max(len(e["retrieved_entities"]) for e in step1.results.values())
    if longest < len(kb) or not kept:
        raise ConfigError(f"--top_ks {max(args.top_ks)} exceeds the {args.step1_result} candidate lists")
    print(f"note: the knowledge base has {len(kb)} entities: recall at {dropped} is not reported", file=sys.stderr)
    return kept


def _alpha_path(out: Path, alpha: float, n: int) -> Path:
    return out if n == 1 else out.with_name(f"{out.stem}.alpha{alpha:g}{out.suffix}")


def _write_run(args, cfg: RerankConfig, run, out_path: Path, samples, top_ks: list[int]) -> dict:
    report = evaluate({s.sample_id: s.wikipedia_url for s in samples}, ranking(run.results), top_ks)
    meta = {"omgm_version": __version__, "step1_result": str(args.step1_result), "alpha": run.alpha,
            "sample_file": str(args.sample_file), "samples_hash": samples_fingerprint(samples),
            "query_norm": cfg.query_norm, "reranker": str(cfg.reranker_ckpt_path)}
    write_retrieval(out_path, run.results, "step2", meta, bare=args.bare_output)
    print(report.table(f"step 2 (alpha={run.alpha:g}, query_norm={cfg.query_norm})"))
    print(f"top-1 evidence-section recall: {run.section_recall(len(samples)):.2f}")
    return {"alpha": run.alpha, "result_file": str(out_path), **report.as_dict(),
            "top1_section_recall": run.section_recall(len(samples))}


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "rerank"):
        print("usage: python -m omgm.step2 {train,rerank} [flags]  (-h after the command for its flags)", file=sys.stderr)
        return 2
    return run_train(argv[1:]) if argv[0] == "train" else run_rerank(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
