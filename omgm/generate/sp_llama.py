"""The slow (sentencepiece) Llama tokenizer, as original-format LLaVA releases are tokenized.

LLaVA's own loader opens such a folder with ``AutoTokenizer.from_pretrained(path, use_fast=False)``: the
sentencepiece ``LlamaTokenizer`` of transformers 4.3x. transformers 5 has no slow tokenizers any more; it
converts ``tokenizer.model`` into a ``tokenizers`` pipeline that ignores the model's own normaliser, so a
tokenizer.model trained with other settings (whitespace folding, no byte fallback) gives other ids. This class
reproduces the slow tokenizer's behaviour on top of the ``sentencepiece`` library itself:

- ``legacy`` (from ``tokenizer_config.json``; unset means ``True``, as in transformers 4.3x): with ``False`` the
  model's dummy prefix is switched off, a ``"▁"`` is prepended to the text by hand, and a chunk that starts with
  a space is encoded behind the unknown token, whose pieces are then dropped;
- special and added tokens (``<unk>``, ``<s>``, ``</s>``, ``added_tokens_decoder``) are never split;
- ``encode`` adds BOS (``add_bos_token``, default true) and EOS only with ``add_eos_token``;
- ``decode`` drops special ids when asked, strips the first piece's leading ``"▁"``, decodes runs of pieces with
  sentencepiece and inserts special tokens as text (with a space before them in legacy mode).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from omgm.errors import OmgmError
from omgm.generate.decoding import clean_up_tokenization

UNDERLINE = "\u2581"


class TokenizerLoadError(OmgmError, ValueError):
    """A tokenizer folder that cannot be loaded; the message names the folder."""


def _content(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


class SlowLlamaTokenizer:
    """See the module docstring. ``len(tokenizer)`` counts the sentencepiece pieces plus added tokens."""

    def __init__(self, folder: str | Path) -> None:
        import sentencepiece as spm

        self.folder = Path(folder)
        model_file = self.folder / "tokenizer.model"
        if not model_file.is_file():
            raise TokenizerLoadError(f"{self.folder}: no tokenizer.model (a sentencepiece Llama tokenizer is expected)")
        cfg = _read_json(self.folder / "tokenizer_config.json")
        smap = _read_json(self.folder / "special_tokens_map.json")
        legacy = cfg.get("legacy")
        self.legacy = True if legacy is None else bool(legacy)
        self.add_bos = bool(cfg.get("add_bos_token", True))
        self.add_eos = bool(cfg.get("add_eos_token", False))
        self.clean_up_spaces = bool(cfg.get("clean_up_tokenization_spaces", True))   # absent: true, as in 4.x
        tok = {k: _content(cfg.get(k, smap.get(k))) for k in ("unk_token", "bos_token", "eos_token", "pad_token")}
        self.unk_token = tok["unk_token"] or "<unk>"
        self.bos_token = tok["bos_token"] or "<s>"
        self.eos_token = tok["eos_token"] or "</s>"
        self.pad_token = tok["pad_token"]
        self.sp = spm.SentencePieceProcessor()
        try:
            if self.legacy:
                self.sp.Load(str(model_file))
            else:
                self.sp.LoadFromSerializedProto(_without_dummy_prefix(model_file.read_bytes()))
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError variants
            raise TokenizerLoadError(f"{model_file}: not a sentencepiece model ({exc})") from None
        self._added: dict[str, int] = {}
        for idx, entry in (cfg.get("added_tokens_decoder") or {}).items():
            self._added[_content(entry)] = int(idx)
        self._specials = [t for t in (self.unk_token, self.bos_token, self.eos_token, self.pad_token) if t]
        self._specials += [_content(t) for t in cfg.get("additional_special_tokens") or []]
        for t in self._specials:
            self._added.setdefault(t, self._piece_id(t))
        self.unk_length = len(self.sp.encode(self.unk_token, out_type=str))

    # -- ids of special tokens ----------------------------------------------------------------------------
    def _piece_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)

    def token_to_id(self, token: str) -> int:
        return self._added[token] if token in self._added else self._piece_id(token)

    @property
    def bos_token_id(self) -> int:
        return self.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self.token_to_id(self.pad_token) if self.pad_token else None

    @property
    def special_ids(self) -> set[int]:
        return {self.token_to_id(t) for t in self._specials}

    def __len__(self) -> int:
        extra = {i for i in self._added.values() if i >= self.sp.get_piece_size()}
        return self.sp.get_piece_size() + len(extra)

    def add_tokens(self, tokens: Iterable[str]) -> None:
        """Append tokens that are not in the vocabulary yet (as ``tokenizer.add_tokens`` did)."""
        for t in tokens:
            if t not in self._added and self._piece_id(t) == self.sp.unk_id() and t != self.unk_token:
                self._added[t] = len(self)

    # -- encoding -----------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        if self.legacy or not text:
            return self._split_tokenize(text)
        tokens = self._split_tokenize(UNDERLINE + text.replace(UNDERLINE, " "))
        if len(tokens) > 1 and tokens[0] == UNDERLINE and tokens[1] in self._specials:
            tokens = tokens[1:]
        return tokens

    def _split_tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        for chunk, is_added in _split_on(text, sorted(self._added, key=len, reverse=True)):
            if is_added:
                out.append(chunk)
            elif chunk:
                out.extend(self._sp_tokenize(chunk))
        return out

    def _sp_tokenize(self, text: str) -> list[str]:
        tokens = self.sp.encode(text, out_type=str)
        if self.legacy or not text.startswith((UNDERLINE, " ")):
            return tokens
        tokens = self.sp.encode(self.unk_token + text, out_type=str)
        return tokens[self.unk_length:] if len(tokens) >= self.unk_length else tokens

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.token_to_id(t) for t in self.tokenize(text)]
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos else []) + ids + ([self.eos_token_id] if self.add_eos else [])
        return ids

    # -- decoding -----------------------------------------------------------------------------------------

    def _tokens_to_string(self, tokens: list[str]) -> str:
        tokens = list(tokens)
        if tokens[0].startswith(UNDERLINE):
            tokens[0] = tokens[0][1:]
        out, run, prev_special = "", [], False
        for i, token in enumerate(tokens):
            if token in self._specials:
                if not prev_special and i != 0 and self.legacy:
                    out += " "
                out += self.sp.decode(run) + token
                prev_special, run = True, []
            else:
                run.append(token)
                prev_special = False
        return out + self.sp.decode(run)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        skip = self.special_ids if skip_special_tokens else set()
        added = {idx: tok for tok, idx in self._added.items()}
        tokens = [added[i] if i in added else self.sp.id_to_piece(i) for i in map(int, ids) if i not in skip]
        plain_added = {t for t in self._added if t not in self._specials}
        parts, run = [], []
        for t in tokens:
            if t in plain_added:
                if run:
                    text = self._tokens_to_string(run)
                    parts += [text] if text else []
                    run = []
                parts.append(t)
            else:
                run.append(t)
        if run:
            parts.append(self._tokens_to_string(run))
        text = " ".join(parts)
        clean = self.clean_up_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerLoadError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _without_dummy_prefix(proto: bytes) -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto.FromString(proto)
    spec = pb.NormalizerSpec()
    spec.add_dummy_prefix = False
    model.normalizer_spec.MergeFrom(spec)
    return model.SerializeToString()


def _split_on(text: str, words: list[str]) -> list[tuple[str, bool]]:
    """Split ``text`` around every occurrence of ``words`` (earliest match first, then the longest)."""
    out: list[tuple[str, bool]] = []
    start = pos = 0
    while pos < len(text):
        hit = next((w for w in words if w and text.startswith(w, pos)), None)
        if hit is None:
            pos += 1
            continue
        out.append((text[start:pos], False))
        out.append((hit, True))
        pos = start = pos + len(hit)
    out.append((text[start:], False))
    return out
