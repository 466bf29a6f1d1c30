"""Step 3: section-augmented answer generation, then the dataset's official metric.

    python -m omgm.step3 --test_file test.csv --retrieval_results_file step2.json --step2_beta 0.2 \\
        --answer_generator llava1_5 --knowledge_base_path kb.sqlite --output_file out/answers/

The top-1 entity's best section (cross-encoder fused with step-2 scores) is the context; the generator answers
with the published prompts (``--prompt_style official``, the default) or omgm's corrected ones (``omgm``).
Finished answers go to ``OUTPUT.partial.jsonl`` as they are made, so a killed run resumes (with the same
settings only); the result is written atomically as ``{"format": "omgm.answers", "version": 2, "meta",
"records"}`` (``--bare_output``: the published list of records). A directory (or a path ending with ``/``) as
``--output_file`` means ``DIR/result.json``, as in the published scripts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields

from omgm import __version__
from omgm.config import command_parser, fraction, parse_with_config, positive_int, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import check_made_for, read_retrieval
from omgm.data.samples import ImageDirs, read_samples, samples_fingerprint
from omgm.errors import OmgmError, cli_errors
from omgm.generate.generators import list_generators
from omgm.generate.prompts import PROMPT_STYLES
from omgm.io import OutputLock, check_writable, file_sha256, output_file, sibling, write_json_atomic
from omgm.metrics.evaluate import ANSWERS_FORMAT, ANSWERS_VERSION, evaluate_records
from omgm.parallel import context, device_for, remove_parts, use_parts
from omgm.pipeline.answer import AnswerConfig, answer_in_parallel, answer_resumably, build_answerer, record_counts
from omgm.published import BETA
from omgm.resume import PartialRecords


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("step3", __doc__)
    p.add_argument("--test_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--retrieval_results_file", help="step-2 (or step-1) result JSON")
    p.add_argument("--knowledge_base_path", help="KB JSON or SQLite store")
    p.add_argument("--output_file", help="answers JSON, or a directory for DIR/result.json")
    p.add_argument("--step2_beta", type=fraction, default=BETA,
                   help="weight of the step-2 section scores (paper and script: 0.2; the official argparse default is 0)")
    p.add_argument("--answer_generator", default="llava1_5",
                   help="; ".join(f"{k}: {v}" for k, v in list_generators().items()) + "; or a local model folder")
    p.add_argument("--llm_checkpoint", default=None,
                   help="other weights for the generator: a llava-hf or original-format LLaVA folder, a chat LLM...")
    p.add_argument("--prompt_style", choices=PROMPT_STYLES, default="official",
                   help="official: the published prompts (reproduces the paper); omgm: every VLM sees the image")
    p.add_argument("--context_tokenizer", default=None,
                   help="official style: the LLaVA-1.5 tokenizer that cuts contexts (default: the original-format "
                        "LLaVA folder itself, else liuhaotian/llava-v1.5-7b)")
    p.add_argument("--vision_tower", default=None, help="original-format LLaVA: use this CLIP folder, not mm_vision_tower")
    p.add_argument("--section_reranker", default=AnswerConfig.section_reranker, help="cross-encoder id or folder")
    p.add_argument("--section_reranker_dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--context_tokens", type=positive_int, default=3072)
    p.add_argument("--batch_size", type=positive_int, default=1,
                   help="answers per generate call (1: the published computation; more: faster, same answers up "
                        "to float rounding)")
    p.add_argument("--window", type=positive_int, default=64, help="questions answered (and saved) together")
    p.add_argument("--max_new_tokens", type=positive_int, default=None, help="default: 200 for LLaVA, 128 otherwise")
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on GPU, LLaVA fp16; fp32 on CPU)")
    p.add_argument("--attn_implementation", default=None, help="sdpa (default) or flash_attention_2 if installed")
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="vllm: optional, CUDA only, chat LLMs and llava-hf VLMs (the transformers path is the reference)")
    p.add_argument("--limit", type=positive_int, default=None, help="answer only the first N samples")
    p.add_argument("--restart", action="store_true", help="discard answers a previous run left in OUTPUT.partial.jsonl")
    p.add_argument("--no_eval", action="store_true", help="skip the metric at the end")
    p.add_argument("--bem_model", default=None, help="PyTorch BEM (hub id or folder) for the official E-VQA score")
    p.add_argument("--infoseek_val", default=None, help="infoseek_val.jsonl (official InfoSeek references)")
    p.add_argument("--infoseek_qtype", default=None, help="infoseek_val_qtype.jsonl")
    p.add_argument("--bare_output", action="store_true", help="write the published bare list of records")
    p.add_argument("--no_progress", action="store_true")
    return p


def answer_config(args: argparse.Namespace) -> AnswerConfig:
    values = {f.name: getattr(args, f.name) for f in fields(AnswerConfig) if hasattr(args, f.name)}
    return AnswerConfig(**{**values, "device": None if args.device == "auto" else args.device})


def load_samples(path: str, limit: int | None):
    everything = read_samples(path)
    samples = everything[:limit]
    kinds = {s.dataset for s in samples}
    if len(kinds) > 1:
        raise OmgmError(f"{path} mixes InfoSeek and E-VQA rows; answer them separately")
    return everything, samples, kinds.pop() if kinds else "evqa"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "test_file", "retrieval_results_file", "knowledge_base_path", "output_file")
    t0, out, cfg, ctx = time.time(), output_file(args.output_file), answer_config(args), context()
    cfg.device = device_for(ctx, cfg.device)
    everything, samples, dataset = load_samples(args.test_file, args.limit)
    retrieval = read_retrieval(args.retrieval_results_file)
    kb = open_kb(args.knowledge_base_path)
    unretrieved = [s for s in check_made_for(retrieval, everything, args.test_file, kb) if s in samples]
    check_writable(out, sibling(out, ".summary.json"),
                   inputs=[args.test_file, args.retrieval_results_file, args.knowledge_base_path])
    with OutputLock(out) if ctx.main else nullcontext():
        settings = {**asdict(cfg), "device": (cfg.device or "auto").split(":")[0], "samples": samples_fingerprint(everything),
                    "kb": kb.url_order_hash(), "retrieval": file_sha256(args.retrieval_results_file)}
        records, answerer, partial = _answer(args, cfg, ctx, kb, samples, retrieval, settings, out)
        if records is None:              # another rank merges
            return 0
        meta = {"omgm_version": __version__, "test_file": str(args.test_file), "dataset": dataset, **settings,
                "limit": args.limit, "retrieval_results_file": str(args.retrieval_results_file),
                "generator": answerer.generator.name, "context_cut": answerer.cut.name, "processes": ctx.world,
                "rendering": getattr(answerer.generator, "rendering", None), "counts": record_counts(records),
                "samples_without_retrieval": len(unretrieved)}
        write_json_atomic(out, records if args.bare_output else
                          {"format": ANSWERS_FORMAT, "version": ANSWERS_VERSION, "meta": meta, "records": records})
        summary = _summary(args, records, meta, dataset, samples, time.time() - t0)
        write_json_atomic(sibling(out, ".summary.json"), summary, indent=2)
        remove_parts(out.with_name(out.name + ".parts"))
        if partial is not None:          # only now: until the result is written, the answers live there
            partial.remove()
    print(json.dumps(summary, indent=2))
    return 0


def _answer(args, cfg, ctx, kb, samples, retrieval, settings, out):
    """The records (on the rank that writes them), answered in one process (resumable) or by every rank."""
    answerer = build_answerer(cfg, kb, ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir))
    answerer.source = str(args.retrieval_results_file)
    parallel = (ctx, out.with_name(out.name + ".parts"), settings)
    if use_parts(parallel):
        return answer_in_parallel(answerer, samples, retrieval.results, parallel, args.window,
                                  not args.no_progress), answerer, None
    partial = PartialRecords(out.with_name(out.name + ".partial.jsonl"), settings)
    done = partial.open(args.restart)
    if done:
        print(f"resuming: {len(done)} answers already in {partial.path}", file=sys.stderr)
    records = answer_resumably(answerer, samples, retrieval.results, partial, done, args.window, not args.no_progress)
    return records, answerer, partial


def _summary(args, records, meta, dataset, samples, seconds) -> dict:
    n = max(1, len(records))
    summary = {"stage": "step3", "answers": len(records), "seconds": round(seconds, 2),
               "prompt_style": args.prompt_style, "generator": meta["generator"],
               "entity_hit": round(100.0 * sum(r["entity_hit"] for r in records) / n, 2),
               "section_hit": round(100.0 * sum(r["section_hit"] for r in records) / n, 2), "counts": meta["counts"]}
    if not args.no_eval:
        summary["evaluation"] = evaluate_records(records, dataset, args.bem_model, args.infoseek_val,
                                                 args.infoseek_qtype, meta.get("device"))
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
