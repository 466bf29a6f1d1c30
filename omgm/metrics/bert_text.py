"""BERT WordPiece tokenization exactly as TensorFlow-Text's ``BertTokenizer`` does it, in plain Python.

The official E-VQA scorer feeds BEM with ``text.BertTokenizer(vocab, lower_case=True,
preserve_unused_token=True)``. That tokenizer normalises and splits differently from the Hugging Face BERT
tokenizers, and the differences change BEM's input ids (``tests/fixtures/faithful`` holds the recorded cases):

1. lower-casing is ICU's NFKC_Casefold (``ﬁ`` -> ``fi``, full-width letters -> ASCII, ``km²`` -> ``km2``,
   ``½`` -> ``1⁄2``, ``…`` -> ``...``, ``ß`` -> ``ss``, final sigma -> sigma; default-ignorable code points such
   as the soft hyphen and zero-width space vanish), then NFD and every non-spacing mark (``Mn``) removed;
2. control (``Cc``) and format (``Cf``) characters become spaces (Hugging Face deletes them);
3. the text is split on ASCII spaces, and every ASCII symbol, Unicode punctuation (``P*``) and CJK ideograph is
   a token of its own; with ``preserve_unused_token`` a literal ``[unusedN]`` stays one token, while ``[PAD]``,
   ``[SEP]`` and the like are ordinary text (Hugging Face turns them into special ids);
4. WordPiece, greedy longest match first, ``##`` for continuations; a word longer than 100 **bytes** (UTF-8),
   or one with no match, is ``[UNK]``.

Nothing here needs TensorFlow; :func:`nfkc_casefold` uses the standard library's ``unicodedata`` (whose Unicode
version may trail or lead ICU's by a release for newly assigned characters).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Mapping

MAX_BYTES_PER_WORD = 100
SUFFIX = "##"
UNKNOWN = "[UNK]"

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt); NFKC_Casefold maps them to nothing
_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
              (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
              (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
              (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
_IGNORABLE_RE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _IGNORABLE) + "]")
# CJK ideograph blocks that TF-Text splits into single-character tokens
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_UNUSED = re.compile(r"\[unused[0-9]+\]")
_SPACE = frozenset("\t\n\f\r ")          # RE2's \s: ASCII only, no vertical tab


def nfkc_casefold(text: str) -> str:
    """ICU's ``NFKC_Casefold``: NFKC of the full case folding of NFKC, default-ignorables removed."""
    text = _IGNORABLE_RE.sub("", text)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    while True:                               # folding can expose new foldable / composable characters
        again = unicodedata.normalize("NFKC", folded.casefold())
        if again == folded:
            return _IGNORABLE_RE.sub("", folded)
        folded = again


def _is_delimiter_token(ch: str) -> bool:
    o = ord(ch)
    if 0x21 <= o <= 0x2F or 0x3A <= o <= 0x40 or 0x5B <= o <= 0x60 or 0x7B <= o <= 0x7E:
        return True
    if unicodedata.category(ch).startswith("P"):
        return True
    return any(a <= o <= b for a, b in _CJK)


def basic_tokens(text: str, lower_case: bool = True, preserve_unused_token: bool = True) -> list[str]:
    """TF-Text's ``BasicTokenizer``: normalise, turn control/format characters into spaces, split."""
    if lower_case:
        text = nfkc_casefold(text)
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
    tokens, word, i = [], [], 0
    while i < len(text):
        m = _UNUSED.match(text, i) if preserve_unused_token and text[i] == "[" else None
        ch = text[i]
        if m or ch in _SPACE or _is_delimiter_token(ch):
            if word:
                tokens.append("".join(word))
                word = []
            if m:
                tokens.append(m.group())
                i = m.end()
                continue
            if ch not in _SPACE:
                tokens.append(ch)
        else:
            word.append(ch)
        i += 1
    if word:
        tokens.append("".join(word))
    return tokens


def wordpiece(token: str, vocab: Mapping[str, int], max_bytes_per_word: int = MAX_BYTES_PER_WORD) -> list[str]:
    """Greedy longest-match-first pieces of one word; ``[UNK]`` for a word too long (in bytes) or unmatched."""
    if len(token.encode("utf-8")) > max_bytes_per_word:
        return [UNKNOWN]
    pieces, start = [], 0
    while start < len(token):
        end = len(token)
        while end > start:
            piece = token[start:end] if start == 0 else SUFFIX + token[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return [UNKNOWN]
        pieces.append(piece)
        start = end
    return pieces


class TFTextBertTokenizer:
    """``text.BertTokenizer(vocab, lower_case=True, preserve_unused_token=True)`` over a ``{token: id}`` vocab."""

    def __init__(self, vocab: Mapping[str, int], lower_case: bool = True, preserve_unused_token: bool = True):
        if UNKNOWN not in vocab:
            raise ValueError(f"the vocabulary has no {UNKNOWN} token")
        self.vocab, self.lower_case, self.preserve_unused_token = dict(vocab), lower_case, preserve_unused_token

    @classmethod
    def from_vocab_file(cls, path: str, **kwargs) -> "TFTextBertTokenizer":
        """One token per line, the id is the line number (as TF's ``TextFileInitializer`` reads it)."""
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for i, tok in enumerate(lines):
            vocab.setdefault(tok, i)
        return cls(vocab, **kwargs)

    def tokenize(self, text: str) -> list[str]:
        return [p for t in basic_tokens(text, self.lower_case, self.preserve_unused_token)
                for p in wordpiece(t, self.vocab)]

    def ids(self, text: str) -> list[int]:
        return [self.vocab[p] for p in self.tokenize(text)]
