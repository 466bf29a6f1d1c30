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
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from omgm import __version__
from omgm.config import (
    ConfigError,
    command_parser,
    float_list,
    int_list,
    nonnegative_int,
    parse_with_config,
    positive_float,
    positive_int,
    require,
    setup_logging,
)
from omgm.data.kb import open_kb
from omgm.data.results import check_made_for, read_retrieval, write_json_atomic, write_retrieval
from omgm.data.samples import ImageDirs, read_samples, samples_fingerprint
from omgm.data.wiki_images import WikiImages, wiki_images_for
from omgm.devices import resolve_device
from omgm.errors import OmgmError, cli_errors
from omgm.io import OutputLock, check_writable, file_sha256, output_file, sibling
from omgm.metrics.evaluate import evaluate
from omgm.parallel import context, device_for, remove_parts
from omgm.pipeline.rerank import Reranker
from omgm.published import ALPHA
from omgm.rerank.convert import build_reranker, read_checkpoint
from omgm.rerank.inputs import image_transform, load_tokenizer
from omgm.rerank.scoring import model_hash

log = logging.getLogger("omgm.step2")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wiki_img_csv_dir", default=None, help="the 13 wiki-image CSVs (or import them into the KB store)")
    p.add_argument("--wiki_img_path_prefix", default=None, help="root of the downloaded wiki images")
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--reranker-model-name", "--reranker_model_name", dest="reranker_model_name", default="blip2",
                   help="'blip2' (the published sizes) or a JSON file of IT2ITConfig sizes")
    p.add_argument("--tokenizer", default="bert-base-uncased", help="BERT tokenizer id or folder ([DEC] is added)")
    p.add_argument("--vit_ckpt", default=None, help="EVA ViT-g weights (eva_vit_g.pth) when a checkpoint lacks the ViT")
    p.add_argument("--init_ckpt", default=None, help="LAVIS blip2_pretrained.pth (training init)")
    p.add_argument("--trust_checkpoint", action="store_true", help="allow pickled objects in checkpoints")
    p.add_argument("--device", default="auto")
    p.add_argument("--no_progress", action="store_true")


