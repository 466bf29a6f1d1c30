"""Step 3 as a library object: :class:`Answerer` turns samples and their retrieval entries into answer records.

For each sample: the top-1 entity of its retrieval entry, the section chosen by a
:class:`~omgm.generate.sections.SectionSelector` (cross-encoder fused with the entry's step-2 section scores),
the context cut, the generator's answer. One record per sample, with the fields the published script writes
(``data_id, entity_url, question, prediction, gt_answer, top1_entity_url, step3_sec_sim, top1_sec,
step2_top1_entry_sec_sim, q2s_scores`` and, for E-VQA, ``evidence_sec`` and, where the published code sets it,
``gt_sec_sim``) plus omgm's (``question_type, top1_entity_title, entity_hit, top1_section_id,
top1_section_title, section_hit, context_truncated, used_step2_section_scores``). Samples that cannot be
grounded (no retrieval entry, top-1 entity not in the KB or without sections) get an empty prediction and the
reason in ``unanswered``; :func:`record_counts` sums what happened over records.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Callable, Mapping, Sequence

from omgm.config import fraction, positive_int
from omgm.data.kb import KB_HELP, Entity, KnowledgeBase, open_kb, section_document
from omgm.data.samples import ImageDirs, Sample
from omgm.fusion import FUSIONS
from omgm.generate.context import CONTEXT_TOKENS, OFFICIAL_CONTEXT_TOKENIZER, OfficialContextCut, OwnTokenizerCut
from omgm.generate.generators import GeneratorSpec, build_generator
from omgm.generate.generators.base import Generator, GenRequest
from omgm.generate.sections import DEFAULT_CROSS_ENCODER, CrossEncoder, SectionSelector
from omgm.parallel import Parallel, run_units, units_of
from omgm.published import BETA
from omgm.resume import PartialRecords
from omgm.settings import flat, nested, setting


def evidence_section(sample: Sample, kb: KnowledgeBase) -> str | None:
    """The gold evidence section as step 3 reads sections (even one whose title would be skipped), or None."""
    idx = sample.evidence_section_index
    if sample.is_infoseek or idx is None or sample.wikipedia_url not in kb:
        return None
    gold = kb.get(sample.wikipedia_url)
    if not 0 <= idx < len(gold.section_titles):
        return None
    return section_document(gold.title, gold.section_titles[idx], gold.section_texts[idx])


def record_counts(records: Sequence[dict]) -> dict[str, int]:
    """How the records were made: unanswered reasons, section choices with/without step 2, contexts cut."""
    c: Counter = Counter(r["unanswered"] for r in records if r.get("unanswered"))
    answered = [r for r in records if not r.get("unanswered")]
    c["fused with step-2 scores"] = sum(bool(r.get("used_step2_section_scores")) for r in answered)
    c["cross-encoder only (no step-2 scores)"] = len(answered) - c["fused with step-2 scores"]
    c["context cut"] = sum(bool(r.get("context_truncated")) for r in answered)
    return {k: v for k, v in c.items() if v}


class Answerer:
    """``answer(samples, entries) -> records`` (see the module docstring)."""

    def __init__(self, selector: SectionSelector, generator: Generator, cut: Callable[[str], tuple[str, bool]],
                 kb: KnowledgeBase, image_dirs: ImageDirs | None = None, batch_size: int = 1,
                 source: str = "") -> None:
        self.selector, self.generator, self.cut, self.kb, self.source = selector, generator, cut, kb, source
        self.image_dirs, self.batch_size = image_dirs or ImageDirs(), batch_size

    def run(self, samples: Sequence[Sample], entries: Mapping[str, Mapping], *, window: int = 64,
            partial: PartialRecords | None = None, done: dict[str, dict] | None = None,
            parallel: Parallel | None = None, progress: bool = True) -> list[dict] | None:
        """Every sample's record in sample order, in fixed windows of ``window`` samples: spread over the ranks of
        ``parallel`` (records on rank 0, None elsewhere), or in this process, each finished window appended to
        ``partial`` (a window whose answers are all in ``done`` is skipped)."""
        if parallel is not None and parallel.active:
            return answer_in_parallel(self, samples, entries, parallel, window=window, progress=progress)
        return answer_resumably(self, samples, entries, partial, done=dict(done or {}), window=window,
                                progress=progress)

    def _base(self, s: Sample) -> dict:
        return {"data_id": s.sample_id, "entity_url": s.wikipedia_url, "question": s.question, "prediction": "",
                "gt_answer": s.answer, "question_type": s.question_type, "top1_entity_url": None,
                "top1_entity_title": None, "entity_hit": False, "top1_section_id": None, "top1_section_title": None,
                "section_hit": False, "context_truncated": False, "used_step2_section_scores": False,
                "step3_sec_sim": [], "top1_sec": None, "step2_top1_entry_sec_sim": [], "q2s_scores": [],
                "unanswered": None}

    def _top1(self, rec: dict, entry: Mapping | None) -> Entity | None:
        if not entry or not entry.get("retrieved_entities"):
            rec["unanswered"] = "no retrieval result"
            return None
        url = entry["retrieved_entities"][0]["url"]
        rec.update(top1_entity_url=url, entity_hit=url == rec["entity_url"])
        if url not in self.kb:
            rec["unanswered"] = "top-1 entity not in KB"
            return None
        ent = self.kb.get(url)
        rec["top1_entity_title"] = ent.title
        if not ent.sections():
            rec["unanswered"] = "top-1 entity has no sections"
            return None
        return ent

    def answer(self, samples: Sequence[Sample], entries: Mapping[str, Mapping],
               images: Mapping[str, object] | None = None) -> list[dict]:
        """One record per sample, in order; ``entries`` maps sample id -> retrieval entry (step 1 or 2);
        ``images`` maps sample id -> its query image (a path or a PIL image) where it is not found through the
        image folders. Nothing of the answerer changes: calls from several threads do not meet."""
        records = [self._base(s) for s in samples]
        todo = []
        for s, rec in zip(samples, records):
            entry = entries.get(s.sample_id)
            ent = self._top1(rec, entry)
            if ent is not None:
                todo.append((s, rec, ent, (entry.get("sec_sim") or [[]])[0], (entry.get("sec_ids") or [None])[0]))
        names = [f"{self.source + ', ' if self.source else ''}sample {s.sample_id}" for s, *_ in todo]
        choices = self.selector.select_many([(s.question, ent, sec, ids) for s, _, ent, sec, ids in todo], names)
        requests = []
        for (s, rec, ent, sec_sim, _), choice in zip(todo, choices):
            self._fill(s, rec, ent, sec_sim, choice)
            context, rec["context_truncated"] = self.cut(rec["top1_sec"])
            image = ((images or {}).get(s.sample_id) or self.image_dirs.resolve(s)) if self.generator.needs_image \
                else None
            requests.append(GenRequest(s.question, context, s.dataset, image))
        for (_, rec, _, _, _), answer in zip(todo, self.generator.generate(requests, self.batch_size)):
            rec["prediction"] = answer
        return records

    def _fill(self, s: Sample, rec: dict, ent: Entity, sec_sim, choice) -> None:
        section = ent.sections()[choice.index]
        docs = ent.section_documents()
        rec.update(top1_section_id=section.index, top1_section_title=section.title, top1_sec=docs[choice.index],
                   used_step2_section_scores=choice.used_step2, step3_sec_sim=choice.s3,
                   step2_top1_entry_sec_sim=list(sec_sim or []), q2s_scores=choice.q2s)
        if s.is_infoseek:
            return
        rec["evidence_sec"] = evidence_section(s, self.kb)
        rec["section_hit"] = rec["evidence_sec"] is not None and rec["evidence_sec"] == rec["top1_sec"]
        idx = s.evidence_section_index
        if rec["evidence_sec"] in docs and idx is not None and idx < len(docs):
            rec["gt_sec_sim"] = choice.q2s[idx]          # the published code indexes q2s by the raw section id


@dataclass
class AnswerConfig:
    """Every setting of step 3 that can change an answer (its flags are made from these fields, and it is the
    resume fingerprint): the generator (nested), the section choice and the context cut."""

    generator: GeneratorSpec = nested(GeneratorSpec)
    knowledge_base: str | None = setting(help=KB_HELP, flags=("--knowledge_base_path",))
    images: ImageDirs = nested(ImageDirs)
    step2_beta: float = setting(BETA, type=fraction, help="weight of the step-2 section scores (paper and script: "
                                                          "0.2; the official argparse default is 0)")
    fusion: str = setting("weighted", choices=tuple(FUSIONS), help="how the section scores are fused: " + "; ".join(
        f"{k}: {v.help}" for k, v in FUSIONS.items()))
    section_reranker: str = setting(DEFAULT_CROSS_ENCODER, help="the cross-encoder that scores the top entity's "
                                                                "sections (id or folder)")
    section_reranker_dtype: str = setting("fp32", choices=("fp32", "fp16", "bf16"), help="dtype of the cross-encoder")
    context_tokenizer: str | None = setting(help="official style: the LLaVA-1.5 tokenizer that cuts contexts "
                                                 "(default: the original-format LLaVA folder itself, else "
                                                 "liuhaotian/llava-v1.5-7b)")
    context_tokens: int = setting(CONTEXT_TOKENS, type=positive_int, help="the context cut, in tokens of the "
                                                                          "cutting tokenizer (published: 3072)")
    batch_size: int = setting(1, type=positive_int, help="answers per generate call (1: the published computation; "
                                                         "more: faster, same answers up to float rounding)")

    def fingerprint(self) -> dict:
        """The settings as one flat mapping (what a resumed run must share; the KB and the query images are where
        the data lives, not how answers are made: the KB is compared by its content)."""
        where = {"knowledge_base", *(f.name for f in fields(ImageDirs))}
        return {k: v for k, v in flat(self).items() if k not in where}

    def build(self, kb: KnowledgeBase | None = None) -> Answerer:
        """Load the cross-encoder, the generator and the context tokenizer this configuration names, over ``kb``
        (default: the store ``knowledge_base`` names)."""
        kb = kb if kb is not None else open_kb(self.knowledge_base)
        generator = build_generator(self.generator)
        cross = CrossEncoder(self.section_reranker, self.generator.device, dtype=self.section_reranker_dtype)
        return Answerer(SectionSelector(cross, self.step2_beta, FUSIONS[self.fusion]), generator,
                        build_cut(self, generator), kb, self.images, self.batch_size)


def build_cut(cfg: AnswerConfig, generator: Generator):
    """The context cut of the prompt style: the published LLaVA-1.5 rule, or the generator's own tokenizer."""
    if cfg.generator.prompt_style == "omgm":
        return OwnTokenizerCut(generator, cfg.context_tokens)
    source = cfg.context_tokenizer or generator.own_context_tokenizer()
    return OfficialContextCut.load(source or OFFICIAL_CONTEXT_TOKENIZER, cfg.context_tokens)


