"""Build the step-1 summary index the authors never released: summarise -> encode -> FAISS + manifest.

    python -m omgm.build_index --knowledge_base kb.sqlite --faiss_index out/summary.index \
        --retriever_vit eva-clip --trust_remote_code --summarizer llm --summary_model meta-llama/Meta-Llama-3-8B-Instruct

Each phase is resumable: summaries are appended to ``--summary_file`` (JSONL, KB order), embeddings are
written as shards under ``--work_dir``; a re-run continues where the last one stopped.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from omgm.config import command_parser, parse_with_config, positive_int, require, setup_logging
from omgm.data.kb import open_kb
from omgm.data.wiki_images import wiki_images_for
from omgm.errors import cli_errors
from omgm.io import OutputLock, check_writable
from omgm.parallel import context, device_for
from omgm.retrieval.builder import BuildOptions, build_image_index, build_summary_index
from omgm.retrieval.registry import add_retriever_flags, build_retriever, retriever_spec
from omgm.retrieval.summaries import LLMSummarizer, SummaryStore, lead_summary, write_summaries


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("index build", __doc__)
    p.add_argument("--knowledge_base", help="KB JSON or SQLite store")
    p.add_argument("--faiss_index", help="index file to write (its manifest goes beside it)")
    add_retriever_flags(p)
    p.add_argument("--index_kind", choices=["summary", "image"], default="summary",
                   help="summary: one text vector per entity (OMGM); image: every KB image (EchoSight baseline)")
    p.add_argument("--wiki_img_csv_dir", default=None, help="image index: the wiki-image CSVs")
    p.add_argument("--wiki_img_path_prefix", default=None, help="image index: the wiki-image root")
    p.add_argument("--images_per_entity", type=positive_int, default=10)
    p.add_argument("--summarizer", choices=["lead", "llm"], default="lead")
    p.add_argument("--summary_model", default=None, help="causal LM id or folder for --summarizer llm")
    p.add_argument("--summary_file", default=None, help="summaries JSONL (default: INDEX.summaries.jsonl)")
    p.add_argument("--summary_batch_size", type=positive_int, default=16)
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers",
                   help="LLM summaries with vLLM (optional, CUDA only; prefix caching); transformers is the reference")
    p.add_argument("--work_dir", default=None, help="embedding shards (default: INDEX.shards/)")
    p.add_argument("--shard_size", type=positive_int, default=50_000)
    p.add_argument("--batch_size", type=positive_int, default=256, help="texts per encoder call")
    p.add_argument("--faiss_params", default=None,
                   help="search-time parameters of the --index_factory index, kept in its manifest (nprobe=32; "
                        "efSearch=128); recall is measured with them")
    p.add_argument("--index_factory", default=None,
                   help="FAISS index_factory string for an approximate index (HNSW32,Flat; IVF4096,Flat; "
                        "IVF4096,PQ64...); its recall@20 against exact search is measured. Default: exact IndexFlatIP")
    p.add_argument("--device", default="auto")
    p.add_argument("--no_progress", action="store_true")
    return p


def _image_index(args, kb, index_path: Path, opts: BuildOptions) -> int:
    wiki = wiki_images_for(kb, args.wiki_img_path_prefix, args.wiki_img_csv_dir)
    manifest, bad = build_image_index(kb, build_retriever(retriever_spec(args)), wiki, index_path,
                                      args.images_per_entity, opts)
    if manifest is not None:
        print(f"wrote image index {index_path}: {manifest.count} images of {manifest.texts['entities_with_images']} "
              f"entities; {len(bad)} undecodable images skipped" + (f" (e.g. {bad[0]})" if bad else ""),
              file=sys.stderr)
    return 0


def _summarizer(args):
    if args.summarizer == "llm":
        require(args, "summary_model")
        summarize = LLMSummarizer(args.summary_model, device=None if args.device == "auto" else args.device,
                                  engine=args.engine)
        return summarize, summarize.name
    return (lambda ents: [lead_summary(e) for e in ents]), "lead"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "knowledge_base", "faiss_index")
    index_path, ctx = Path(args.faiss_index), context()
    args.device = device_for(ctx, args.device)
    check_writable(index_path, inputs=[args.knowledge_base])
    kb = open_kb(args.knowledge_base)
    opts = BuildOptions(Path(args.work_dir) if args.work_dir else None, args.shard_size, args.batch_size,
                        args.index_factory, args.faiss_params, progress=not args.no_progress, ctx=ctx)
    with OutputLock(index_path) if ctx.main else nullcontext():
        if args.index_kind == "image":
            return _image_index(args, kb, index_path, opts)
        store = SummaryStore(Path(args.summary_file or f"{index_path}.summaries.jsonl"))
        summarize, summarizer_id = _summarizer(args)
        write_summaries(kb, store, summarize, args.summary_batch_size, opts.progress, ctx, summarizer_id)
        ctx.barrier()                   # rank 0 has merged the summaries
        retriever = build_retriever(retriever_spec(args))
        manifest = build_summary_index(kb, retriever, lambda start: store.iter_texts(kb, start), index_path,
                                       {"kind": "summary", "summarizer": summarizer_id, "file": str(store.path)}, opts)
    if manifest is None:                # another rank wrote the index
        return 0
    recall = manifest.texts.get("recall_vs_flat")
    print(f"wrote {index_path} ({manifest.count} x {manifest.dim}, {manifest.index_type}) and its manifest; "
          f"{manifest.texts['truncated_to_context']} summaries were cut to the text tower's context this run"
          + (f"; recall vs exact search {recall}" if recall else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
