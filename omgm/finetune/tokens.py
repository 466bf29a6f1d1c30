"""SFT examples as token ids: the prompt exactly as the generator reads it, then the answer; loss on the answer.

The answer follows the rendered prompt as the model would generate it (after ``ASSISTANT:`` a space, after a
chat template's assistant header nothing), and ends with the end-of-turn id the generator stops at. Labels are
-100 on every prompt position (image tokens included), so only answer tokens contribute to the loss.
"""
from __future__ import annotations

from typing import Sequence

import torch

IGNORE = -100


def end_id(generator) -> int:
    """The id that ends an answer: the chat LLM's end-of-turn id when it has one, else EOS."""
    tok = generator.tokenizer
    ids = [i for i in getattr(generator, "eos_ids", None) or [] if i is not None and i != tok.unk_token_id]
    return ids[-1] if ids else tok.eos_token_id


def _joined(prompt: str, answer: str) -> str:
    return prompt + (" " if prompt.endswith(":") else "") + answer


def encode(generator, example: dict, max_length: int = 2048) -> dict | None:
    """``input_ids``, ``labels`` (and ``pixel_values``) of one example; None when the prompt alone is too long."""
    full = _joined(example["prompt"], example["answer"])
    if generator.family == "llava-hf":
        from omgm.data.images import load_image

        image = load_image(example["image"])
        proc = generator.processor
        p_ids = proc(images=image, text=example["prompt"], return_tensors="pt")["input_ids"][0].tolist()
        enc = proc(images=image, text=full, return_tensors="pt")
        f_ids, pixels = enc["input_ids"][0].tolist(), enc["pixel_values"][0]
    else:
        tok = generator.tokenizer
        p_ids = tok(example["prompt"], add_special_tokens=False)["input_ids"]
        f_ids, pixels = tok(full, add_special_tokens=False)["input_ids"], None
    if f_ids[:len(p_ids)] != p_ids:                     # the answer changed how the prompt's end tokenizes
        a_ids = generator.tokenizer(full[len(example["prompt"]):], add_special_tokens=False)["input_ids"]
        f_ids = p_ids + a_ids
    f_ids = f_ids + [end_id(generator)]
    if len(f_ids) > max_length or len(f_ids) <= len(p_ids):
        return None
    out = {"input_ids": f_ids, "labels": [IGNORE] * len(p_ids) + f_ids[len(p_ids):]}
    if pixels is not None:
        out["pixel_values"] = pixels
    return out


class Collate:
    """Right-padded batches: ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding), ``pixel_values``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict]) -> dict:
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, x in enumerate(items):
            n = len(x["input_ids"])
            ids[i, :n] = torch.tensor(x["input_ids"])
            labels[i, :n] = torch.tensor(x["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "pixel_values" in items[0]:
            batch["pixel_values"] = torch.stack([x["pixel_values"] for x in items])
        return batch
