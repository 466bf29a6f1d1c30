"""The whole pipeline for one question, with every model loaded once: ``Pipeline.from_config(...).ask(image, q)``.

Configuration is the flat mapping every stage reads (YAML files, ``OMGM_*`` variables, keyword overrides), with
the stages' own setting names, those of :class:`~omgm.pipeline.search.SearchConfig`,
:class:`~omgm.pipeline.rerank.RerankConfig` and :class:`~omgm.pipeline.answer.AnswerConfig` (the configs the
stage commands build too): ``knowledge_base``, ``faiss_index``, ``retriever_vit``..., ``reranker_ckpt_path``,
``reranker_model_name``, ``tokenizer``, ``wiki_img_csv_dir``, ``wiki_img_path_prefix``, ``step1_alpha``...,
``answer_generator``, ``llm_checkpoint``, ``prompt_style``, ``step2_beta``, ``section_reranker``... A key that
several stages read (``device``, ``batch_size``) applies to each. Without a ``reranker_ckpt_path`` step 2 is
skipped (step 1's ranking is kept; the cross-encoder alone picks the section).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from omgm.data.images import load_image
from omgm.data.samples import Sample
from omgm.errors import OmgmError
from omgm.pipeline.answer import AnswerConfig, Answerer
from omgm.pipeline.rerank import RerankConfig, Reranker
from omgm.pipeline.search import EntitySearch, SearchConfig
from omgm.settings import check_values, from_values, names

STAGES = (SearchConfig, RerankConfig, AnswerConfig)


def known_keys() -> set[str]:
    """Every setting a pipeline reads (step 1, the reranker, step 3): the keys ``--set`` and ``OMGM_*`` may name."""
    return names(*STAGES)


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Unknown keys and out-of-range values are refused, as the stages' flags refuse them; returns the values
    converted as the flags convert them."""
    return check_values(overrides, *STAGES)


def _values(config_files: tuple[str, ...], overrides: dict[str, Any]) -> dict:
    import os

    from omgm.config import config_values, interpolate

    overrides = check_overrides(overrides)
    files = list(config_files) or [f for f in os.environ.get("OMGM_CONFIG", "").split(":") if f]
    return interpolate({**config_values(files, sorted(known_keys())), **overrides})


class Pipeline:
    """Step 1 -> step 2 (optional) -> step 3 for single questions (see the module docstring)."""

    def __init__(self, search: EntitySearch, answerer: Answerer, reranker: Reranker | None = None, *, k: int,
                 alpha: float, composed: bool = False) -> None:
        if composed and not search.retriever.supports_composed:
            raise OmgmError(f"composed_query: {search.retriever.name} has no composed (image + question) encoding")
        self.search, self.answerer, self.reranker, self.k, self.alpha = search, answerer, reranker, k, alpha
        self.composed = composed                       # step 1 embeds the image with the question, as step1 does
        # each stage keeps caches (the reranker's candidate tokens, the generator's shared prefixes): one caller
        # at a time per stage, while threads asking together overlap across stages
        self._locks = {"search": threading.Lock(), "rerank": threading.Lock(), "answer": threading.Lock()}

    @classmethod
    def from_config(cls, *config_files: str, **overrides: Any) -> "Pipeline":
        """The pipeline the YAML files (or ``$OMGM_CONFIG``), ``OMGM_*`` variables and ``overrides`` describe,
        built from the same stage configs as ``omgm step1`` / ``step2 rerank`` / ``step3``."""
        values = _values(config_files, overrides)
        search_cfg, rerank_cfg, answer_cfg = (from_values(stage, values) for stage in STAGES)
        search = search_cfg.build()
        reranker = rerank_cfg.build(search.kb) if rerank_cfg.reranker_ckpt_path else None
        return cls(search, answer_cfg.build(search.kb), reranker, k=search_cfg.retrieval_top_k,
                   alpha=rerank_cfg.step1_alpha[0], composed=search_cfg.composed_query)

    def ask(self, image: str | Path | Image.Image, question: str, dataset: str = "evqa", top: int = 5) -> dict:
        """Rank entities for the question's image (with the question, where the retriever is composed), pick a
        section of the best, answer. Returns a plain dict. An image in memory is used as it is (no file is written);
        calls from several threads are safe and give what the same calls one after another give."""
        if not str(question).strip():
            raise OmgmError("the question is empty: nothing to answer")
        t0 = time.time()
        in_memory = isinstance(image, Image.Image)
        img = load_image(image if in_memory else Path(image))      # an RGB copy: the caller's image is untouched
        with self._locks["search"]:
            entry = self.search.query(img, question if self.composed else None, self.k)
        t1 = time.time()
        if self.reranker is not None:
            with self._locks["rerank"]:
                entry = self.reranker.query(img, question, entry, self.alpha)
        t2 = time.time()
        sample = Sample("ask", question, "", "", "infoseek" if dataset == "infoseek" else "ask", "automatic"
                        if dataset != "infoseek" else "infoseek", "")
        with self._locks["answer"]:
            rec = self.answerer.answer([sample], {"ask": entry}, images={"ask": img})[0]
        ents = [{"rank": i + 1, "url": e["url"], "title": e.get("title", ""),
                 "score": entry["retrieval_similarities"][i],
                 "step1": (entry.get("step1_similarities") or entry["retrieval_similarities"])[i],
                 "step2": entry["step2_scores"][i] if "step2_scores" in entry else None}
                for i, e in enumerate(entry["retrieved_entities"][:top])]
        return {"question": question, "image": None if in_memory else str(image), "entities": ents,
                "reranked": self.reranker is not None,
                "section": {"entity": rec["top1_entity_title"], "title": rec["top1_section_title"],
                            "text": rec["top1_sec"], "q2s": rec["q2s_scores"], "s3": rec["step3_sec_sim"]},
                "answer": rec["prediction"], "unanswered": rec["unanswered"],
                "seconds": {"search": round(t1 - t0, 3), "rerank": round(t2 - t1, 3),
                            "answer": round(time.time() - t2, 3)}}
