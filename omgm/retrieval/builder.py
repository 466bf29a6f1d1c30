"""Index building as library functions: summaries or KB images -> resumable embedding shards -> FAISS + manifest.

- :func:`build_summary_index`: one vector per KB entity (its summary, embedded by the retriever's text tower),
  row i = the KB's i-th entity (OMGM's step-1 index).
- :func:`build_image_index`: up to ``images_per_entity`` wiki images per entity, one vector each, with the
  entity row of every vector in ``INDEX.ids.npy`` (EchoSight's baseline).

Both write exact ``IndexFlatIP`` by default; ``factory`` takes a FAISS ``index_factory`` string (``HNSW32,Flat``,
``IVF4096,Flat``, ``IVF4096,PQ64``...) built with the inner-product metric and trained on the vectors, and its
recall@k against exact search (database vectors as queries) is measured and recorded in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np

from omgm import __version__
from omgm.config import positive_int
from omgm.data.images import ImageLoadError, load_image
from omgm.data.kb import KB_HELP, KnowledgeBase
from omgm.data.wiki_images import WikiSource
from omgm.errors import OmgmError
from omgm.io import atomic_write
from omgm.retrieval.encoders import Retriever, RetrieverSpec
from omgm.retrieval.index import IndexManifest, apply_search_params, build_flat_ip, ids_path, search, write_index
from omgm.retrieval.shards import encode_sharded
from omgm.settings import nested, setting


@dataclass
class BuildOptions:
    work_dir: Path | None = None            # embedding shards (default: INDEX.shards/)
    shard_size: int = 50_000
    batch_size: int = 256
    factory: str | None = None              # FAISS index_factory string; None: exact IndexFlatIP
    search_params: str | None = None        # its search-time parameters ("nprobe=32"), kept in the manifest
    recall_queries: int = 1000              # database vectors used as queries to measure an approximate index
    recall_k: int = 20
    progress: bool = True
    ctx: object = None                      # omgm.parallel.Context under torchrun
    notes: list[str] = field(default_factory=list)


@dataclass
class IndexConfig:
    """Every setting of ``omgm index build`` (its flags are made from these fields)."""

    knowledge_base: str | None = setting(help=KB_HELP)
    faiss_index: str | None = setting(help="index file to write (its manifest goes beside it)")
    retriever: RetrieverSpec = nested(RetrieverSpec)
    index_kind: str = setting("summary", choices=("summary", "image"), help="summary: one text vector per entity "
                              "(OMGM); image: every KB image (EchoSight baseline)")
    wiki: WikiSource = nested(WikiSource)
    images_per_entity: int = setting(10, type=positive_int, help="image index: images embedded per entity (at most)")
    summarizer: str = setting("lead", choices=("lead", "llm"), help="lead: the entity's lead section; llm: summaries "
                                                                    "written by --summary_model")
    summary_model: str | None = setting(help="causal LM id or folder for --summarizer llm")
    summary_file: str | None = setting(help="summaries JSONL (default: INDEX.summaries.jsonl)")
    summary_batch_size: int = setting(16, type=positive_int, help="entities summarised per generation batch")
    engine: str = setting("transformers", choices=("transformers", "vllm"), help="LLM summaries with vLLM (optional, "
                          "CUDA only; prefix caching); transformers is the reference")
    work_dir: str | None = setting(help="embedding shards (default: INDEX.shards/)")
    shard_size: int = setting(BuildOptions.shard_size, type=positive_int,
                              help="embeddings per shard file (a killed build resumes at the last full shard)")
    batch_size: int = setting(BuildOptions.batch_size, type=positive_int, help="texts per encoder call")
    faiss_params: str | None = setting(help="search-time parameters of the --index_factory index, kept in its "
                                            "manifest (nprobe=32; efSearch=128); recall is measured with them")
    index_factory: str | None = setting(help="FAISS index_factory string for an approximate index (HNSW32,Flat; "
                                             "IVF4096,Flat; IVF4096,PQ64...); its recall@20 against exact search is "
                                             "measured. Default: exact IndexFlatIP")

    def options(self, progress: bool = True, ctx=None) -> BuildOptions:
        return BuildOptions(Path(self.work_dir) if self.work_dir else None, self.shard_size, self.batch_size,
                            self.index_factory, self.faiss_params, progress=progress, ctx=ctx)


def assemble(vectors: np.ndarray, factory: str | None = None, opts: BuildOptions | None = None
             ) -> tuple[faiss.Index, dict]:
    """The index over ``vectors`` and what was measured about it (recall@k of an approximate index vs flat)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not factory or factory in ("Flat", "IndexFlatIP"):
        return build_flat_ip(vectors), {"index_type": "IndexFlatIP"}
    opts = opts or BuildOptions()
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise OmgmError(f"--index_factory {factory!r}: {str(exc).splitlines()[0]}") from None
    if not index.is_trained:
        try:
            index.train(vectors)
        except RuntimeError as exc:
            why = str(exc).split("Error: ")[-1].splitlines()[0]
            raise OmgmError(f"--index_factory {factory!r} cannot be trained on {len(vectors)} vectors ({why}); "
                            f"choose fewer clusters, or Flat for a small KB") from None
    index.add(vectors)
    apply_search_params(index, opts.search_params)
    return index, {"index_type": factory, "search_params": opts.search_params or "",
                   **measure_recall(vectors, index, opts.recall_queries, opts.recall_k)}


