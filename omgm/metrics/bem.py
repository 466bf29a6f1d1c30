"""BEM answer equivalence in PyTorch, with the input the official E-VQA scorer builds.

The official scorer runs the TF-Hub model ``answer_equivalence/bem/1`` on ``[CLS] candidate [SEP] reference
[SEP] question [SEP]`` (BERT uncased WordPiece), segment ids 0 for ``[CLS]`` + candidate + ``[SEP]``, 1 for the
reference + ``[SEP]``, 2 for the question + ``[SEP]``, ids and segment ids right-padded with 0 to 512; the score
is ``softmax(logits)[1]`` and a pair is equivalent when it is ``>= 0.5``. For ``multi_answer`` questions the
reference's ``&&`` becomes ``,`` first.

The input is built as the official scorer builds it, by :class:`omgm.metrics.bert_text.TFTextBertTokenizer`
(TensorFlow-Text's normalisation and splitting over the model's own vocabulary, not the Hugging Face tokenizer's),
and an input longer than 512 ids is refused with :class:`BemInputTooLong`, as the official padding step raises
there; the E-VQA evaluation counts such answers and scores them as not equivalent (docs/faithfulness.md).

``--bem_model`` takes a PyTorch BERT sequence classifier with two labels (a hub id such as the public port
``kortukov/answer-equivalence-bem``, or a folder). BERT-base has two token-type embeddings; when the model has
fewer than three, the question's segment id 2 is sent as 1 (how the port's own users call it) and the metric
label says so; with three or more, the official ids are sent unchanged. The attention mask is ``id != 0``.
"""
from __future__ import annotations

from typing import Any, Sequence

from omgm.errors import OmgmError
from omgm.metrics.bert_text import TFTextBertTokenizer

MAX_LENGTH = 512


class BemModelError(OmgmError, ValueError):
    """A BEM folder that is not a two-label BERT sequence classifier."""


class BemInputTooLong(OmgmError, ValueError):
    """A (candidate, reference, question) whose BEM input exceeds 512 ids: the official scorer raises there."""


def official_tokenizer(tokenizer: Any) -> TFTextBertTokenizer:
    """TF-Text's BERT tokenization over ``tokenizer``'s vocabulary (a Hugging Face tokenizer, or one already)."""
    if isinstance(tokenizer, TFTextBertTokenizer):
        return tokenizer
    cached = getattr(tokenizer, "_omgm_tf_text", None)
    if cached is None:
        cached = TFTextBertTokenizer(tokenizer.get_vocab())
        tokenizer._omgm_tf_text = cached
    return cached


def bem_input(tokenizer: Any, candidate: str, reference: str, question: str, *, type_vocab_size: int = 3,
              max_length: int = MAX_LENGTH) -> tuple[list[int], list[int]]:
    """``(input_ids, segment_ids)`` as the official scorer builds them, right-padded with 0 to ``max_length``.

    ``[CLS] candidate [SEP] reference [SEP] question [SEP]`` tokenized as TF-Text does; segment ids 0/1/2 (the
    question's 2 sent as ``type_vocab_size - 1`` for a model with fewer types). Raises :class:`BemInputTooLong`
    beyond ``max_length`` ids instead of cutting.
    """
    tok = official_tokenizer(tokenizer)
    sep = tok.vocab["[SEP]"]
    ids, segs = [tok.vocab["[CLS]"]], [0]
    for seg, text in enumerate((candidate, reference, question)):
        piece = tok.ids(text) + [sep]
        ids += piece
        segs += [min(seg, type_vocab_size - 1)] * len(piece)
    if len(ids) > max_length:
        raise BemInputTooLong(f"BEM input of {len(ids)} ids exceeds {max_length} (candidate {candidate[:40]!r}...)")
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

    def _row(self, triple: tuple[str, str, str]) -> tuple[list[int], list[int]] | None:
        q, r, c = triple
        try:
            return bem_input(self.tokenizer, c, r, q, type_vocab_size=self.type_vocab_size)
        except BemInputTooLong:
            return None

    def probabilities(self, triples: Sequence[tuple[str, str, str]]) -> list[float | None]:
        """``softmax[1]`` for each ``(question, reference, candidate)``; None where the input exceeds 512 ids."""
        torch = self.torch
        rows = [self._row(t) for t in triples]
        fit = [r for r in rows if r is not None]
        probs: list[float] = []
        for i in range(0, len(fit), self.batch_size):
            ids = torch.tensor([r[0] for r in fit[i:i + self.batch_size]], device=self.device)
            segs = torch.tensor([r[1] for r in fit[i:i + self.batch_size]], device=self.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, token_type_ids=segs, attention_mask=(ids != 0).long()).logits
            probs.extend(torch.softmax(logits.float(), -1)[:, 1].tolist())
        it = iter(probs)
        return [None if r is None else next(it) for r in rows]

    def equivalent(self, triples: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        """``p >= 0.5`` per triple; None where the input exceeds 512 ids (the official scorer would stop)."""
        return [None if p is None else p >= 0.5 for p in self.probabilities(triples)]


def bem_reference(reference: str, question_type: str) -> str:
    """The reference as BEM reads it: multi-answer parts joined with ``,`` instead of ``&&``."""
    return reference.replace("&&", ",") if question_type == "multi_answer" else reference
