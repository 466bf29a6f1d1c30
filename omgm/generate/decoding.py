"""Decoding generated ids into answer strings as transformers 4.x did (the library the published code ran on).

transformers 4.37-4.44 applied ``clean_up_tokenization`` (no space before ``. ? ! ,`` and English
contractions) whenever a tokenizer's ``clean_up_tokenization_spaces`` was true, and a tokenizer config without
the key counted as true. transformers 5 ignores the setting for BPE tokenizers, even when it is passed: with
Llama-3 (whose config sets it) the same generated ids decode to ``Do n't ? I 'm`` instead of ``Don't? I'm``,
which exact match scores differently. :func:`restore_v4_decoding` makes a tokenizer's ``decode`` and
``batch_decode`` behave as in 4.x again; every generator applies it to its tokenizer at load time (remote code
such as InternVL's ``chat()`` decodes through the same instance methods). Checked against transformers 4.37's
own decode in ``tests/fixtures/faithful``.
"""
from __future__ import annotations

from typing import Any, Sequence

_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before common punctuation and contractions."""
    for a, b in _CLEANUPS:
        text = text.replace(a, b)
    return text


def wants_cleanup(tokenizer: Any) -> bool:
    """The tokenizer config's ``clean_up_tokenization_spaces``; absent means true, as in transformers 4.x."""
    kwargs = getattr(tokenizer, "init_kwargs", None) or {}
    value = kwargs.get("clean_up_tokenization_spaces")
    return True if value is None else bool(value)


def restore_v4_decoding(tokenizer: Any) -> Any:
    """Patch ``decode`` / ``batch_decode`` on this tokenizer instance so they clean up as transformers 4.x did.

    An explicit ``clean_up_tokenization_spaces=`` argument still wins, as it did in 4.x. Idempotent.
    """
    if getattr(tokenizer, "_omgm_v4_decoding", False):
        return tokenizer
    raw = tokenizer.decode
    default = wants_cleanup(tokenizer)

    def decode(token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               **kwargs) -> str:
        text = raw(token_ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False, **kwargs)
        clean = default if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean else text

    def batch_decode(sequences: Sequence, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [decode(s, skip_special_tokens=skip_special_tokens,
                       clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs) for s in sequences]

    tokenizer.decode, tokenizer.batch_decode = decode, batch_decode
    tokenizer._omgm_v4_decoding = True
    return tokenizer
