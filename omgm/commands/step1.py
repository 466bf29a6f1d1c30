"""Step 1: coarse cross-modal entity search (query image -> entity-summary index), with recall@k.

    python -m omgm.step1 --sample_file test.csv --knowledge_base kb.sqlite --faiss_index summary.index \
        --save_result_path step1.json --retriever_vit eva-clip --trust_remote_code --top_ks 1,5,10,20 --retrieval_top_k 20

Writes ``{sample_id: {"retrieved_entities": [{"url", "title"}], "retrieval_similarities": [...]}}`` inside the
omgm header (see :mod:`omgm.data.results`), prints the recall table and saves it as ``*.summary.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

from omgm import __version__
from omgm.config import (
    ConfigError,
    command_parser,
    int_list,
    nonnegative_int,
    parse_with_config,
    positive_int,
    require,
    setup_logging,
)
from omgm.data.kb import open_kb
from omgm.data.results import write_retrieval
from omgm.data.samples import ImageDirs, read_samples, samples_fingerprint
from omgm.errors import cli_errors
from omgm.io import OutputLock, check_writable, output_file, sibling, write_json_atomic
from omgm.metrics.evaluate import evaluate
from omgm.parallel import context, device_for, remove_parts
from omgm.pipeline.search import EntitySearch
from omgm.retrieval.registry import add_retriever_flags, build_retriever, retriever_spec


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("step1", __doc__)
    p.add_argument("--sample_file", help="E-VQA or InfoSeek CSV")
    p.add_argument("--knowledge_base", help="KB JSON or SQLite store (row i = FAISS row i)")
    p.add_argument("--faiss_index", help="summary index (ours with manifest, or the authors' bare file), an image "
                                         "index, or EchoSight's released image-index folder")
    p.add_argument("--save_result_path", help="step-1 result JSON to write, or a directory for DIR/result.json")
    add_retriever_flags(p)
    p.add_argument("--top_ks", type=int_list, default=[1, 5, 10, 20], help="recall cut-offs, e.g. 1,5,10,20")
    p.add_argument("--retrieval_top_k", type=positive_int, default=20, help="entities kept per query")
    p.add_argument("--inat_dir", default=None)
    p.add_argument("--gld_dir", default=None)
    p.add_argument("--infoseek_dir", default=None)
    p.add_argument("--missing_images", choices=["error", "skip"], default="error",
                   help="a query image not on disk: stop (default) or skip it and count it as a miss")
    p.add_argument("--composed_query", action="store_true",
                   help="embed the query image together with the question (VISTA, MMRet); default: image only")
    p.add_argument("--batch_size", type=positive_int, default=64, help="query images per encoder call")
    p.add_argument("--search_batch_size", type=positive_int, default=1024, help="queries per FAISS call")
    p.add_argument("--num_workers", type=nonnegative_int, default=2, help="image decoding workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--faiss_gpu", choices=["auto", "no", "replicate", "shard", "yes"], default="auto",
                   help="with faiss-gpu: replicate the index on every GPU (auto, yes) or shard it over them; under "
                        "torchrun each rank uses its own GPU")
    p.add_argument("--faiss_fp16", action="store_true", help="GPU index in fp16 (half the memory)")
    p.add_argument("--faiss_params", default=None,
                   help="search-time parameters of an approximate index (nprobe=64; efSearch=256); default: those "
                        "it was built with")
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
        raise ConfigError(f"--top_ks {max(args.top_ks)} exceeds --retrieval_top_k {args.retrieval_top_k}")
    t0, out, ctx = time.time(), output_file(args.save_result_path), context()
    args.device = device_for(ctx, args.device)
    check_writable(out, sibling(out, ".summary.json"),
                   inputs=[args.sample_file, args.knowledge_base, args.faiss_index])
    with OutputLock(out) if ctx.main else nullcontext():
        samples = read_samples(args.sample_file)
        kb = open_kb(args.knowledge_base)
        retriever = build_retriever(retriever_spec(args))
        engine = EntitySearch.load(retriever, args.faiss_index, kb, args.allow_model_mismatch, args.faiss_gpu,
                                   args.search_batch_size, args.faiss_fp16, ctx.local_rank if ctx.world > 1 else None,
                                   args.faiss_params)
        for note in engine.notes if ctx.main else []:
            print(note, file=sys.stderr)
        settings = {"samples": samples_fingerprint(samples), "kb": kb.url_order_hash(), "model": retriever.model_id,
                    "index": str(args.faiss_index), "k": args.retrieval_top_k, "composed": args.composed_query,
                    "unit": args.search_batch_size, "batch_size": args.batch_size}
        run = engine.search(samples, args.retrieval_top_k, ImageDirs(args.inat_dir, args.gld_dir, args.infoseek_dir),
                            args.composed_query, args.missing_images == "skip", args.batch_size, args.num_workers,
                            not args.no_progress, (ctx, out.with_name(out.name + ".parts"), settings))
        if run is None:                  # another rank merges
            return 0
        seconds = time.time() - t0
        report = evaluate({s.sample_id: s.wikipedia_url for s in samples}, run.run(), args.top_ks)
        write_retrieval(out, run.results, "step1", _meta(args, samples, engine, run), bare=args.bare_output)
        write_json_atomic(sibling(out, ".summary.json"), {
            "stage": "step1", **report.as_dict(), "skipped": run.skipped, "samples": len(samples),
            "seconds": round(seconds, 2), "seconds_per_query": round(seconds / max(1, len(run.results)), 4),
            "result_file": str(out), "processes": ctx.world}, indent=2)
        remove_parts(out.with_name(out.name + ".parts"))
    _show(report.table(f"step 1 ({retriever.model_id})"), run, out)
    return 0


def _meta(args, samples, engine: EntitySearch, run) -> dict:
    return {"omgm_version": __version__, "sample_file": str(args.sample_file),
            "samples_hash": samples_fingerprint(samples), "knowledge_base": str(args.knowledge_base),
            "faiss_index": str(args.faiss_index), "retriever": engine.retriever.model_id, "index_kind": engine.kind,
            "composed_query": args.composed_query, "retrieval_top_k": args.retrieval_top_k,
            "index_manifest": engine.manifest is not None, "skipped": run.skipped}


def _show(table: str, run, out) -> None:
    print(table)
    for what, n in run.skipped.items():
        if n:
            print(f"  {what.replace('_', ' ')}: {n} (counted as misses)")
    for msg in run.messages:
        print(f"  e.g. {msg}")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