def measure_recall(vectors: np.ndarray, index: faiss.Index, n_queries: int = 1000, k: int = 20,
                   *, seed: int = 0) -> dict:
    """recall@k of ``index`` against exact inner-product search, with database vectors as queries."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)]
    _, exact = search(build_flat_ip(vectors), q, k)
    _, approx = search(index, q, k)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return {"recall_vs_flat": {f"R@{k}": round(hits / (len(q) * min(k, len(vectors))), 4)}, "recall_queries": len(q)}


def _load_shards(shards: Sequence[Path]) -> np.ndarray:
    return np.concatenate([np.load(s) for s in shards])


def build_summary_index(kb: KnowledgeBase, retriever: Retriever, texts_from: Callable[[int], object], index_path: Path,
                        *, texts_info: dict, opts: BuildOptions) -> IndexManifest | None:
    """Embed the KB's summaries (``texts_from(row)`` yields them from ``row``) and write the index + manifest."""
    work_dir = opts.work_dir or Path(f"{index_path}.shards")
    info = {"model_id": retriever.model_id, "kb_url_order_hash": kb.url_order_hash(),
            "summaries": texts_info.get("file", "")}
    shards = encode_sharded(texts_from, len(kb), retriever.encode_texts, work_dir, info=info, shard_size=opts.shard_size,
                            batch_size=opts.batch_size, progress=opts.progress, ctx=opts.ctx)
    if shards is None:                      # another rank assembles the index
        return None
    index, measured = assemble(_load_shards(shards), opts.factory, opts)
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal,
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(kb.path),
                             index_type=measured.pop("index_type"), texts={**texts_info, **measured,
                             "truncated_to_context": retriever.truncated_texts}, omgm_version=__version__)
    write_index(index, index_path, manifest)
    return manifest


def build_image_index(kb: KnowledgeBase, retriever: Retriever, wiki, index_path: Path, *, images_per_entity: int,
                      opts: BuildOptions) -> tuple[IndexManifest | None, list[str]]:
    """Embed up to ``images_per_entity`` wiki images per entity; returns the manifest and undecodable files."""
    wiki.max = images_per_entity
    items = [(ent.row, str(p)) for ent in kb.entities() for p in wiki.paths(ent.title)]
    if not items:
        raise OmgmError("no wiki image found on disk for any entity (see omgm data check)")
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

    info = {"model_id": retriever.model_id, "kb_url_order_hash": kb.url_order_hash(), "kind": "image",
            "images": len(items)}
    shards = encode_sharded(lambda start: iter(p for _, p in items[start:]), len(items), encode,
                            opts.work_dir or Path(f"{index_path}.shards"), info=info, shard_size=opts.shard_size,
                            batch_size=opts.batch_size,
                            progress=opts.progress, ctx=opts.ctx)
    if shards is None:                      # another rank assembles the index
        return None, bad
    vecs = _load_shards(shards)
    keep = np.linalg.norm(vecs, axis=1) > 0
    index, measured = assemble(vecs[keep], opts.factory, opts)
    rows = np.array([r for r, _ in items], dtype=np.int64)[keep]
    with atomic_write(ids_path(index_path), suffix=".npy") as tmp:
        np.save(tmp, rows)
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal, kind="image",
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(kb.path),
                             index_type=measured.pop("index_type"),
                             texts={"kind": "image", "images_per_entity": images_per_entity, **measured,
                                    "entities_with_images": int(len(set(rows.tolist()))),
                                    "undecodable_images_skipped": int((~keep).sum())}, omgm_version=__version__)
    write_index(index, index_path, manifest)
    return manifest, bad
