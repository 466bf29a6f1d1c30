"""Step 3, part 1: choose the context section inside the top-1 entity.

Each kept section of the entity is scored by a cross-encoder on (question, section text), ``q2s`` = sigmoid
of its logit (``BAAI/bge-reranker-v2-m3`` by default), and fused with the step-2 section scores:
``s3 = beta * sec_sim + (1 - beta) * q2s`` (beta = 0.2 as in the paper; the official argparse default is 0).
When the entity has no step-2 scores (no image, or a step-1 file), ``q2s`` alone decides (the official code
crashes there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from omgm.errors import OmgmError

DEFAULT_CROSS_ENCODER = "BAAI/bge-reranker-v2-m3"


class SectionMismatchError(OmgmError, ValueError):
    """Step-2 section scores that do not line up with the entity's sections in this KB."""


class CrossEncoder:
    """A transformers sequence-classification model scoring (query, passage) pairs, batched."""

    def __init__(self, path: str = DEFAULT_CROSS_ENCODER, device: str | None = None, batch_size: int = 32,
                 max_length: int = 512, dtype: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        from omgm.devices import resolve_device, torch_dtype

        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch_dtype(dtype, self.device, "fp16")).to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i:i + self.batch_size]
            enc = self.tokenizer([q for q, _ in chunk], [p for _, p in chunk], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with self.torch.no_grad():
                logits = self.model(**enc).logits.view(-1).float()
            out.extend(self.torch.sigmoid(logits).tolist())
        return out


@dataclass
class SectionChoice:
    index: int               # position among the entity's kept sections
    s3: list[float]
    q2s: list[float]
    used_step2: bool         # False: the q2s-only fallback


def fuse_sections(q2s: Sequence[float], sec_sim: Sequence[float] | None, beta: float) -> SectionChoice:
    """``argmax`` of ``beta * sec_sim + (1 - beta) * q2s``; ``q2s`` alone when there are no step-2 scores."""
    if not q2s:
        raise SectionMismatchError("the entity has no section to choose from")
    if sec_sim:
        if len(sec_sim) != len(q2s):
            raise SectionMismatchError(f"{len(sec_sim)} step-2 section scores for {len(q2s)} sections")
        s3 = [beta * a + (1 - beta) * b for a, b in zip(sec_sim, q2s)]
    else:
        s3 = list(q2s)
    best = max(range(len(s3)), key=s3.__getitem__)
    return SectionChoice(best, s3, list(q2s), bool(sec_sim))
