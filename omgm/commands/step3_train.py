"""Fine-tune the step-3 generator on a training split (``omgm step3 train``): the recipe the authors never released.

    omgm step3 train --train_file train.csv --knowledge_base_path kb.sqlite --answer_generator llava1_5 \\
        --output_dir out/llava_sft [--tuning lora] [--train_section selected|evidence] [--sft_file sft.jsonl]

Each example is step 3's input for a training question exactly as ``--prompt_style`` renders it (the gold
entity's section chosen as step 3 would choose it, or its evidence section), with the reference answer as the
target; the loss is on the answer tokens only. The set is written as JSONL (``--sft_file``, reusable by other
trainers; ``--build_only`` stops there). The output folder loads in ``omgm step3 --llm_checkpoint``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omgm.config import parse_with_config, positive_int, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.samples import ImageDirs, read_samples
from omgm.errors import OmgmError, cli_errors
from omgm.finetune.data import SECTION_MODES, build_sft_set, read_sft_file, write_sft_file
from omgm.finetune.exact_match import exact_match_rate
from omgm.finetune.train import SftConfig
from omgm.generate.generators import GeneratorSpec
from omgm.help import command_parser
from omgm.io import check_writable
from omgm.parallel import device_for, env_place
from omgm.pipeline.answer import AnswerConfig, build_cut
from omgm.pipeline.finetune import FinetuneConfig
from omgm.resume import settings_diff
from omgm.settings import add_flags, from_values


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("step3 train", __doc__)
    p.add_argument("--train_file", help="training CSV (E-VQA or InfoSeek form)")
    add_flags(p, GeneratorSpec, only=("answer_generator", "llm_checkpoint", "prompt_style", "device", "dtype",
                                      "vision_tower"))
    p.add_argument("--train_section", choices=SECTION_MODES, default="selected",
                   help="selected: the gold entity's section as step 3 would choose it; evidence: the gold section")
    p.add_argument("--retrieval_results_file", default=None, help="step-2 results of the training questions "
                                                                   "(their section scores join the choice)")
    add_flags(p, AnswerConfig, only=("knowledge_base", "section_reranker", "context_tokenizer", "step2_beta"))
    p.add_argument("--sft_file", default=None, help="the SFT set as JSONL (written; reused if it exists)")
    p.add_argument("--build_only", action="store_true", help="write --sft_file and stop")
    p.add_argument("--strict", action="store_true", help="refuse a question that cannot make an example")
    p.add_argument("--limit", type=positive_int, default=None, help="the first N training questions only")
    p.add_argument("--eval_examples", type=positive_int, default=None,
                   help="exact match on the first N training examples, before and after training")
    add_flags(p, SftConfig, ImageDirs)
    p.add_argument("--no_progress", action="store_true")
    return p


def _sec_sim(path: str | None, samples) -> dict:
    """The step-2 section scores of each training question's gold entity, where the retrieval file has them."""
    if not path:
        return {}
    from omgm.data.results import read_retrieval

    rf, out = read_retrieval(path), {}
    for s in samples:
        e = rf.results.get(s.sample_id) or {}
        urls = [x["url"] for x in e.get("retrieved_entities", [])]
        if s.wikipedia_url in urls and e.get("sec_sim"):
            out[s.sample_id] = e["sec_sim"][urls.index(s.wikipedia_url)]
    return out


def examples_for(args, generator, samples) -> list[dict]:
    meta = {"train_file": str(args.train_file), "prompt_style": generator.style,
            "train_section": args.train_section, "generator": generator.name}
    if args.sft_file and Path(args.sft_file).is_file():
        examples, made_with = read_sft_file(args.sft_file)
        what = settings_diff(made_with, meta)
        if what:
            raise OmgmError(f"{args.sft_file} was built with other settings ({what}); use them, or another "
                            f"--sft_file")
        print(f"{len(examples)} examples from {args.sft_file}", file=sys.stderr)
        return examples
    cfg = from_values(AnswerConfig, args)
    kb = open_kb(cfg.knowledge_base)
    selector = None
    if args.train_section == "selected":
        from omgm.generate.sections import CrossEncoder, SectionSelector

        selector = SectionSelector(CrossEncoder(cfg.section_reranker, _device(cfg.generator)), cfg.step2_beta)
    sft = build_sft_set(samples, kb, generator, build_cut(cfg, generator), mode=args.train_section, selector=selector,
                        image_dirs=cfg.images,
                        sec_sim=_sec_sim(args.retrieval_results_file, samples), strict=args.strict)
    print(f"SFT set: {len(sft.examples)} examples; skipped: {dict(sft.skipped) or 'none'}", file=sys.stderr)
    if args.sft_file:
        write_sft_file(args.sft_file, sft, meta)
    return sft.examples


def _device(spec: GeneratorSpec):
    return device_for(env_place(), spec.device)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "train_file", "knowledge_base", *(() if args.build_only else ("output_dir",)))
    if not args.build_only:
        check_writable(Path(args.output_dir) / "config.json", inputs=[args.train_file])
    samples = read_samples(args.train_file)[: args.limit]
    cfg = from_values(FinetuneConfig, args, progress=not args.no_progress and env_place().main)
    generator = cfg.load_generator()
    examples = examples_for(args, generator, samples)
    if args.build_only:
        return 0
    if not examples:
        raise OmgmError("no training example (see the skip counts above)")
    gold, main = {s.sample_id: s for s in samples}, env_place().main
    probe = examples[: args.eval_examples or 0] if main else []
    before = exact_match_rate(generator, probe, gold) if probe else None
    trainer = cfg.build(generator)
    summary = trainer.run(examples)
    if probe and not trainer.deepspeed:        # under ZeRO the model's weights are sharded across ranks
        summary["exact_match_before_after"] = [before, exact_match_rate(generator, probe, gold)]
        print(f"exact match on {len(probe)} training questions: {before:.1f}% before -> "
              f"{summary['exact_match_before_after'][1]:.1f}% after")
    if main:
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
