"""VLMs in transformers' own format (``llava-hf/llava-1.5-7b-hf`` and other image-text-to-text folders).

``official`` style, as the published code runs ``llava-hf/llava-1.5-7b-hf``: one user turn whose content is the
VLM instruction + prompt core followed by the image, rendered by the processor's chat template (llava-hf puts
the image placeholder first: ``USER: <image>\\n{text} ASSISTANT:``); the pixels go in as fp16 (the published
code casts them so, then the model casts them to its own dtype); greedy, 200 new tokens; the answer is the whole
decoded sequence split on ``"ASSISTANT:"``, last part, stripped.

``omgm`` style: the same conversation; the answer is the decoded new tokens, stripped. Another image-text-to-text
model (the ``vlm-hf`` family) renders with its own chat template and answers with its new tokens in either style:
it has no ``ASSISTANT:`` to split on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from omgm.data.images import load_image
from omgm.devices import resolve_device, torch_dtype
from omgm.generate.decoding import restore_v4_decoding
from omgm.generate.generators.base import Generator, GenRequest, attn_implementation
from omgm.generate.prompts import check_style, vlm_text
from omgm.hub import load_pretrained


class HFVisionGenerator(Generator):
    family = "llava-hf"
    needs_image = True

    def __init__(self, path: str | Path, style: str = "official", device: str | None = None, dtype: str | None = None,
                 max_new_tokens: int = 200, attn: str | None = None, load_model: bool = True,
                 answer_marker: str | None = "ASSISTANT:") -> None:
        self.style, self.answer_marker = check_style(style), answer_marker
        self.device = resolve_device(device)
        self.processor = load_pretrained("AutoProcessor", path, what="generator processor")
        self.processor.tokenizer.padding_side = "left"
        self.tokenizer = restore_v4_decoding(self.processor.tokenizer)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_pretrained("AutoModelForImageTextToText", path, what="generator",
                                     dtype=torch_dtype(dtype, self.device),
                                     attn_implementation=attn_implementation(attn)).to(self.device).eval() \
            if load_model else None
        self.max_new_tokens, self.name = max_new_tokens, f"hf-vlm:{path}"

    def render(self, req: GenRequest) -> str:
        conv = [{"role": "user", "content": [{"type": "text", "text": vlm_text(req.question, req.context, req.dataset)},
                                             {"type": "image"}]}]
        return self.processor.apply_chat_template(conv, add_generation_prompt=True)

    def _pixels_dtype(self) -> torch.dtype:
        if self.style == "official" and self.model.dtype != torch.float32:
            return torch.float16
        return self.model.dtype

    @torch.no_grad()
    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        images = [load_image(r.image) for r in reqs]
        enc = self.processor(images=images, text=[self.render(r) for r in reqs], return_tensors="pt",
                             padding=True).to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self._pixels_dtype())
        out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        if self.style == "official" and self.answer_marker:   # the published split of llava-hf's whole decode
            return [t.split(self.answer_marker)[-1].strip()
                    for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        new = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
