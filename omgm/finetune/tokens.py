"""SFT examples as token ids: the prompt exactly as the generator reads it, then the answer; loss on the answer.

The answer follows the rendered prompt as the model would generate it (after ``ASSISTANT:`` a space, after a
chat template's assistant header nothing), and ends with the end-of-turn id the generator stops at. Labels are
-100 on every prompt position (image tokens included), so only answer tokens contribute to the loss.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

IGNORE = -100


def end_id(generator) -> int:
    """The id that ends an answer: the chat LLM's end-of-turn id when it has one, else EOS."""
    tok = generator.tokenizer
    ids = [i for i in getattr(generator, "eos_ids", None) or [] if i is not None and i != tok.unk_token_id]
    return ids[-1] if ids else tok.eos_token_id


def _joined(prompt: str, answer: str) -> str:
    return prompt + (" " if prompt.endswith(":") else "") + answer


def _with_image(generator) -> bool:
    from omgm.generate.generators import FAMILIES

    return FAMILIES[generator.family].train_image


def encode(generator, example: dict, max_length: int = 2048) -> dict | None:
    """``input_ids``, ``labels`` (and the ``image`` path, read again per batch by :func:`image_pixels`: pixels
    of a whole training set are not kept in memory) of one example; None when it is too long."""
    full = _joined(example["prompt"], example["answer"])
    if _with_image(generator):
        from omgm.data.images import load_image

        image = load_image(example["image"])         # the processor expands the image token to the image's size
        proc = generator.processor
        p_ids = proc(images=image, text=example["prompt"], return_tensors="pt")["input_ids"][0].tolist()
        f_ids = proc(images=image, text=full, return_tensors="pt")["input_ids"][0].tolist()
    else:
        tok = generator.tokenizer
        p_ids = tok(example["prompt"], add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
    if f_ids[:len(p_ids)] != p_ids:                     # the answer changed how the prompt's end tokenizes
        a_ids = generator.tokenizer(full[len(example["prompt"]):], add_special_tokens=False)["input_ids"]
        f_ids = p_ids + a_ids
    f_ids = f_ids + [end_id(generator)]
    if len(f_ids) > max_length or len(f_ids) <= len(p_ids):
        return None
    out = {"input_ids": f_ids, "labels": [IGNORE] * len(p_ids) + f_ids[len(p_ids):]}
    if _with_image(generator):
        out["image"] = example["image"]
    return out


def image_pixels(generator, paths: Sequence[str]) -> torch.Tensor:
    """The pixel values the generator's processor makes of these images (as it does beside the text)."""
    from omgm.data.images import load_image

    return generator.processor.image_processor(images=[load_image(p) for p in paths], return_tensors="pt")[
        "pixel_values"]


class Collate:
    """Right-padded batches: ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding), and
    ``pixel_values`` from ``pixels(image paths)`` for items with an image."""

    def __init__(self, pad_id: int, pixels: Callable[[list[str]], torch.Tensor] | None = None) -> None:
        self.pad_id, self.pixels = pad_id, pixels

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
        if "image" in items[0]:
            batch["pixel_values"] = self.pixels([x["image"] for x in items])
        return batch
