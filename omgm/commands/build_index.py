"""Build the step-1 summary index the authors never released: summarise -> encode -> FAISS + manifest.

    python -m omgm index build --knowledge_base kb.sqlite --faiss_index out/summary.index \
        --retriever_vit eva-clip --trust_remote_code --summarizer llm --summary_model meta-llama/Meta-Llama-3-8B-Instruct

Each phase is resumable: summaries are appended to ``--summary_file`` (JSONL, KB order), embeddings are
written as shards under ``--work_dir``; a re-run continues where the last one stopped.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from omgm.config import parse_with_config, require, setup_logging
from omgm.errors import cli_errors
from omgm.help import command_parser
from omgm.io import OutputLock, check_writable
from omgm.parallel import context, device_for
from omgm.retrieval.builder import IndexConfig
from omgm.retrieval.registry import add_retriever_flags
from omgm.settings import add_flags, from_values


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("index build", __doc__)
    add_retriever_flags(p)
    add_flags(p, IndexConfig)
    p.add_argument("--no_progress", action="store_true")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "knowledge_base", "faiss_index", *(("summary_model",) if args.summarizer == "llm" else ()))
    cfg, ctx = from_values(IndexConfig, args), context()
    index_path, cfg.retriever.device = Path(cfg.faiss_index), device_for(ctx, cfg.retriever.device)
    check_writable(index_path, inputs=[cfg.knowledge_base])
    builder = cfg.build(progress=not args.no_progress, ctx=ctx)
    with OutputLock(index_path) if ctx.main else nullcontext():
        manifest, bad = builder.run()
    if manifest is None:                # another rank wrote the index
        return 0
    if cfg.index_kind == "image":
        print(f"wrote image index {index_path}: {manifest.count} images of {manifest.texts['entities_with_images']} "
              f"entities; {len(bad)} undecodable images skipped" + (f" (e.g. {bad[0]})" if bad else ""),
              file=sys.stderr)
        return 0
    recall = manifest.texts.get("recall_vs_flat")
    print(f"wrote {index_path} ({manifest.count} x {manifest.dim}, {manifest.index_type}) and its manifest; "
          f"{manifest.texts['truncated_to_context']} summaries were cut to the text tower's context this run"
          + (f"; recall vs exact search {recall}" if recall else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
