"""Step 1: coarse cross-modal entity search (query image -> entity-summary index), with recall@k.

    python -m omgm.step1 --sample_file test.csv --knowledge_base kb.sqlite --faiss_index summary.index \
        --save_result_path step1.json --retriever_vit eva-clip --trust_remote_code --top_ks 1,5,10,20 --retrieval_top_k 20

Writes ``{sample_id: {"retrieved_entities": [{"url", "title"}], "retrieval_similarities": [...]}}`` inside the
omgm header (see :mod:`omgm.data.results`), prints the recall table and saves it as ``*.summary.json``.
"""
from __future__ import annotations

import argparse
import sys

from omgm import __version__
from omgm.config import ConfigError, int_list, parse_with_config, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.results import write_retrieval
from omgm.data.samples import read_samples, samples_fingerprint
from omgm.errors import cli_errors
from omgm.harness import StageRun
from omgm.help import command_parser
from omgm.metrics.evaluate import evaluate
from omgm.metrics.recall import cutoffs_within
from omgm.pipeline.search import EntitySearch, SearchConfig, SearchRun
from omgm.published import TOP_KS
from omgm.retrieval.registry import add_retriever_flags
from omgm.settings import add_flags, from_values


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("step1", __doc__)
    p.add_argument("--sample_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--save_result_path", help="step-1 result JSON to write, or a directory for DIR/result.json")
    p.add_argument("--top_ks", type=int_list, default=list(TOP_KS), help="recall cut-offs, e.g. 1,5,10,20")
    add_retriever_flags(p)
    add_flags(p, SearchConfig)
    p.add_argument("--bare_output", action="store_true", help="write the authors' headerless JSON")
    p.add_argument("--no_progress", action="store_true")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "sample_file", "knowledge_base", "faiss_index", "save_result_path")
    cfg = from_values(SearchConfig, args)
    if max(args.top_ks) > cfg.retrieval_top_k:
        raise ConfigError(f"--top_ks {max(args.top_ks)} exceeds --retrieval_top_k {cfg.retrieval_top_k}")
    with StageRun("step1", args.save_result_path, inputs=[args.sample_file, cfg.knowledge_base, cfg.faiss_index]) as run:
        cfg.retriever.device = run.device(cfg.retriever.device)
        samples, kb = read_samples(args.sample_file), open_kb(cfg.knowledge_base)
        engine = cfg.build(kb, gpu=run.ctx.local_rank if run.ctx.world > 1 else None)
        run.uses(getattr(engine.retriever, "model", None))
        for note in engine.notes if run.ctx.main else []:
            print(note, file=sys.stderr)
        settings = {"samples": samples_fingerprint(samples), "kb": kb.url_order_hash(),
                    "model": engine.retriever.model_id, "index": str(cfg.faiss_index), "k": cfg.retrieval_top_k,
                    "composed": cfg.composed_query, "unit": cfg.search_batch_size, "batch_size": cfg.batch_size}
        found = engine.run(samples, progress=not args.no_progress, parallel=run.parallel(settings))
        if found is None:                  # another rank merges
            return 0
        top_ks, beyond = cutoffs_within(args.top_ks, found.results)
        if beyond:
            print(f"note: the knowledge base has {len(kb)} entities: recall at {beyond} is not reported",
                  file=sys.stderr)
        report = evaluate({s.sample_id: s.wikipedia_url for s in samples}, found.ranking(), top_ks or args.top_ks[:1])
        write_retrieval(run.out, found.results, "step1", _meta(args, cfg, samples, engine, found), bare=args.bare_output)
        run.finish({**report.as_dict(), "skipped": found.skipped, "samples": len(samples),
                    "seconds_per_query": round(run.seconds / max(1, len(found.results)), 4),
                    "result_file": str(run.out)})
    _show(report.table(f"step 1 ({engine.retriever.model_id})"), found, run.out)
    return 0


def _meta(args, cfg: SearchConfig, samples, engine: EntitySearch, found: SearchRun) -> dict:
    return {"omgm_version": __version__, "sample_file": str(args.sample_file),
            "samples_hash": samples_fingerprint(samples), "knowledge_base": str(cfg.knowledge_base),
            "faiss_index": str(cfg.faiss_index), "retriever": engine.retriever.model_id, "index_kind": engine.kind,
            "composed_query": cfg.composed_query, "retrieval_top_k": cfg.retrieval_top_k,
            "index_manifest": engine.manifest is not None, "skipped": found.skipped}


def _show(table: str, found: SearchRun, out) -> None:
    print(table)
    for what, n in found.skipped.items():
        if n:
            print(f"  {what.replace('_', ' ')}: {n} (counted as misses)")
    for msg in found.messages:
        print(f"  e.g. {msg}")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