def answer_resumably(answerer: Answerer, samples: Sequence[Sample], entries: Mapping[str, Mapping],
                     partial: PartialRecords | None, *, done: dict[str, dict], window: int,
                     progress: bool = True) -> list[dict]:
    """Answer in fixed windows of ``window`` samples (the same windows whatever was done before, so a resumed
    run computes exactly what an uninterrupted one does); a window whose answers are all in ``done`` is skipped,
    each finished window is appended to ``partial`` at once. Returns every sample's record, in sample order."""
    from tqdm import tqdm

    units = units_of(len(samples), window)
    todo = [(a, b) for a, b in units if any(s.sample_id not in done for s in samples[a:b])]
    with tqdm(total=len(samples), initial=len(samples) - sum(b - a for a, b in todo), desc="answer", unit=" q",
              disable=not progress) as bar:
        for a, b in todo:
            records = answerer.answer(samples[a:b], entries)
            if partial is not None:
                partial.append(records)
            done.update({r["data_id"]: r for r in records})
            bar.update(b - a)
    return [done[s.sample_id] for s in samples]


def answer_in_parallel(answerer: Answerer, samples: Sequence[Sample], entries: Mapping[str, Mapping],
                       parallel: Parallel, *, window: int, progress: bool = True) -> list[dict] | None:
    """The same windows, spread over the ranks of a torchrun job (see :mod:`omgm.parallel`); every record on
    rank 0, None elsewhere."""
    parts = run_units(parallel, units_of(len(samples), window),
                      lambda a, b: {"records": answerer.answer(samples[a:b], entries)}, progress, desc="answer")
    return None if parts is None else [r for p in parts for r in p["records"]]
