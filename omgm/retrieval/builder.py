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
from omgm.retrieval.assemble import build_from_shards
from omgm.retrieval.base import Retriever, RetrieverSpec
from omgm.retrieval.index import IndexManifest, ids_path, write_index
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
    keep_shards: bool = False               # keep INDEX.shards/ once the index is written (another factory, later)
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
    keep_shards: bool = setting(False, switch=True, help="keep the embedding shards once the index is written (to "
                                                         "build another --index_factory without encoding again); "
                                                         "they take the vectors' size on disk")
    index_factory: str | None = setting(help="FAISS index_factory string for an approximate index (HNSW32,Flat; "
                                             "IVF4096,Flat; IVF4096,PQ64...); its recall@20 against exact search is "
                                             "measured. Default: exact IndexFlatIP")

    def options(self, progress: bool = True, ctx=None) -> BuildOptions:
        return BuildOptions(work_dir=Path(self.work_dir) if self.work_dir else None, shard_size=self.shard_size,
                            batch_size=self.batch_size, factory=self.index_factory, search_params=self.faiss_params,
                            keep_shards=self.keep_shards, progress=progress, ctx=ctx)

    def build(self, kb: KnowledgeBase | None = None, *, progress: bool = True, ctx=None) -> "IndexBuilder":
        """What ``run()`` builds the index this configuration names with, over ``kb`` (default: the store
        ``knowledge_base`` names); ``ctx``: this process's place in a torchrun job."""
        from omgm.data.kb import open_kb

        return IndexBuilder(self, kb if kb is not None else open_kb(self.knowledge_base), self.options(progress, ctx))


class IndexBuilder:
    """Built by :meth:`IndexConfig.build`; ``run()`` writes the index and its manifest and returns ``(manifest,
    undecodable images)`` (the manifest is None on the ranks that do not write it)."""

    def __init__(self, cfg: IndexConfig, kb: KnowledgeBase, opts: BuildOptions) -> None:
        self.cfg, self.kb, self.opts = cfg, kb, opts

    def run(self) -> tuple[IndexManifest | None, list[str]]:
        from omgm.retrieval.registry import build_retriever

        cfg, kb, opts, path = self.cfg, self.kb, self.opts, Path(self.cfg.faiss_index)
        if cfg.index_kind == "image":
            return build_image_index(kb, build_retriever(cfg.retriever), cfg.wiki.open(kb), path,
                                     images_per_entity=cfg.images_per_entity, opts=opts)
        from omgm.retrieval.summaries import SummaryStore, write_summaries

        store = SummaryStore(Path(cfg.summary_file or f"{path}.summaries.jsonl"))
        summarize, summarizer_id = self._summarizer()
        write_summaries(kb, store, summarize, cfg.summary_batch_size, progress=opts.progress, ctx=opts.ctx,
                        summarizer_id=summarizer_id)
        if opts.ctx is not None:
            opts.ctx.barrier()                   # rank 0 has merged the summaries
        manifest = build_summary_index(kb, build_retriever(cfg.retriever), lambda start: store.iter_texts(kb, start),
                                       path, texts_info={"kind": "summary", "summarizer": summarizer_id,
                                                         "file": str(store.path)}, opts=opts)
        return manifest, []

    def _summarizer(self):
        from omgm.retrieval.summaries import LLMSummarizer, lead_summary

        if self.cfg.summarizer == "llm":
            summarize = LLMSummarizer(self.cfg.summary_model, device=self.cfg.retriever.device, engine=self.cfg.engine)
            return summarize, summarize.name
        return (lambda ents: [lead_summary(e) for e in ents]), "lead"


def _assemble(shards: Sequence[Path], dim: int, opts: BuildOptions, keep=None) -> tuple[faiss.Index, dict]:
    return build_from_shards(shards, dim, opts.factory, search_params=opts.search_params,
                             recall_queries=opts.recall_queries, recall_k=opts.recall_k, keep=keep)


def _done_with(shards: Sequence[Path], opts: BuildOptions) -> None:
    """The shards, once the index is written, are removed unless kept (they are the vectors' size again)."""
    if opts.keep_shards or not shards:
        return
    import shutil

    shutil.rmtree(shards[0].parent, ignore_errors=True)


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
    index, measured = _assemble(shards, retriever.dim, opts)
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal,
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(kb.path),
                             index_type=measured.pop("index_type"), texts={**texts_info, **measured,
                             "truncated_to_context": retriever.truncated_texts}, omgm_version=__version__)
    write_index(index, index_path, manifest)
    _done_with(shards, opts)
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
    decoded = np.concatenate([_decoded(np.load(s, mmap_mode="r")) for s in shards])
    index, measured = _assemble(shards, retriever.dim, opts, keep=_decoded)
    rows = np.array([r for r, _ in items], dtype=np.int64)[decoded]
    with atomic_write(ids_path(index_path), suffix=".npy") as tmp:
        np.save(tmp, rows)
    manifest = IndexManifest(model_id=retriever.model_id, dim=retriever.dim, count=index.ntotal, kind="image",
                             kb_url_order_hash=kb.url_order_hash(), kb_path=str(kb.path),
                             index_type=measured.pop("index_type"),
                             texts={"kind": "image", "images_per_entity": images_per_entity, **measured,
                                    "entities_with_images": int(len(set(rows.tolist()))),
                                    "undecodable_images_skipped": int((~decoded).sum())}, omgm_version=__version__)
    write_index(index, index_path, manifest)
    _done_with(shards, opts)
    return manifest, bad


def _decoded(vectors: np.ndarray) -> np.ndarray:
    """Rows of images that decoded (an undecodable image's row is all zeros)."""
    return np.linalg.norm(vectors, axis=1) > 0
