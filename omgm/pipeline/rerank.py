"""Step 2b as a library object: :class:`Reranker` scores every section of each step-1 entity and fuses.

``section_scores(samples, entries)`` runs the IT2IT reranker (the heavy part) and returns, per sample, the
per-section step-2 scores and section ids of each entity; ``fuse_entry(...)`` reorders a step-1 entry by
``alpha * s1 + (1 - alpha) * max(section scores)`` (0 for an entity without image or sections) and adds
``sec_sim``/``sec_ids``/``step1_similarities``/``step2_scores``; ``rerank(...)`` does both for several alphas
(the scores are computed once). ``query(image, question, entry)`` reranks one query's entry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image

from omgm.config import float_list, nonnegative_float, positive_float, positive_int
from omgm.data.kb import KB_HELP, KnowledgeBase, open_kb
from omgm.data.samples import ImageDirs, Sample
from omgm.data.wiki_images import WikiImages, WikiSource
from omgm.devices import device_setting, resolve_device
from omgm.errors import OmgmError
from omgm.fusion import FUSIONS, Fusion
from omgm.parallel import Parallel, run_units, units_of
from omgm.published import ALPHA
from omgm.rerank.inputs import image_transform, load_pixels, load_tokenizer
from omgm.rerank.model import IT2ITReranker
from omgm.rerank.scoring import CandidateEncoder, encode_queries, question_scores
from omgm.settings import nested, setting

log = logging.getLogger("omgm.step2")
RANDOM_INIT_SEED = 0                # the reranker's weights when no checkpoint gives them


@dataclass
class RerankedRun:
    """The step-2 results for one alpha, and how often the top-1 entity's best section is the evidence section."""
    alpha: float
    results: dict[str, dict]
    top1_section_hits: int        # top-1 entity is the gold one and its best section is the evidence section

    def section_recall(self, n_samples: int) -> float:
        """Top-1 evidence-section recall, in %."""
        return round(100.0 * self.top1_section_hits / max(1, n_samples), 2)


def fuse_entry(entry: Mapping, sec_sims: list[list[float]], sec_ids: list[list[int]], alpha: float,
               *, fusion: Fusion | None = None) -> dict:
    """A step-1 entry reordered by the fused score, with the step-2 fields (see the module docstring)."""
    order = (fusion or Fusion()).order(entry["retrieval_similarities"], sec_sims, alpha)
    return {"retrieved_entities": [entry["retrieved_entities"][i] for i, _, _ in order],
            "retrieval_similarities": [f for _, f, _ in order],
            "sec_sim": [sec_sims[i] for i, _, _ in order], "sec_ids": [sec_ids[i] for i, _, _ in order],
            "step1_similarities": [entry["retrieval_similarities"][i] for i, _, _ in order],
            "step2_scores": [s2 for _, _, s2 in order]}


def top1_section_hit(entry: Mapping, sample: Sample) -> bool:
    """The fused top-1 entity is the gold one and its best-scored section is the evidence section."""
    sec = entry["sec_sim"][0]
    if entry["retrieved_entities"][0]["url"] != sample.wikipedia_url or not sec:
        return False
    best = entry["sec_ids"][0][max(range(len(sec)), key=sec.__getitem__)]
    return best == sample.evidence_section_index


def grouped(samples: Sequence[Sample], entries: Mapping[str, Mapping]) -> list[Sample]:
    """Samples ordered so that those likely to share candidates are neighbours and land in the same chunk (so
    each chunk, and each rank, encodes them once): by their step-1 top entity, then by their whole candidate list
    (questions about one image), each in order of first appearance. Scores do not depend on the order
    (candidates are encoded entity by entity); results keep the samples' own order."""
    lists = {s.sample_id: tuple(e["url"] for e in entries[s.sample_id]["retrieved_entities"]) for s in samples}
    first: dict = {}
    for i, s in enumerate(samples):
        first.setdefault(lists[s.sample_id][:1], i)
        first.setdefault(lists[s.sample_id], i)
    return sorted(samples, key=lambda s: (first[lists[s.sample_id][:1]], first[lists[s.sample_id]]))


