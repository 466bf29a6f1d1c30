"""Step 3, part 1: choose the context section inside the top-1 entity.

Each kept section of the entity (titles containing "external links" or "references" are dropped) is read as
``"# Wiki Article: {title}\\n## Section Title: {section title}\\n{text}"``. A cross-encoder scores
``(question, section)`` pairs, ``q2s = sigmoid(logit)`` (``BAAI/bge-reranker-v2-m3`` by default, in batches of 4,
truncated at 6,000 tokens, as the published code), and the score is fused with step 2's section scores:
``s3 = beta * sec_sim + (1 - beta) * q2s`` (beta = 0.2 as in the paper; the official argparse default is 0).
When the entity has no step-2 scores (no image, or a step-1 file), ``q2s`` alone decides (the official code
crashes there); this is counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from omgm.data.kb import Entity
from omgm.errors import OmgmError
from omgm.fusion import Fusion
from omgm.published import BETA

DEFAULT_CROSS_ENCODER = "BAAI/bge-reranker-v2-m3"


class SectionMismatchError(OmgmError, ValueError):
    """Step-2 section scores that do not line up with the entity's sections in this KB."""


class CrossEncoder:
    """A transformers sequence-classification model scoring (query, passage) pairs, batched."""

    def __init__(self, path: str = DEFAULT_CROSS_ENCODER, device: str | None = None, batch_size: int = 4,
                 max_length: int = 6000, dtype: str | None = "fp32") -> None:
        import torch

        from omgm.devices import resolve_device, torch_dtype
        from omgm.hub import load_pretrained

        self.torch = torch
        self.device = resolve_device(device)
        self.tokenizer = load_pretrained("AutoTokenizer", path, what="section reranker")
        self.model = load_pretrained("AutoModelForSequenceClassification", path, what="section reranker",
                                     dtype=torch_dtype(dtype, self.device, "fp32")).to(self.device).eval()
        self.batch_size, self.max_length, self.name = batch_size, max_length, str(path)

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = [list(p) for p in pairs[i:i + self.batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt",
                                 max_length=self.max_length).to(self.device)
            with self.torch.no_grad():
                logits = self.model(**enc, return_dict=True).logits.view(-1).float()
            out.extend(self.torch.sigmoid(logits).tolist())
        return out


@dataclass
class SectionChoice:
    index: int               # position among the entity's kept sections
    s3: list[float]
    q2s: list[float]
    used_step2: bool         # False: the q2s-only fallback


def fuse_sections(q2s: Sequence[float], sec_sim: Sequence[float] | None, beta: float,
                  fusion: Fusion | None = None) -> SectionChoice:
    """``argmax`` of ``beta * sec_sim + (1 - beta) * q2s`` (``fusion``'s rule; first maximum on ties); ``q2s``
    alone without step-2 scores."""
    if not q2s:
        raise SectionMismatchError("the entity has no section to choose from")
    if sec_sim:
        if len(sec_sim) != len(q2s):
            raise SectionMismatchError(f"{len(sec_sim)} step-2 section scores for {len(q2s)} sections")
        s3 = (fusion or Fusion()).pairs(sec_sim, q2s, beta)
    else:
        s3 = list(q2s)
    best = max(range(len(s3)), key=s3.__getitem__)
    return SectionChoice(best, s3, list(q2s), bool(sec_sim))


class SectionSelector:
    """Picks the context section of an entity: ``select(question, entity, sec_sim, sec_ids, beta)``.

    ``select_many`` scores the sections of many (question, entity) pairs in one pass of the cross-encoder.
    """

    def __init__(self, cross_encoder: CrossEncoder, beta: float = BETA, fusion: Fusion | None = None) -> None:
        self.cross, self.beta, self.fusion = cross_encoder, beta, fusion or Fusion()

    def select(self, question: str, entity: Entity, sec_sim: Sequence[float] | None = None,
               sec_ids: Sequence[int] | None = None) -> SectionChoice:
        return self.select_many([(question, entity, sec_sim, sec_ids)])[0]

    def select_many(self, items: Sequence[tuple[str, Entity, Sequence[float] | None, Sequence[int] | None]],
                    names: Sequence[str] | None = None) -> list[SectionChoice]:
        """``names`` (e.g. sample ids) label the items in error messages."""
        docs = [entity.section_documents() for _, entity, _, _ in items]
        pairs = [(q, d) for (q, _, _, _), ds in zip(items, docs) for d in ds]
        flat = self.cross.scores(pairs) if pairs else []
        out, pos = [], 0
        for n, ((question, entity, sec_sim, sec_ids), ds) in enumerate(zip(items, docs)):
            q2s, pos = flat[pos:pos + len(ds)], pos + len(ds)
            kept = [s.index for s in entity.sections()]
            where = f"{names[n]}: " if names else ""
            if sec_sim and sec_ids is not None and list(sec_ids) != kept:
                raise SectionMismatchError(f"{where}step-2 section ids {list(sec_ids)} do not match the sections of "
                                           f"{entity.url} in this KB ({kept})")
            try:
                out.append(fuse_sections(q2s, sec_sim, self.beta, self.fusion))
            except SectionMismatchError as exc:
                raise SectionMismatchError(f"{where}{exc} of {entity.url}") from None
        return out
