"""Step 1 as a library object: :class:`EntitySearch` (retriever + FAISS index + KB) -> ranked entities.

``search(samples, k)`` returns a :class:`SearchRun`: ``results`` in the published step-1 form
(``{sample_id: {"retrieved_entities": [{"url", "title"}], "retrieval_similarities": [...]}}``, raw inner
products, best first) plus what was skipped and why. ``query(image, question, k)`` ranks one query.
A summary index holds one vector per KB row; an image index (EchoSight's baseline) holds several images per
entity, mapped to KB rows, and entities are ranked by their best image (first occurrence).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from omgm.config import nonnegative_int, positive_int
from omgm.data.kb import KB_HELP, KnowledgeBase
from omgm.data.results import ranking
from omgm.data.samples import ImageDirs, Sample, resolve_images
from omgm.errors import OmgmError
from omgm.parallel import Parallel, run_units, units_of
from omgm.retrieval.base import Retriever, RetrieverSpec
from omgm.retrieval.image_batches import encode_image_files
from omgm.retrieval.index import apply_search_params, check_index, load_ids, load_index, maybe_to_gpu, search, search_entities
from omgm.settings import nested, setting


class SearchError(OmgmError, ValueError):
    """Queries that cannot be searched as asked (missing images, no composed encoding)."""


@dataclass
class SearchRun:
    """What a search returns: the results, and what was skipped and why."""
    results: dict[str, dict]
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)      # the first few reasons, for the user

    def ranking(self) -> dict[str, list[str]]:
        """``{sample_id: [url, ...]}``: what :func:`omgm.metrics.evaluate.evaluate` takes."""
        return ranking(self.results)

    def as_dict(self) -> dict:
        """The run as one part file of a multi-process search holds it."""
        return {"results": self.results, "skipped": self.skipped, "messages": self.messages}

    @classmethod
    def combine(cls, parts: Sequence["SearchRun | dict"]) -> "SearchRun":
        """One run from the runs of consecutive units (in order)."""
        out = cls({})
        for p in parts:
            p = p if isinstance(p, SearchRun) else cls(p["results"], p["skipped"], p["messages"])
            out.results.update(p.results)
            for k, v in p.skipped.items():
                out.skipped[k] = out.skipped.get(k, 0) + v
            out.messages += p.messages[: max(0, 6 - len(out.messages))]
        return out


class EntitySearch:
    """See the module docstring. ``notes`` says what was (or could not be) checked about the index."""

    def __init__(self, retriever: Retriever, index, kb: KnowledgeBase, image_rows: np.ndarray | None = None,
                 search_batch_size: int = 1024, notes: Sequence[str] = (), manifest=None) -> None:
        self.retriever, self.index, self.kb, self.image_rows = retriever, index, kb, image_rows
        self.search_batch_size, self.notes, self.manifest = search_batch_size, list(notes), manifest
        self.settings: SearchConfig | None = None          # what build() made it from: run() follows it

    @classmethod
    def load(cls, retriever: Retriever, index_path: str | Path, kb: KnowledgeBase, *, allow_model_mismatch: bool = False,
             faiss_gpu: str = "auto", search_batch_size: int = 1024, faiss_fp16: bool = False,
             gpu: int | None = None, search_params: str | None = None) -> "EntitySearch":
        """Open an index (omgm's, with manifest; the authors' bare summary index; EchoSight's released image-index
        folder) and check it against the KB and model. ``search_params`` (e.g. ``"nprobe=32"``) replaces the
        search-time parameters an approximate index was built with (kept in its manifest)."""
        from omgm.retrieval import echosight

        released = echosight.locate(index_path)
        if released is not None:
            index, _ = load_index(released[0])
            rows = echosight.read_ids(released[1], len(kb))
            notes = echosight.check(index, rows, released[0], released[1], dim=retriever.dim, model_id=retriever.model_id)
            apply_search_params(index, search_params)
            return cls(retriever, maybe_to_gpu(index, faiss_gpu, faiss_fp16, gpu), kb, rows, search_batch_size, notes)
        index, manifest = load_index(index_path)
        notes = check_index(index, manifest, index_path=index_path, kb_len=len(kb), kb_hash=kb.url_order_hash(),
                            model_id=retriever.model_id, dim=retriever.dim, allow_model_mismatch=allow_model_mismatch)
        params = search_params if search_params is not None else (manifest.texts.get("search_params") if manifest
                                                                  else None)
        apply_search_params(index, params)
        if params:
            notes.append(f"FAISS search parameters: {params}")
        rows = load_ids(index_path, len(kb)) if manifest is not None and manifest.kind == "image" else None
        return cls(retriever, maybe_to_gpu(index, faiss_gpu, faiss_fp16, gpu), kb, rows, search_batch_size, notes, manifest)

    def run(self, samples: Sequence[Sample], progress: bool = False,
            parallel: Parallel | None = None) -> SearchRun | None:
        """Rank ``samples`` as the :class:`SearchConfig` that built this engine says (see :meth:`search`)."""
        cfg = self.settings or SearchConfig()
        return self.search(samples, k=cfg.retrieval_top_k, image_dirs=cfg.images, composed=cfg.composed_query,
                           skip_missing=cfg.missing_images == "skip", batch_size=cfg.batch_size,
                           num_workers=cfg.num_workers, progress=progress, parallel=parallel)

    @property
    def kind(self) -> str:
        """``summary`` (one vector per entity) or ``image`` (several per entity)."""
        return "summary" if self.image_rows is None else "image"

    def rank(self, vectors: np.ndarray, k: int, progress: bool = False) -> tuple[list[list[int]], list[list[float]]]:
        """KB rows and raw inner products of the top ``k`` entities for each query vector."""
        if self.image_rows is not None:
            return search_entities(self.index, self.image_rows, vectors, k, batch_size=self.search_batch_size)
        scores, ids = search(self.index, vectors, k, self.search_batch_size, progress=progress)
        keep = [[j for j, i in enumerate(r) if i >= 0] for r in ids]     # FAISS pads with -1 when it finds fewer
        return ([[int(r[j]) for j in js] for r, js in zip(ids, keep)],
                [[float(s[j]) for j in js] for s, js in zip(scores, keep)])

    def _entries(self, rows: list[list[int]], sims: list[list[float]]) -> list[dict]:
        return [{"retrieved_entities": [dict(zip(("url", "title"), self.kb.url_title_at(i))) for i in r],
                 "retrieval_similarities": s} for r, s in zip(rows, sims)]

    def search(self, samples: Sequence[Sample], k: int, *, batch_size: int, num_workers: int,
               image_dirs: ImageDirs | None = None, composed: bool = False, skip_missing: bool = False,
               progress: bool = False, parallel: Parallel | None = None) -> SearchRun | None:
        """Embed each sample's query image (with its question when ``composed``) and rank entities.

        The samples are processed in units of ``search_batch_size`` (the same units with one process or many);
        ``parallel`` (:class:`omgm.parallel.Parallel`) runs this rank's units (see :mod:`omgm.parallel`) and
        returns the merged run on rank 0, None elsewhere. :class:`SearchConfig` holds the settings' defaults.
        """
        if composed and not self.retriever.supports_composed:
            raise SearchError(f"{self.retriever.name} has no composed (image + question) encoding")
        dirs = image_dirs or ImageDirs()
        paths, missing = resolve_images(samples, dirs)
        if missing and not skip_missing:
            raise SearchError(f"{len(missing)} of {len(samples)} query images are missing (first: {missing[0]}); fix "
                              f"the image folders or pass --missing_images skip")
        units = units_of(len(samples), self.search_batch_size)

        def work(a: int, b: int) -> dict:
            return self._search_unit(samples[a:b], paths, k, composed, skip_missing, batch_size, num_workers).as_dict()

        if parallel is not None and parallel.active:
            parts = run_units(parallel, units, work, progress, desc="search")
            return None if parts is None else SearchRun.combine(parts)
        from tqdm import tqdm

        return SearchRun.combine([work(a, b) for a, b in tqdm(units, desc="search", disable=not progress)])

    def _search_unit(self, samples: Sequence[Sample], paths: dict, k: int, composed: bool, skip_missing: bool,
                     batch_size: int, num_workers: int) -> SearchRun:
        todo = [s for s in samples if s.sample_id in paths]
        emb, ok, errors = encode_image_files(self.retriever, [paths[s.sample_id] for s in todo], batch_size,
                                             num_workers, progress=False, texts=[s.question for s in todo] if composed else None)
        if errors and not skip_missing:
            raise SearchError(f"{len(errors)} query images cannot be decoded (first: {next(iter(errors.values()))}); "
                              f"pass --missing_images skip to count them as misses")
        encoded = [s for s, good in zip(todo, ok) if good]
        rows, sims = self.rank(emb[[i for i, good in enumerate(ok) if good]], k) if encoded else ([], [])
        results = {s.sample_id: e for s, e in zip(encoded, self._entries(rows, sims))}
        unknown = [s for s in samples if s.wikipedia_url not in self.kb]
        missing = [s for s in samples if s.sample_id not in paths]
        skipped = {"missing_query_images": len(missing), "undecodable_query_images": len(errors),
                   "gold_url_not_in_kb": len(unknown)}
        messages = ([f"{s.source}, row {s.row} ({s.sample_id}): query image {s.image_id!r} not found" for s in missing]
                    + list(errors.values()))[:3] + [
            f"{s.source}, row {s.row} ({s.sample_id}): {s.wikipedia_url!r} is not in the knowledge base"
            for s in unknown[:3]]
        return SearchRun(results, skipped, messages)

    def query(self, image: Image.Image, question: str | None = None, k: int = 20) -> dict:
        """One query: its image (and question, for a composed query). Returns a step-1 entry."""
        r = self.retriever
        vec = r.encode_composed([image], [question]) if question is not None else r.encode_images([image])
        rows, sims = self.rank(vec, k)
        return self._entries(rows, sims)[0]


@dataclass
class SearchConfig:
    """Every setting of step 1 (its flags are made from these fields): ``build()`` loads the search engine, whose
    ``run(samples)`` ranks them as these settings say."""

    knowledge_base: str | None = setting(help=KB_HELP)
    faiss_index: str | None = setting(help="the summary index (ours with its manifest, or the authors' bare file), an "
                                           "image index, or EchoSight's released image-index folder")
    retriever: RetrieverSpec = nested(RetrieverSpec)
    images: ImageDirs = nested(ImageDirs)
    retrieval_top_k: int = setting(20, type=positive_int, help="entities kept per query")
    composed_query: bool = setting(False, switch=True, help="embed the query image together with the question "
                                                            "(VISTA, MMRet); default: image only")
    missing_images: str = setting("error", choices=("error", "skip"), help="a query image not on disk: stop, or skip "
                                                                           "it and count it as a miss")
    batch_size: int = setting(64, type=positive_int, help="query images per encoder call")
    search_batch_size: int = setting(1024, type=positive_int, help="queries per FAISS call")
    num_workers: int = setting(2, type=nonnegative_int, help="image decoding workers")
    faiss_gpu: str = setting("auto", choices=("auto", "no", "replicate", "shard", "yes"),
                             help="with faiss-gpu: replicate the index on every GPU (auto, yes) or shard it over them; "
                                  "under torchrun each rank uses its own GPU")
    faiss_fp16: bool = setting(False, switch=True, help="GPU index in fp16 (half the memory)")
    faiss_params: str | None = setting(help="search-time parameters of an approximate index (nprobe=64; "
                                            "efSearch=256); default: those it was built with")
    allow_model_mismatch: bool = setting(False, switch=True,
                                         help="warn instead of stopping when the index manifest names another model")

    def build(self, kb: KnowledgeBase | None = None, gpu: int | None = None) -> EntitySearch:
        """Load the retriever, the index and (unless given) the KB that this configuration names; ``gpu``: this
        rank's GPU for a GPU index under torchrun."""
        from omgm.data.kb import open_kb
        from omgm.retrieval.registry import build_retriever

        if not self.knowledge_base or not self.faiss_index:
            raise SearchError("a search needs knowledge_base and faiss_index")
        engine = EntitySearch.load(build_retriever(self.retriever), self.faiss_index,
                                   kb or open_kb(self.knowledge_base), allow_model_mismatch=self.allow_model_mismatch,
                                   faiss_gpu=self.faiss_gpu, search_batch_size=self.search_batch_size,
                                   faiss_fp16=self.faiss_fp16, gpu=gpu, search_params=self.faiss_params)
        engine.settings = self
        return engine
