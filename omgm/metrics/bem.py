"""BEM answer equivalence in PyTorch, with the input the official E-VQA scorer builds.

The official scorer runs the TF-Hub model ``answer_equivalence/bem/1`` on ``[CLS] candidate [SEP] reference
[SEP] question [SEP]`` (BERT uncased WordPiece), segment ids 0 for ``[CLS]`` + candidate + ``[SEP]``, 1 for the
reference + ``[SEP]``, 2 for the question + ``[SEP]``, ids and segment ids right-padded with 0 to 512; the score
is ``softmax(logits)[1]`` and a pair is equivalent when it is ``>= 0.5``. For ``multi_answer`` questions the
reference's ``&&`` becomes ``,`` first.

``--bem_model`` takes a PyTorch BERT sequence classifier with two labels (a hub id such as the public port
``kortukov/answer-equivalence-bem``, or a folder). BERT-base has two token-type embeddings; when the model has
fewer than three, the question's segment id 2 is sent as 1 (how the port's own users call it) and the metric
label says so; with three or more, the official ids are sent unchanged. The attention mask is ``id != 0``.
"""
from __future__ import annotations

from typing import Sequence

from omgm.errors import OmgmError

MAX_LENGTH = 512


class BemModelError(OmgmError, ValueError):
    """A BEM folder that is not a two-label BERT sequence classifier."""


def bem_input(tokenizer, candidate: str, reference: str, question: str, type_vocab_size: int = 3,
              max_length: int = MAX_LENGTH) -> tuple[list[int], list[int]]:
    """``(input_ids, segment_ids)``, right-padded with 0 to ``max_length`` (longer inputs are cut there)."""
    ids, segs = [tokenizer.cls_token_id], [0]
    for seg, text in enumerate((candidate, reference, question)):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
        ids += piece
        segs += [min(seg, type_vocab_size - 1)] * len(piece)
    ids, segs = ids[:max_length], segs[:max_length]
    pad = max_length - len(ids)
    return ids + [0] * pad, segs + [0] * pad


class BemScorer:
    """Batched BEM probabilities; ``equivalent(...)`` applies the 0.5 threshold."""

    def __init__(self, path: str, device: str | None = None, batch_size: int = 64) -> None:
        import torch

        from omgm.devices import resolve_device
        from omgm.hub import load_pretrained

        self.torch, self.batch_size = torch, batch_size
        self.device = resolve_device(device)
        self.tokenizer = load_pretrained("AutoTokenizer", path, what="BEM tokenizer (--bem_model)")
        self.model = load_pretrained("AutoModelForSequenceClassification", path,
                                     what="BEM model (--bem_model)").to(self.device).eval()
        cfg = self.model.config
        if cfg.model_type != "bert" or cfg.num_labels != 2:
            raise BemModelError(f"--bem_model {path}: a {cfg.model_type} classifier with {cfg.num_labels} labels; "
                                f"BEM is a BERT sequence classifier with 2 labels (class 1 = equivalent)")
        self.type_vocab_size = cfg.type_vocab_size
        segments = "0/1/2" if self.type_vocab_size >= 3 else "0/1/1 (the model has 2 token types)"
        self.name = f"BEM ({path}; segment ids {segments})"

    def probabilities(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """``softmax[1]`` for each ``(question, reference, candidate)``."""
        torch = self.torch
        out: list[float] = []
        for i in range(0, len(triples), self.batch_size):
            rows = [bem_input(self.tokenizer, c, r, q, self.type_vocab_size) for q, r, c in triples[i:i + self.batch_size]]
            ids = torch.tensor([r[0] for r in rows], device=self.device)
            segs = torch.tensor([r[1] for r in rows], device=self.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, token_type_ids=segs, attention_mask=(ids != 0).long()).logits
            out.extend(torch.softmax(logits.float(), -1)[:, 1].tolist())
        return out

    def equivalent(self, triples: Sequence[tuple[str, str, str]]) -> list[bool]:
        return [p >= 0.5 for p in self.probabilities(triples)]


def bem_reference(reference: str, question_type: str) -> str:
    """The reference as BEM reads it: multi-answer parts joined with ``,`` instead of ``&&``."""
    return reference.replace("&&", ",") if question_type == "multi_answer" else reference
