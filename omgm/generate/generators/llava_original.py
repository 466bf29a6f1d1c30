"""Original-format LLaVA-1.5 (the paper's fine-tuned generator) as the published code runs it, and corrected.

``official`` style, as the LLaVA repository's generate path behaves on the published prompt:
- the text is the VLM instruction + prompt core, tokenized by the slow Llama tokenizer with BOS and **no chat
  template**; ``<image>`` markers (there are none in the published prompt) would be replaced by the image's
  features, so the image has no effect on the answer (the published 50.17 on E-VQA is a text-only answer);
- the input is cut to ``tokenizer_model_max_length`` (2,048 for LLaVA-1.5), from the end, as LLaVA does;
- greedy, 200 new tokens; the answer is the decoded new tokens without special tokens, stripped.

``omgm`` style: LLaVA-1.5's own conversation template with the image first (``USER: <image>\\n...
ASSISTANT:``), so the model sees the image; no cut from the end (the context is cut instead). Not the paper's
setting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from omgm.data.images import load_image
from omgm.devices import resolve_device, torch_dtype
from omgm.generate.generators.base import Generator, GenRequest, greedy_ids, left_pad
from omgm.generate.generators.llava_convert import load_original_llava
from omgm.generate.generators.prefix import SharedPrefixGenerator
from omgm.generate.prompts import check_style, llava_v1_prompt, vlm_text

IMAGE_MARKER = "<image>"
IMAGE_SLOT = -200                     # LLaVA's IMAGE_TOKEN_INDEX


def expand_to_square(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """LLaVA's ``pad`` aspect handling: paste the image centred on a square of the processor's mean colour."""
    fill = tuple(int(x * 255) for x in mean)
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, 0) if w < h else (0, (side - h) // 2))
    return canvas


class OriginalLlavaGenerator(Generator):
    family = "llava-original"
    needs_image = True

    def __init__(self, folder: str | Path, style: str = "official", device: str | None = None,
                 dtype: str | None = None, max_new_tokens: int = 200, vision_tower: str | None = None) -> None:
        self.style = check_style(style)
        self.device = resolve_device(device)
        self.llava = load_original_llava(folder, vision_tower, self.device, torch_dtype(dtype, self.device, "fp16"))
        self.model, self.tokenizer = self.llava.model, self.llava.tokenizer
        self.max_new_tokens, self.name = max_new_tokens, f"llava-original:{folder}"
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.shared = SharedPrefixGenerator(self.model)

    def own_context_tokenizer(self) -> str | None:
        return str(self.llava.tokenizer.folder)         # a LLaVA-1.5 fine-tune keeps LLaVA-1.5's tokenizer

    def render(self, req: GenRequest) -> str:
        text = vlm_text(req.question, req.context, req.dataset)
        return text if self.style == "official" else llava_v1_prompt(text)

    def slots(self, req: GenRequest) -> list[int]:
        """Token ids with :data:`IMAGE_SLOT` where the image goes (LLaVA's ``tokenizer_image_token``)."""
        chunks = [self.tokenizer.encode(c) for c in self.render(req).split(IMAGE_MARKER)]
        bos = self.tokenizer.bos_token_id
        offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
        ids = chunks[0][:offset]
        for i, chunk in enumerate(chunks):
            if i:
                ids.append(IMAGE_SLOT)
            ids.extend(chunk[offset:])
        return ids

    def prompt_length(self, req: GenRequest) -> int:
        return len(self.slots(req))

    def _limit(self) -> int | None:
        return self.llava.max_prompt_tokens if self.style == "official" else None

    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        rows = [self.slots(r) for r in reqs]
        if not any(IMAGE_SLOT in r for r in rows):            # text only: the image has no effect
            limit = self._limit()
            rows = [r[:limit] if limit else r for r in rows]
            eos = self.llava.generation_config.eos_token_id
            out = self.shared.generate(rows, self.pad_id, self.max_new_tokens, eos) or \
                greedy_ids(self.model, rows, self.pad_id, self.max_new_tokens)
        else:
            out = self._generate_with_images(rows, [r.image for r in reqs])
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        proc = self.llava.image_processor
        if self.llava.config.get("image_aspect_ratio", "pad") == "pad":
            image = expand_to_square(image, proc.image_mean)
        return proc(images=image, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def _generate_with_images(self, rows: list[list[int]], images: list[Path]) -> list[list[int]]:
        embed = self.model.get_input_embeddings()
        seqs = []
        for ids, path in zip(rows, images):
            feats = self.model.model.get_image_features(
                pixel_values=self.pixels(load_image(path)).to(self.device, self.model.dtype),
                vision_feature_layer=self.model.config.vision_feature_layer,
                vision_feature_select_strategy=self.model.config.vision_feature_select_strategy)
            feats = (feats.pooler_output if hasattr(feats, "pooler_output") else feats)[0].reshape(-1, embed.weight.shape[1])
            parts, start = [], 0
            for i, t in enumerate(ids + [IMAGE_SLOT]):
                if t == IMAGE_SLOT:
                    parts.append(embed(torch.tensor(ids[start:i], device=self.device)))
                    if i < len(ids):
                        parts.append(feats.to(parts[-1].dtype))
                    start = i + 1
            seq = torch.cat(parts)
            limit = self._limit()
            seqs.append(seq[:limit] if limit else seq)
        width = max(s.shape[0] for s in seqs)
        _, mask = left_pad([[0] * s.shape[0] for s in seqs], 0, self.device)
        pad = embed(torch.tensor([self.pad_id], device=self.device))[0]
        batch = torch.stack([torch.cat([pad.expand(width - s.shape[0], -1), s]) for s in seqs])
        out = self.model.generate(inputs_embeds=batch, attention_mask=mask, do_sample=False,
                                  max_new_tokens=self.max_new_tokens, pad_token_id=self.pad_id)
        eos = self.llava.generation_config.eos_token_id
        ends = set(eos if isinstance(eos, list) else [eos])
        return [r[:next((i + 1 for i, t in enumerate(r) if t in ends), len(r))] for r in out.tolist()]
