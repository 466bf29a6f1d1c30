"""Build the step-1 summary index the authors never released: summarise -> encode -> FAISS + manifest.

    python -m omgm.build_index --knowledge_base kb.sqlite --faiss_index out/summary.index \
        --retriever_vit eva-clip --summarizer llm --summary_model meta-llama/Meta-Llama-3-8B-Instruct

Each phase is resumable: summaries are appended to ``--summary_file`` (JSONL, KB order), embeddings are
written as shards under ``--work_dir``; a re-run continues where the last one stopped.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from omgm import __version__
from omgm.config import parse_with_config, require, setup_logging
from omgm.data.kb import open_kb
from omgm.errors import cli_errors
from omgm.retrieval.encoders import RetrieverSpec, build_retriever
from omgm.retrieval.index import IndexManifest, write_index
from omgm.retrieval.shards import encode_sharded
from omgm.retrieval.summaries import LLMSummarizer, SummaryStore, lead_summary, write_summaries

log = logging.getLogger("omgm.build_index")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omgm.build_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--knowledge_base", help="KB JSON or SQLite store")
    p.add_argument("--faiss_index", help="index file to write (its manifest goes beside it)")
    p.add_argument("--retriever_vit", default="eva-clip", help="eva-clip | hf-clip | <open_clip model name>")
    p.add_argument("--retriever_path", default=None, help="HF id or folder for eva-clip / hf-clip")
    p.add_argument("--retriever_pretrained", default=None, help="open_clip pretrained tag or checkpoint file")
    p.add_argument("--summarizer", choices=["lead", "llm"], default="lead")
    p.add_argument("--summary_model", default=None, help="causal LM id or folder for --summarizer llm")
    p.add_argument("--summary_file", default=None, help="summaries JSONL (default: INDEX.summaries.jsonl)")
    p.add_argument("--summary_batch_size", type=int, default=16)
    p.add_argument("--work_dir", default=None, help="embedding shards (default: INDEX.shards/)")
    p.add_argument("--shard_size", type=int, default=50_000)
    p.add_argument("--batch_size", type=int, default=256, help="texts per encoder call")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, help="fp16 | bf16 | fp32 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--no_progress", action="store_true")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "knowledge_base", "faiss_index")
    index_path = Path(args.faiss_index)
    progress = not args.no_progress
    kb = open_kb(args.knowledge_base)
    store = SummaryStore(Path(args.summary_file or f"{index_path}.summaries.jsonl"))

    if args.summarizer == "llm":
        require(args, "summary_model")
        summarize = LLMSummarizer(args.summary_model, device=args.device)
        summarizer_id = summarize.name
    else:
        summarize, summarizer_id = (lambda ents: [lead_summary(e) for e in ents]), "lead"
    write_summaries(kb, store, summarize, args.summary_batch_size, progress)

    retriever = build_retriever(RetrieverSpec(args.retriever_vit, args.retriever_path, args.retriever_pretrained,
                                              args.device, args.precision))
    work_dir = Path(args.work_dir or f"{index_path}.shards")
    info = {"model_id": retriever.model_id, "kb_url_order_hash": kb.url_order_hash(), "summaries": str(store.path)}
    shards = encode_sharded(lambda start: store.iter_texts(kb, start), len(kb), retriever.encode_texts,
                            work_dir, info, args.shard_size, args.batch_size, progress)
    import faiss

    index = faiss.IndexFlatIP(retriever.dim)
    for shard in shards:
        index.add(np.load(shard))
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal,
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(args.knowledge_base),
                             texts={"kind": "summary", "summarizer": summarizer_id, "file": str(store.path),
                                    "truncated_to_context": retriever.truncated_texts},
                             omgm_version=__version__)
    write_index(index, index_path, manifest)
    print(f"wrote {index_path} ({index.ntotal} x {index.d}, IndexFlatIP) and its manifest; "
          f"{retriever.truncated_texts} summaries were cut to the text tower's context this run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
