"""Step 1: coarse cross-modal entity search (query image -> entity-summary index), with recall@k.

    python -m omgm.step1 --sample_file test.csv --knowledge_base kb.sqlite --faiss_index summary.index \
        --save_result_path step1.json --retriever_vit eva-clip --top_ks 1,5,10,20 --retrieval_top_k 20

Writes ``{sample_id: {"retrieved_entities": [{"url", "title"}], "retrieval_similarities": [...]}}`` inside the
omgm header (see :mod:`omgm.data.results`), prints the recall table and saves it as ``*.summary.json``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from omgm import __version__
from omgm.config import int_list, parse_with_config, require, setup_logging
from omgm.data.kb import open_kb
from omgm.errors import cli_errors
from omgm.data.results import write_json_atomic, write_retrieval
from omgm.data.samples import ImageDirs, read_samples, resolve_images, samples_fingerprint
from omgm.metrics.recall import recall_at_k
from omgm.retrieval.encoders import RetrieverSpec, build_retriever
from omgm.retrieval.image_batches import encode_image_files
from omgm.retrieval.index import check_index, load_ids, load_index, maybe_to_gpu, search, search_entities

log = logging.getLogger("omgm.step1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omgm.step1", description=__doc__.split("\n\n")[0])
    p.add_argument("--sample_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--knowledge_base", help="KB JSON or SQLite store (row i = FAISS row i)")
    p.add_argument("--faiss_index", help="summary index (ours with manifest, or the authors' bare file)")
    p.add_argument("--save_result_path", help="step-1 result JSON to write")
    p.add_argument("--retriever_vit", default="eva-clip", help="eva-clip | hf-clip | <open_clip model name>")
    p.add_argument("--retriever_path", default=None, help="HF id or folder for eva-clip / hf-clip")
    p.add_argument("--retriever_pretrained", default=None, help="open_clip pretrained tag or checkpoint file")
    p.add_argument("--top_ks", type=int_list, default=[1, 5, 10, 20], help="recall cut-offs, e.g. 1,5,10,20")
    p.add_argument("--retrieval_top_k", type=int, default=20, help="entities kept per query")
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--missing_images", choices=["error", "skip"], default="error",
                   help="a query image not on disk: stop (default) or skip it and count it as a miss")
    p.add_argument("--composed_query", action="store_true",
                   help="embed the query image together with the question (VISTA, MMRet); default: image only")
    p.add_argument("--batch_size", type=int, default=64, help="query images per encoder call")
    p.add_argument("--search_batch_size", type=int, default=1024, help="queries per FAISS call")
    p.add_argument("--num_workers", type=int, default=2, help="image decoding workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, help="fp16 | bf16 | fp32 (default: fp16 on GPU, fp32 on CPU)")
    p.add_argument("--faiss_gpu", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--allow_model_mismatch", action="store_true",
                   help="warn instead of stopping when the index manifest names another model")
    p.add_argument("--bare_output", action="store_true", help="write the authors' headerless JSON")
    p.add_argument("--no_progress", action="store_true")
    return p


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_with_config(build_parser(), argv)
    require(args, "sample_file", "knowledge_base", "faiss_index", "save_result_path")
    if max(args.top_ks) > args.retrieval_top_k:
        raise SystemExit(f"error: --top_ks {max(args.top_ks)} exceeds --retrieval_top_k {args.retrieval_top_k}")
    progress = not args.no_progress
    t0 = time.time()

    samples = read_samples(args.sample_file)
    kb = open_kb(args.knowledge_base)
    paths, missing = resolve_images(samples, ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir))
    if missing and args.missing_images == "error":
        raise SystemExit(f"error: {len(missing)} of {len(samples)} query images are missing (first: {missing[0]}); "
                         f"fix the image folders or pass --missing_images skip")
    unknown_gold = [s for s in samples if s.wikipedia_url not in kb]

    retriever = build_retriever(RetrieverSpec(args.retriever_vit, args.retriever_path, args.retriever_pretrained,
                                              args.device, args.precision))
    index, manifest = load_index(args.faiss_index)
    for note in check_index(index, manifest, index_path=args.faiss_index, kb_len=len(kb),
                            kb_hash=kb.url_order_hash(), model_id=retriever.model_id, dim=retriever.dim,
                            allow_model_mismatch=args.allow_model_mismatch):
        print(note, file=sys.stderr)
    index = maybe_to_gpu(index, args.faiss_gpu)

    if args.composed_query and not retriever.supports_composed:
        raise SystemExit(f"error: {retriever.name} has no composed (image + question) encoding")
    todo = [s for s in samples if s.sample_id in paths]
    emb, ok, errors = encode_image_files(retriever, [paths[s.sample_id] for s in todo], args.batch_size,
                                         args.num_workers, progress,
                                         [s.question for s in todo] if args.composed_query else None)
    if errors and args.missing_images == "error":
        raise SystemExit(f"error: {len(errors)} query images cannot be decoded (first: {next(iter(errors.values()))}); "
                         f"pass --missing_images skip to count them as misses")
    encoded = [s for s, good in zip(todo, ok) if good]
    queries = emb[[i for i, good in enumerate(ok) if good]]
    if manifest is not None and manifest.kind == "image":       # EchoSight: images -> entities
        ids, scores = search_entities(index, load_ids(args.faiss_index), queries, args.retrieval_top_k,
                                      args.search_batch_size)
    else:
        scores, ids = search(index, queries, args.retrieval_top_k, args.search_batch_size, progress)
    t_search = time.time()

    results = {}
    for s, row_scores, row_ids in zip(encoded, scores, ids):
        ents = [dict(zip(("url", "title"), kb.url_title_at(int(i)))) for i in row_ids]
        results[s.sample_id] = {"retrieved_entities": ents, "retrieval_similarities": [float(x) for x in row_scores]}

    report = recall_at_k({k: [e["url"] for e in v["retrieved_entities"]] for k, v in results.items()},
                         {s.sample_id: s.wikipedia_url for s in samples}, args.top_ks)
    skipped = {"missing_query_images": len(missing), "undecodable_query_images": len(errors),
               "gold_url_not_in_kb": len(unknown_gold)}
    meta = {"omgm_version": __version__, "sample_file": str(args.sample_file), "samples_hash": samples_fingerprint(samples),
            "knowledge_base": str(args.knowledge_base),
            "faiss_index": str(args.faiss_index), "retriever": retriever.model_id,
            "index_kind": manifest.kind if manifest else "summary", "composed_query": args.composed_query, "retrieval_top_k": args.retrieval_top_k,
            "index_manifest": manifest is not None, "skipped": skipped}
    out = write_retrieval(args.save_result_path, results, "step1", meta, bare=args.bare_output)
    summary = {"stage": "step1", **report.as_dict(), "skipped": skipped, "samples": len(samples),
               "seconds": round(t_search - t0, 2), "seconds_per_query": round((t_search - t0) / max(1, len(encoded)), 4),
               "result_file": str(out)}
    write_json_atomic(Path(args.save_result_path).with_suffix(".summary.json"), summary, indent=2)

    print(report.table(f"step 1 ({retriever.model_id})"))
    for what, n in skipped.items():
        if n:
            print(f"  {what.replace('_', ' ')}: {n} (counted as misses)")
    for s in unknown_gold[:3]:
        print(f"  e.g. {s.source}, row {s.row} ({s.sample_id}): {s.wikipedia_url!r} is not in {args.knowledge_base}")
    for msg in (missing + list(errors.values()))[:3]:
        print(f"  e.g. {msg}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
