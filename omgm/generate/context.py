"""How long a context section may be, and how it is cut.

- ``official``: the published rule, the same for every generator: the section is tokenized with the LLaVA-1.5
  tokenizer (``liuhaotian/llava-v1.5-7b``, BOS included); when that gives more than 3,072 ids, the first 3,072
  are decoded (special tokens kept, tokenization spaces cleaned up) and the first four characters, the
  ``"<s> "`` of the BOS, are dropped. Shorter sections pass unchanged.
- ``omgm``: the generator's own tokenizer, 3,072 tokens of the section itself.

transformers 5 no longer cleans up tokenization spaces for BPE tokenizers, so the clean-up the published code
got from transformers 4 (no space before ``. ? ! ,`` and common contractions) is applied here.
"""
from __future__ import annotations

from typing import Callable

from omgm.generate.decoding import clean_up_tokenization

OFFICIAL_CONTEXT_TOKENIZER = "liuhaotian/llava-v1.5-7b"
CONTEXT_TOKENS = 3072

Cut = Callable[[str], "tuple[str, bool]"]


class OfficialContextCut:
    """``(text, was_cut)`` under the published rule (see the module docstring)."""

    def __init__(self, tokenizer, max_tokens: int = CONTEXT_TOKENS, name: str = OFFICIAL_CONTEXT_TOKENIZER) -> None:
        self.tokenizer, self.max_tokens, self.name = tokenizer, max_tokens, name

    @classmethod
    def load(cls, path: str = OFFICIAL_CONTEXT_TOKENIZER, max_tokens: int = CONTEXT_TOKENS) -> "OfficialContextCut":
        from omgm.hub import load_pretrained

        return cls(load_pretrained("AutoTokenizer", path, what="context tokenizer (--context_tokenizer)"),
                   max_tokens, str(path))

    def __call__(self, text: str) -> tuple[str, bool]:
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) <= self.max_tokens:
            return text, False
        decoded = self.tokenizer.decode(ids[:self.max_tokens], skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False)
        return clean_up_tokenization(decoded)[4:], True


class OwnTokenizerCut:
    """The omgm style: ``max_tokens`` tokens of the generator's own tokenizer."""

    def __init__(self, generator, max_tokens: int = CONTEXT_TOKENS) -> None:
        self.generator, self.max_tokens = generator, max_tokens
        self.name = f"{generator.name} (own tokenizer)"

    def __call__(self, text: str) -> tuple[str, bool]:
        return self.generator.cut_tokens(text, self.max_tokens)
