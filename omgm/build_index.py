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
from omgm.errors import OmgmError, cli_errors
from omgm.retrieval.registry import add_retriever_flags, build_retriever, retriever_spec
from omgm.retrieval.index import IndexManifest, write_index
from omgm.retrieval.shards import encode_sharded
from omgm.retrieval.summaries import LLMSummarizer, SummaryStore, lead_summary, write_summaries

log = logging.getLogger("omgm.build_index")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omgm.build_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--knowledge_base", help="KB JSON or SQLite store")
    p.add_argument("--faiss_index", help="index file to write (its manifest goes beside it)")
    add_retriever_flags(p)
    p.add_argument("--index_kind", choices=["summary", "image"], default="summary",
                   help="summary: one text vector per entity (OMGM); image: every KB image (EchoSight baseline)")
    p.add_argument("--wiki_img_csv_dir", default=None, help="image index: the wiki-image CSVs")
    p.add_argument("--wiki_img_path_prefix", default=None, help="image index: the wiki-image root")
    p.add_argument("--images_per_entity", type=int, default=10)
    p.add_argument("--summarizer", choices=["lead", "llm"], default="lead")
    p.add_argument("--summary_model", default=None, help="causal LM id or folder for --summarizer llm")
    p.add_argument("--summary_file", default=None, help="summaries JSONL (default: INDEX.summaries.jsonl)")
    p.add_argument("--summary_batch_size", type=int, default=16)
    p.add_argument("--work_dir", default=None, help="embedding shards (default: INDEX.shards/)")
    p.add_argument("--shard_size", type=int, default=50_000)
    p.add_argument("--batch_size", type=int, default=256, help="texts per encoder call")
    p.add_argument("--device", default="auto")
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
    if args.index_kind == "image":
        return build_image_index(args, kb, index_path, progress)
    store = SummaryStore(Path(args.summary_file or f"{index_path}.summaries.jsonl"))

    if args.summarizer == "llm":
        require(args, "summary_model")
        summarize = LLMSummarizer(args.summary_model, device=args.device)
        summarizer_id = summarize.name
    else:
        summarize, summarizer_id = (lambda ents: [lead_summary(e) for e in ents]), "lead"
    write_summaries(kb, store, summarize, args.summary_batch_size, progress)

    retriever = build_retriever(retriever_spec(args))
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


def build_image_index(args, kb, index_path: Path, progress: bool) -> int:
    """EchoSight's baseline index: up to ``--images_per_entity`` wiki images per entity, one vector each, with
    the entity row of every vector in ``INDEX.ids.npy``."""
    import faiss

    from omgm.data.images import ImageLoadError, load_image
    from omgm.data.wiki_images import wiki_images_for
    from omgm.retrieval.index import ids_path

    wiki = wiki_images_for(kb, args.wiki_img_path_prefix, args.wiki_img_csv_dir)
    wiki.max = args.images_per_entity
    items = [(ent.row, str(p)) for ent in kb.entities() for p in wiki.paths(ent.title)]
    if not items:
        raise OmgmError("no wiki image found on disk for any entity (see omgm data check)")
    retriever = build_retriever(retriever_spec(args))
    bad: list[str] = []

    def encode(paths):
        images, ok = [], []
        for p in paths:
            try:
                images.append(load_image(p))
                ok.append(True)
            except ImageLoadError as exc:
                bad.append(str(exc))
                ok.append(False)
        out = np.zeros((len(paths), retriever.dim), dtype=np.float32)
        if images:
            out[np.array(ok)] = retriever.encode_images(images)
        return out

    work_dir = Path(args.work_dir or f"{index_path}.shards")
    info = {"model_id": retriever.model_id, "kb_url_order_hash": kb.url_order_hash(), "kind": "image",
            "images": len(items)}
    shards = encode_sharded(lambda start: iter(p for _, p in items[start:]), len(items), encode, work_dir, info,
                            args.shard_size, args.batch_size, progress)
    vecs = np.concatenate([np.load(s) for s in shards])
    keep = np.linalg.norm(vecs, axis=1) > 0
    index = faiss.IndexFlatIP(retriever.dim)
    index.add(np.ascontiguousarray(vecs[keep]))
    rows = np.array([r for r, _ in items], dtype=np.int64)[keep]
    np.save(ids_path(index_path).with_suffix(".tmp.npy"), rows)
    Path(ids_path(index_path).with_suffix(".tmp.npy")).replace(ids_path(index_path))
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal, kind="image",
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(args.knowledge_base),
                             texts={"kind": "image", "images_per_entity": args.images_per_entity,
                                    "entities_with_images": int(len(set(rows.tolist()))),
                                    "undecodable_images_skipped": int((~keep).sum())},
                             omgm_version=__version__)
    write_index(index, index_path, manifest)
    print(f"wrote image index {index_path}: {index.ntotal} images of {len(set(rows.tolist()))} entities; "
          f"{int((~keep).sum())} undecodable images skipped" + (f" (e.g. {bad[0]})" if bad else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
