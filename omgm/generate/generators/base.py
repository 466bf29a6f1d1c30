"""What every step-3 generator shares: the request, the interface, greedy generation from token ids."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from omgm.errors import OmgmError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


class GeneratorError(OmgmError, ValueError):
    """An unknown generator name, an unusable model folder, or a request the generator cannot answer."""


@dataclass
class GenRequest:
    """One question to answer: the context section (already cut), the dataset's prompts, the query image."""

    question: str
    context: str
    dataset: str = "evqa"            # evqa | infoseek
    image: Path | Image.Image | None = None        # a file, or an image in memory (omgm ask, the Python API)


class Generator:
    """Interface. ``render`` is the exact text the model reads; ``generate`` answers requests in order.

    ``batch_size`` > 1 batches requests of similar length with left padding: faster, and the same answers up
    to floating-point rounding; 1 (the default) runs the computation the published code runs.
    """

    family = "generator"
    name = "generator"
    needs_image = False
    style = "official"
    max_new_tokens = 128
    tokenizer = None                 # what the omgm style cuts contexts with

    def render(self, req: GenRequest) -> str:
        raise NotImplementedError

    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        raise NotImplementedError

    def own_context_tokenizer(self) -> str | None:
        """The tokenizer folder the official context cut should count with, when the model carries its own (an
        original-format LLaVA fine-tune keeps LLaVA-1.5's); None: the published LLaVA-1.5 tokenizer."""
        return None

    def prompt_length(self, req: GenRequest) -> int:
        return len(self.render(req))

    def generate(self, reqs: Sequence[GenRequest], batch_size: int = 1) -> list[str]:
        if self.needs_image and any(r.image is None for r in reqs):
            raise GeneratorError(f"{self.name} reads the query image: every request needs one")
        if batch_size <= 1:
            return [self._generate([r])[0] for r in reqs]
        order = sorted(range(len(reqs)), key=lambda i: self.prompt_length(reqs[i]))
        answers: list[str] = [""] * len(reqs)
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            for j, a in zip(chunk, self._generate([reqs[k] for k in chunk])):
                answers[j] = a
        return answers

    def cut_tokens(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """The omgm-style context cut: ``max_tokens`` tokens of this generator's own tokenizer."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, False
        return self.tokenizer.decode(ids[:max_tokens]), True


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask for a batch of token-id lists."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def greedy_ids(model, rows: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
               *, eos_ids: Sequence[int] | int | None = None, **kwargs) -> list[list[int]]:
    """Greedy continuation of each row of token ids; returns the new ids of each row (pads removed)."""
    ids, mask = left_pad(rows, pad_id, model.device)
    extra = {} if eos_ids is None else {"eos_token_id": eos_ids}
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=pad_id, **extra, **kwargs)
    new = out[:, ids.shape[1]:].tolist()
    return [_until_finished(r, eos_ids, pad_id) for r in new]


def greedy_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy, left-padded continuations of rendered prompts (no special tokens added); new text only, stripped."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = greedy_ids(model, rows, pad, max_new_tokens, eos_ids=tokenizer.eos_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def _until_finished(row: list[int], eos_ids, pad_id: int) -> list[int]:
    """Drop what generate appends after a row has finished (pad ids after its end-of-sequence id)."""
    ends = {eos_ids} if isinstance(eos_ids, int) else set(eos_ids or [])
    for i, t in enumerate(row):
        if t in ends:
            return row[:i + 1]
    return row


def attn_implementation(name: str | None) -> str:
    if name == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            log.warning("flash-attn is not installed: using sdpa")
            return "sdpa"
    return name or "sdpa"