def train_parser() -> argparse.ArgumentParser:
    p = command_parser("step2 train", "Step 2a: train the IT2IT reranker")
    p.add_argument("--train_file", help="E-VQA-format training CSV")
    p.add_argument("--knowledge_base_file", help="KB JSON or SQLite store")
    p.add_argument("--negative_db_file", help="hard-negative JSON (the authors' file, or omgm data mine-negatives)")
    p.add_argument("--num-epochs", "--num_epochs", dest="num_epochs", type=positive_int, default=1)
    p.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=positive_float, default=1e-5)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=8)
    p.add_argument("--neg-num", "--neg_num", dest="neg_num", type=positive_int, default=15)
    p.add_argument("--save_frequency", type=positive_float, default=0.5, help="checkpoint every this fraction of an epoch")
    p.add_argument("--save_dir", default="outputs/reranker")
    p.add_argument("--wandb", type=int, choices=[0, 1], default=0, help="1: log to Weights & Biases")
    p.add_argument("--num_workers", type=nonnegative_int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_steps", type=positive_int, default=None, help="stop after this many steps (smoke tests)")
    p.add_argument("--log_every", type=positive_int, default=10)
    _common(p)
    return p


def rerank_parser() -> argparse.ArgumentParser:
    p = command_parser("step2 rerank", "Step 2b: hybrid-grained reranking")
    p.add_argument("--sample_file")
    p.add_argument("--step1_result")
    p.add_argument("--reranker_ckpt_path", help="trained reranker (official model_*.pth or omgm's)")
    p.add_argument("--knowledge_base_path", help="KB JSON or SQLite store")
    p.add_argument("--top_ks", type=int_list, default=[1, 5, 10, 20])
    p.add_argument("--step1_alpha", type=float_list, default=[ALPHA], help="fusion weight(s), e.g. 0.9 or 0.5,0.9")
    p.add_argument("--save_result_path")
    p.add_argument("--query_norm", choices=["faithful", "per_token"], default="faithful",
                   help="faithful: the official rerank-time normalisation across tokens (alpha 0.9 was tuned with "
                        "it); per_token: as in training")
    p.add_argument("--batch_size", type=positive_int, default=64, help="texts/images per model call")
    p.add_argument("--query_chunk", type=positive_int, default=64,
                   help="queries whose candidates are encoded together (their tokens are held in memory at once)")
    p.add_argument("--cache_memory_gb", type=positive_float, default=4.0,
                   help="candidate tokens kept in memory across chunks (least recently used are dropped)")
    p.add_argument("--cache_dir", default=None, help="on-disk cache of candidate tokens (keyed by model hash)")
    p.add_argument("--pad_to_max", action="store_true", help="pad texts to 512 as the official code (same scores)")
    p.add_argument("--bare_output", action="store_true")
    _common(p)
    return p


def _wiki(kb, args) -> WikiImages:
    return wiki_images_for(kb, args.wiki_img_path_prefix, args.wiki_img_csv_dir)


def run_train(argv: list[str]) -> int:
    from omgm.rerank.dataset import RerankTrainSet
    from omgm.rerank.negatives import read_negative_db
    from omgm.rerank.train import TrainConfig, train

    args = parse_with_config(train_parser(), argv)
    require(args, "train_file", "knowledge_base_file", "negative_db_file")
    kb = open_kb(args.knowledge_base_file)
    tokenizer = load_tokenizer(args.tokenizer)
    torch.manual_seed(args.seed)  # parameters no checkpoint provides (all of them without --init_ckpt)
    model, report = build_reranker(args.reranker_model_name, init_ckpt=args.init_ckpt, vit_ckpt=args.vit_ckpt,
                                   trust=args.trust_checkpoint)
    if not args.init_ckpt:
        log.warning("no --init_ckpt: the reranker starts from RANDOM weights (fine for tests, not for results)")
    print(report.summary() or "no checkpoint loaded", file=sys.stderr)
    if model.config.qformer.vocab_size != len(tokenizer):
        raise OmgmError(f"tokenizer {args.tokenizer} has {len(tokenizer)} tokens but the Q-Former expects "
                        f"{model.config.qformer.vocab_size}")
    ds = RerankTrainSet(read_samples(args.train_file, single_hop_only=False), read_negative_db(args.negative_db_file),
                        args.knowledge_base_file, _wiki(kb, args), ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir),
                        image_transform(model.config.vision.image_size), args.neg_num, args.seed)
    print(f"training examples: {len(ds)}; dropped: {dict(ds.drops) or 'none'}", file=sys.stderr)
    if len(ds) == 0:
        raise OmgmError("no usable training example (see the drop counts above)")
    cfg = TrainConfig(num_epochs=args.num_epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                      save_frequency=args.save_frequency, save_dir=args.save_dir, num_workers=args.num_workers,
                      seed=args.seed, max_steps=args.max_steps, log_every=args.log_every, wandb=bool(args.wandb),
                      cpu=args.device == "cpu", progress=not args.no_progress)
    meta = {"init_ckpt": args.init_ckpt, "vit_ckpt": args.vit_ckpt, "tokenizer": args.tokenizer}
    summary = train(model, ds, tokenizer, cfg, meta, trainable_only=bool(args.vit_ckpt))
    print(f"trained {summary['steps']} steps; last loss {summary['last_loss']:.4f}; checkpoints in {args.save_dir}")
    return 0


def _load_for_rerank(args):
    """The trained model; an omgm checkpoint without the ViT names the ViT file it was trained with."""
    vit, init = args.vit_ckpt, args.init_ckpt
    if args.reranker_ckpt_path and not vit:
        head = read_checkpoint(args.reranker_ckpt_path, args.trust_checkpoint)
        if head.get("trainable_only"):
            vit = (head.get("init") or {}).get("vit_ckpt")
            init = init or (head.get("init") or {}).get("init_ckpt")
            if not vit:
                raise OmgmError(f"{args.reranker_ckpt_path} holds only trained parameters: pass --vit_ckpt")
    return build_reranker(args.reranker_model_name, reranker_ckpt=args.reranker_ckpt_path, init_ckpt=init,
                          vit_ckpt=vit, trust=args.trust_checkpoint)