class Reranker:
    """See the module docstring; :class:`RerankConfig` builds one and holds its settings' defaults."""

    def __init__(self, model: IT2ITReranker, tokenizer, kb: KnowledgeBase, wiki: WikiImages, *,
                 image_dirs: ImageDirs | None = None, device: torch.device | str = "cpu", batch_size: int,
                 query_chunk: int, query_norm: str, cache_dir: str | None = None, cache_memory_gb: float,
                 cache_max_gb: float | None = None, pad_to_max: bool = False, fusion: Fusion | None = None,
                 alphas: Sequence[float] = (ALPHA,)) -> None:
        self.model, self.tokenizer, self.kb = model.eval().to(device), tokenizer, kb
        if torch.device(device).type == "cuda":
            model.half_vit()                          # the ViT in fp16, as LAVIS runs it on GPU
        self.device, self.batch_size, self.query_chunk = torch.device(device), batch_size, query_chunk
        self.query_norm, self.pad_to_max, self.image_dirs = query_norm, pad_to_max, image_dirs or ImageDirs()
        self.fusion, self.alphas = fusion or Fusion(), tuple(alphas)
        self.transform = image_transform(model.config.vision.image_size)
        self.candidates = CandidateEncoder(model, tokenizer, kb, wiki, self.transform, self.device, batch_size,
                                           cache_dir, memory_bytes=cache_memory_gb * 1e9, pad_to_max=pad_to_max,
                                           disk_bytes=cache_max_gb * 1e9 if cache_max_gb else None)

    @property
    def counts(self):
        """How candidates were encoded (from memory, from the disk cache, anew; without image...)."""
        return self.candidates.counts

    def _queries(self, pixels: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        return encode_queries(self.model, self.tokenizer, pixels, questions, query_norm=self.query_norm, device=self.device,
                              pad_to_max=self.pad_to_max)

    def _chunk_scores(self, chunk: Sequence[Sample], entries: Mapping[str, Mapping]) -> dict:
        urls = {s.sample_id: [e["url"] for e in entries[s.sample_id]["retrieved_entities"]] for s in chunk}
        ents = self.candidates.encode([u for us in urls.values() for u in us])
        sims, ids = {}, {}
        for i in range(0, len(chunk), self.batch_size):
            part = chunk[i:i + self.batch_size]
            pix = load_pixels([self.image_dirs.resolve(s) for s in part], self.transform)
            for s, q in zip(part, self._queries(pix, [s.question for s in part])):
                sims[s.sample_id] = question_scores(q, [ents[u] for u in urls[s.sample_id]])
                ids[s.sample_id] = [ents[u].section_ids for u in urls[s.sample_id]]
        return {"sims": sims, "ids": ids}

    def section_scores(self, samples: Sequence[Sample], entries: Mapping[str, Mapping], progress: bool = False,
                       parallel: Parallel | None = None) -> tuple[dict, dict] | None:
        """Per sample: the step-2 score of every kept section of each of its entities, and the section ids.

        Samples go in chunks of ``query_chunk`` (the same chunks with one process or many); ``parallel``
        (:class:`omgm.parallel.Parallel`) scores this rank's chunks and returns the merged scores on rank 0, None
        elsewhere.
        """
        from tqdm import tqdm

        todo = grouped([s for s in samples if s.sample_id in entries], entries)
        units = units_of(len(todo), self.query_chunk)

        def work(a: int, b: int) -> dict:
            return self._chunk_scores(todo[a:b], entries)

        if parallel is not None and parallel.active:
            parts = run_units(parallel, units, work, progress, desc="rerank")
        else:
            parts = [work(a, b) for a, b in tqdm(units, desc="rerank", disable=not progress)]
        if parts is None:
            return None
        return ({k: v for p in parts for k, v in p["sims"].items()}, {k: v for p in parts for k, v in p["ids"].items()})

    def rerank(self, samples: Sequence[Sample], entries: Mapping[str, Mapping], alphas: Sequence[float] = (ALPHA,),
               progress: bool = False, *, parallel: Parallel | None = None) -> list[RerankedRun] | None:
        """Score sections once, then fuse with step 1 for each alpha: one :class:`RerankedRun` per alpha (on rank 0
        of a multi-process run; None on the others)."""
        scores = self.section_scores(samples, entries, progress, parallel)
        if scores is None:
            return None
        sims, ids = scores
        runs = []
        for alpha in alphas:
            results, hits = {}, 0
            for s in samples:
                if s.sample_id in sims:
                    results[s.sample_id] = fuse_entry(entries[s.sample_id], sims[s.sample_id], ids[s.sample_id],
                                                      alpha, fusion=self.fusion)
                    hits += top1_section_hit(results[s.sample_id], s)
            runs.append(RerankedRun(alpha, results, hits))
        return runs

    def run(self, samples: Sequence[Sample], entries: Mapping[str, Mapping], progress: bool = False, *,
            parallel: Parallel | None = None) -> list[RerankedRun] | None:
        """:meth:`rerank` with the alphas of the :class:`RerankConfig` that built this reranker."""
        return self.rerank(samples, entries, self.alphas, progress, parallel=parallel)

    def query(self, image: Image.Image, question: str, entry: Mapping, alpha: float = ALPHA) -> dict:
        """Rerank one query's step-1 entry."""
        urls = [e["url"] for e in entry["retrieved_entities"]]
        ents = self.candidates.encode(urls)
        q = self._queries(self.transform(image).unsqueeze(0), [question])[0]
        return fuse_entry(entry, question_scores(q, [ents[u] for u in urls]), [ents[u].section_ids for u in urls], alpha,
                          fusion=self.fusion)


@dataclass
class RerankerSpec:
    """Which reranker: its sizes, tokenizer and weights (step 2a trains it, step 2b runs it)."""

    reranker_model_name: str = setting("blip2", flags=("--reranker-model-name", "--reranker_model_name"),
                                       help="'blip2' (the published sizes) or a JSON file of IT2ITConfig sizes")
    tokenizer: str = setting("bert-base-uncased", help="BERT tokenizer id or folder ([DEC] is added)")
    vit_ckpt: str | None = setting(help="EVA ViT-g weights (eva_vit_g.pth) when a checkpoint lacks the ViT")
    init_ckpt: str | None = setting(help="LAVIS blip2_pretrained.pth (training init)")
    trust_checkpoint: bool = setting(False, switch=True, help="allow pickled objects in checkpoints")
    device: str | None = device_setting()

    def load(self, trained: str | None = None):
        """``(model, load report)``: the trained checkpoint ``trained`` (an omgm checkpoint without the ViT names
        the ViT file it was trained with), else the init / ViT files, else random weights (say so)."""
        from omgm.rerank.convert import build_reranker, read_checkpoint

        vit, init, read = self.vit_ckpt, self.init_ckpt, {}
        if trained and Path(trained).is_dir():
            from omgm.train_state import final_weights

            found = final_weights(Path(trained))
            if found is None:
                raise OmgmError(f"--reranker_ckpt_path {trained}: a folder without any model_N.pth")
            log.info("reranker: the final checkpoint of %s is %s", trained, found.name)
            trained = str(found)
        if trained and not vit:
            head = read[trained] = read_checkpoint(trained, self.trust_checkpoint)
            if head.get("trainable_only"):
                made_with = head.get("init") or {}
                if not isinstance(made_with, dict):
                    raise OmgmError(f"{trained}: its 'init' record is a {type(made_with).__name__}, not an object: "
                                    f"a damaged checkpoint? pass --vit_ckpt and --init_ckpt yourself")
                vit, init = made_with.get("vit_ckpt"), init or made_with.get("init_ckpt")
                if not vit:
                    raise OmgmError(f"{trained} holds only trained parameters: pass --vit_ckpt")
        return build_reranker(self.reranker_model_name, reranker_ckpt=trained, init_ckpt=init, vit_ckpt=vit,
                              trust=self.trust_checkpoint, read=read)


@dataclass
class RerankConfig:
    """Every setting of step 2b (its flags are made from these fields); ``build(kb)`` loads the :class:`Reranker`
    that ``omgm step2 rerank`` and :class:`omgm.pipeline.Pipeline` both use."""

    knowledge_base: str | None = setting(help=KB_HELP, flags=("--knowledge_base_path",))
    reranker_ckpt_path: str | None = setting(help="the trained reranker (official model_*.pth or omgm's, or the "
                                                  "folder step 2a wrote: its highest-step model_N.pth); without "
                                                  "it, RANDOM weights")
    model: RerankerSpec = nested(RerankerSpec)
    wiki: WikiSource = nested(WikiSource)
    images: ImageDirs = nested(ImageDirs)
    step1_alpha: list = setting(factory=lambda: [ALPHA], type=float_list,
                                help="weight(s) of the step-1 score in the fusion, e.g. 0.9 or 0.5,0.9")
    fusion: str = setting("weighted", choices=tuple(FUSIONS), help="; ".join(f"{k}: {v.help}" for k, v in FUSIONS.items()))
    query_norm: str = setting("faithful", choices=("faithful", "per_token"),
                              help="faithful: the official rerank-time normalisation across tokens (alpha 0.9 was "
                                   "tuned with it); per_token: as in training")
    batch_size: int = setting(64, type=positive_int, help="texts/images per model call")
    query_chunk: int = setting(64, type=positive_int, help="queries whose candidates are encoded together (their "
                                                           "tokens are held in memory at once)")
    cache_memory_gb: float = setting(4.0, type=positive_float, help="candidate tokens kept in memory across chunks "
                                                                    "(least recently used are dropped)")
    cache_dir: str | None = setting(help="on-disk cache of candidate tokens (keyed by model hash)")
    cache_max_gb: float = setting(20.0, type=nonnegative_float,
                                  help="bound of --cache_dir, every model's entries together; the least recently "
                                       "used are removed first (0: unbounded)")
    pad_to_max: bool = setting(False, switch=True, help="pad texts to 512 as the official code (same scores)")

    def build(self, kb: KnowledgeBase | None = None, report=None) -> Reranker:
        """The reranker over ``kb`` (default: the store ``knowledge_base`` names); ``report(text)`` gets what was
        loaded from which file."""
        kb = kb if kb is not None else open_kb(self.knowledge_base)
        if self.reranker_ckpt_path:
            model, loaded = self.model.load(self.reranker_ckpt_path)
        else:                      # seeded: the same random weights every run (and one cache key, not one per run)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model, loaded = self.model.load(None)
            log.warning("no reranker_ckpt_path: RANDOM reranker weights (seed %d)", RANDOM_INIT_SEED)
        if report is not None:
            report(loaded.summary() or "no checkpoint loaded")
        return Reranker(model, load_tokenizer(self.model.tokenizer), kb, self.wiki.open(kb), image_dirs=self.images,
                        device=resolve_device(self.model.device), batch_size=self.batch_size,
                        query_chunk=self.query_chunk, query_norm=self.query_norm, cache_dir=self.cache_dir,
                        cache_max_gb=self.cache_max_gb, cache_memory_gb=self.cache_memory_gb,
                        pad_to_max=self.pad_to_max, fusion=FUSIONS[self.fusion], alphas=self.step1_alpha)
