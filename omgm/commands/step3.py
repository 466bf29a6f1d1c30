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

from omgm import __version__
from omgm.config import parse_with_config, positive_int, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import among, check_made_for, read_retrieval
from omgm.data.samples import read_samples, samples_fingerprint
from omgm.errors import OmgmError, cli_errors
from omgm.generate.generators import list_generators
from omgm.harness import StageRun
from omgm.help import command_parser
from omgm.io import file_sha256, write_json_atomic
from omgm.metrics.bootstrap import without_outcomes
from omgm.metrics.evaluate import ANSWERS_FORMAT, ANSWERS_VERSION, evaluate_records
from omgm.pipeline.answer import AnswerConfig, record_counts
from omgm.resume import PartialRecords
from omgm.settings import add_flags, from_values


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("step3", __doc__)
    p.add_argument("--test_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--retrieval_results_file", help="step-2 (or step-1) result JSON")
    p.add_argument("--output_file", help="answers JSON, or a directory for DIR/result.json")
    names = "; ".join(f"{k}: {v}" for k, v in list_generators().items()) + "; or a local model folder"
    add_flags(p, AnswerConfig, overrides={"answer_generator": {"help": names}})
    p.add_argument("--window", type=positive_int, default=64, help="questions answered (and saved) together")
    p.add_argument("--limit", type=positive_int, default=None, help="answer only the first N samples")
    p.add_argument("--restart", action="store_true", help="discard answers a previous run left in OUTPUT.partial.jsonl")
    p.add_argument("--no_eval", action="store_true", help="skip the metric at the end")
    p.add_argument("--bem_model", default=None, help="PyTorch BEM (hub id or folder) for the official E-VQA score")
    p.add_argument("--infoseek_val", default=None, help="infoseek_val.jsonl (official InfoSeek references)")
    p.add_argument("--infoseek_qtype", default=None, help="infoseek_val_qtype.jsonl")
    p.add_argument("--bare_output", action="store_true", help="write the published bare list of records")
    p.add_argument("--no_progress", action="store_true")
    return p


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
    require(args, "test_file", "retrieval_results_file", "knowledge_base", "output_file")
    cfg = from_values(AnswerConfig, args)
    with StageRun("step3", args.output_file, inputs=[args.test_file, args.retrieval_results_file,
                                                      cfg.knowledge_base]) as run:
        cfg.generator.device = run.device(cfg.generator.device)
        everything, samples, dataset = load_samples(args.test_file, args.limit)
        retrieval, kb = read_retrieval(args.retrieval_results_file), open_kb(cfg.knowledge_base)
        unretrieved = among(check_made_for(retrieval, everything, args.test_file, kb), samples)
        settings = {**cfg.fingerprint(), "device": (cfg.generator.device or "auto").split(":")[0],
                    "samples": samples_fingerprint(everything), "kb": kb.url_order_hash(),
                    "retrieval": file_sha256(args.retrieval_results_file)}
        answerer = cfg.build(kb)
        answerer.source = str(args.retrieval_results_file)
        run.uses(getattr(answerer.generator, "model", None))
        records, partial = _answer(args, answerer, run, samples, retrieval, settings)
        if records is None:              # another rank merges
            return 0
        meta = {"omgm_version": __version__, "test_file": str(args.test_file), "dataset": dataset, **settings,
                "limit": args.limit, "retrieval_results_file": str(args.retrieval_results_file),
                "generator": answerer.generator.name, "context_cut": answerer.cut.name, "processes": run.ctx.world,
                "rendering": getattr(answerer.generator, "rendering", None), "counts": record_counts(records),
                "samples_without_retrieval": len(unretrieved)}
        write_json_atomic(run.out, records if args.bare_output else
                          {"format": ANSWERS_FORMAT, "version": ANSWERS_VERSION, "meta": meta, "records": records})
        summary = run.finish(_summary(args, cfg, records, meta, dataset))
        if partial is not None:          # only now: until the result is written, the answers live there
            partial.remove()
    print(json.dumps(without_outcomes(summary), indent=2))
    return 0


def _answer(args, answerer, run: StageRun, samples, retrieval, settings):
    """The records (on the rank that writes them), answered in one process (resumable) or by every rank."""
    parallel = run.parallel(settings)
    if parallel.active:
        return answerer.run(samples, retrieval.results, window=args.window, parallel=parallel,
                            progress=not args.no_progress), None
    partial = PartialRecords(run.out.with_name(run.out.name + ".partial.jsonl"), settings)
    done = partial.open(args.restart)
    if done:
        print(f"resuming: {len(done)} answers already in {partial.path}", file=sys.stderr)
    return answerer.run(samples, retrieval.results, window=args.window, partial=partial, done=done,
                        progress=not args.no_progress), partial


def _summary(args, cfg: AnswerConfig, records, meta, dataset) -> dict:
    n = max(1, len(records))
    summary = {"answers": len(records), "prompt_style": cfg.generator.prompt_style, "generator": meta["generator"],
               "entity_hit": round(100.0 * sum(r["entity_hit"] for r in records) / n, 2),
               "section_hit": round(100.0 * sum(r["section_hit"] for r in records) / n, 2), "counts": meta["counts"]}
    if not args.no_eval:
        summary["evaluation"] = evaluate_records(records, dataset, args.bem_model, args.infoseek_val,
                                                 infoseek_qtype=args.infoseek_qtype, device=meta.get("device"))
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