def _reranker(args, kb, device) -> Reranker:
    model, report = _load_for_rerank(args)
    if not args.reranker_ckpt_path:
        log.warning("no --reranker_ckpt_path: RANDOM reranker weights")
    print(report.summary() or "no checkpoint loaded", file=sys.stderr)
    return Reranker(model, load_tokenizer(args.tokenizer), kb, _wiki(kb, args),
                    ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir), resolve_device(device),
                    args.batch_size, args.query_chunk, args.query_norm, args.cache_dir, args.cache_memory_gb,
                    args.pad_to_max)


def run_rerank(argv: list[str]) -> int:
    args = parse_with_config(rerank_parser(), argv)
    require(args, "sample_file", "step1_result", "knowledge_base_path", "save_result_path")
    t0, out, ctx = time.time(), output_file(args.save_result_path), context()
    check_writable(out, sibling(out, ".summary.json"), inputs=[args.sample_file, args.step1_result,
                                                               args.knowledge_base_path, args.reranker_ckpt_path])
    samples, step1 = read_samples(args.sample_file), read_retrieval(args.step1_result)
    kb = open_kb(args.knowledge_base_path)
    missing = check_made_for(step1, samples, args.sample_file, kb)
    longest = max((len(e["retrieved_entities"]) for e in step1.results.values()), default=0)
    if max(args.top_ks) > longest:
        if longest < len(kb) or not any(k <= longest for k in args.top_ks):
            raise ConfigError(f"--top_ks {max(args.top_ks)} exceeds the {args.step1_result} candidate lists")
        dropped = [k for k in args.top_ks if k > longest]              # a KB smaller than k: R@k says nothing
        args.top_ks = [k for k in args.top_ks if k <= longest]
        print(f"note: the knowledge base has {len(kb)} entities: recall at {dropped} is not reported",
              file=sys.stderr)
    with OutputLock(out) if ctx.main else nullcontext():
        reranker = _reranker(args, kb, device_for(ctx, args.device))
        parts = out.with_name(out.name + ".parts")
        # the parts' settings, also for one process merging what ranks left (it compares them with theirs)
        settings = {"samples": samples_fingerprint(samples), "kb": kb.url_order_hash(),
                    "model": model_hash(reranker.model), "step1": file_sha256(args.step1_result),
                    "query_norm": args.query_norm, "unit": args.query_chunk, "batch_size": args.batch_size,
                    "pad_to_max": args.pad_to_max} if ctx.world > 1 or parts.is_dir() else {}
        runs = reranker.rerank(samples, step1.results, args.step1_alpha, not args.no_progress,
                               (ctx, parts, settings))
        if runs is None:                 # another rank merges
            return 0
        seconds = time.time() - t0
        summaries = [_write_run(args, run, _alpha_path(out, run.alpha, len(runs)), samples) for run in runs]
        write_json_atomic(sibling(out, ".summary.json"), {
            "stage": "step2", "runs": summaries, "counts": dict(reranker.counts), "processes": ctx.world,
            "samples_without_step1_result": len(missing), "seconds": round(seconds, 2),
            "seconds_per_query": round(seconds / max(1, len(runs[0].results)), 4)}, indent=2)
        remove_parts(parts)
    if missing:
        print(f"  {len(missing)} samples had no step-1 result (counted as misses), e.g. {missing[0].sample_id}")
    print(f"  candidates: {dict(reranker.counts)}")
    return 0


def _alpha_path(out: Path, alpha: float, n: int) -> Path:
    return out if n == 1 else out.with_name(f"{out.stem}.alpha{alpha:g}{out.suffix}")


def _write_run(args, run, out_path: Path, samples) -> dict:
    report = evaluate({s.sample_id: s.wikipedia_url for s in samples},
                      {k: [e["url"] for e in v["retrieved_entities"]] for k, v in run.results.items()}, args.top_ks)
    meta = {"omgm_version": __version__, "step1_result": str(args.step1_result), "alpha": run.alpha,
            "sample_file": str(args.sample_file), "samples_hash": samples_fingerprint(samples),
            "query_norm": args.query_norm, "reranker": str(args.reranker_ckpt_path)}
    write_retrieval(out_path, run.results, "step2", meta, bare=args.bare_output)
    print(report.table(f"step 2 (alpha={run.alpha:g}, query_norm={args.query_norm})"))
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
