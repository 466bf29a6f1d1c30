"""What the reranker reads: cleaned texts, the candidate template, BERT tokens, TargetPad'ed images."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from omgm.data.images import CLIP_MEAN, CLIP_STD, load_image, target_pad
from omgm.data.kb import SECTION_TEMPLATE as CANDIDATE_TEMPLATE  # noqa: F401
from omgm.data.kb import section_document

_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")
DEC_TOKEN = "[DEC]"


def clean_text(text: str, max_words: int = 512) -> str:
    """LAVIS ``blip_caption`` processing: lower-case, ``.!"()*#:;~`` -> space, runs of 2+ whitespace -> one
    space (a lone newline stays), strip, cut to ``max_words`` space-separated words."""
    text = _SPACES.sub(" ", _PUNCT.sub(" ", text.lower()))
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def candidate_text(title: str, section_title: str, section_text: str) -> str:
    return section_document(title, section_title, section_text)


def load_tokenizer(path_or_id: str = "bert-base-uncased"):
    """BERT-base-uncased with ``[DEC]`` added as BOS, as LAVIS builds it (vocabulary 30,523)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path_or_id, truncation_side="right")
    if DEC_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"bos_token": DEC_TOKEN})
    return tok


def tokenize(tokenizer, texts: Sequence[str], max_length: int = 512, pad_to_max: bool = False,
             *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask for cleaned texts. The official code pads to ``max_length``; padding to the longest
    text in the batch gives the same query outputs (the mask hides the padding) and is much cheaper."""
    enc = tokenizer([clean_text(t) for t in texts], padding="max_length" if pad_to_max else "longest",
                    truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


class TargetPad:
    """Pad to a black square when long/short side >= ratio (a class, so DataLoader workers can pickle it)."""

    def __init__(self, ratio: float = 1.25) -> None:
        self.ratio = ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        return target_pad(image, self.ratio)


def image_transform(size: int = 224, pad_ratio: float = 1.25) -> transforms.Compose:
    """TargetPad(ratio) -> resize ``size`` (bicubic, shorter side) -> centre crop -> tensor -> CLIP mean/std."""
    return transforms.Compose([
        TargetPad(pad_ratio),
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def load_pixels(paths: Sequence[str | Path], transform) -> torch.Tensor:
    """Decoded, transformed images stacked ``[N, 3, H, W]``; an unreadable file raises ImageLoadError naming it."""
    return torch.stack([transform(load_image(p)) for p in paths])

