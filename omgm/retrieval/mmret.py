"""MMRet (MegaPairs) retrievers.

- ``mmret-base`` / ``mmret-large``: MMRet-CLIP, CLIP-architecture checkpoints (``JUNJIE99/MMRet-base`` / ``-large``)
  loaded as transformers ``CLIPModel`` with their own processor. Images and texts are the normalised projected
  features; a composed query (image + text) follows MMRet's reference encoder: the *raw* projected image and text
  features are summed, then normalised once.
- ``mmret-mllm``: a LLaVA-style VLM whose last-layer hidden state at the final token is the embedding
  (left padding, L2-normalised), with separate prompts for queries (a task instruction, then the image and the
  question) and candidates, as BGE-VL's usage describes. UNVERIFIED: the exact template lives in the model's
  remote code, which we could not read; treat numbers from this path as provisional.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from omgm.devices import resolve_device, torch_dtype
from omgm.retrieval.base import Retriever, l2_normalise
from omgm.retrieval.encoders import HFClipRetriever, _hf_identity, _pooled

MMRET_IDS = {"mmret-base": "JUNJIE99/MMRet-base", "mmret-large": "JUNJIE99/MMRet-large",
             "mmret-mllm": "JUNJIE99/MMRet-MLLM"}
QUERY_INSTRUCTION = "Retrieve the Wikipedia entity that this image and question are about: "
QUERY_TEMPLATE = "{instruction}{text}"


class MMRetClipRetriever(HFClipRetriever):
    supports_composed = True

    def __init__(self, path_or_id: str, device: str | None = None, dtype: str | None = None) -> None:
        super().__init__(path_or_id, device=device, dtype=dtype, trust_remote_code=False)
        self.name = f"mmret-clip:{path_or_id}"

    @torch.no_grad()
    def encode_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device, next(self.model.parameters()).dtype)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        img = _pooled(self.model.get_image_features(pixel_values=pixels))
        txt = _pooled(self.model.get_text_features(**enc))
        return l2_normalise(img.float() + txt.float())


class MLLMEmbedRetriever(Retriever):
    """Last-token embeddings of an image-text-to-text model (MMRet-MLLM and other LLaVA-style embedders)."""

    supports_composed = True

    def __init__(self, path_or_id: str, device: str | None = None, dtype: str | None = None,
                 instruction: str = QUERY_INSTRUCTION, max_length: int = 2048) -> None:
        super().__init__()
        from transformers import AutoModelForImageTextToText

        from omgm.hub import load_pretrained

        self.device = resolve_device(device)
        self.processor = load_pretrained("AutoProcessor", path_or_id, what="MMRet-MLLM processor")
        self.processor.tokenizer.padding_side = "left"
        if self.processor.tokenizer.pad_token is None:
            self.processor.tokenizer.pad_token = self.processor.tokenizer.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(path_or_id, dtype=torch_dtype(dtype, self.device)
                                                                 ).to(self.device).eval()
        self.instruction, self.max_length = instruction, max_length
        self.name = f"mllm-embed:{path_or_id}"
        self.model_id = f"mllm:{_hf_identity(path_or_id)}"
        self.dim = int(self.encode_texts(["x"]).shape[1])
        self.truncated_texts = 0

    def _prompt(self, text: str, image: bool) -> str:
        content = ([{"type": "image"}] if image else []) + ([{"type": "text", "text": text}] if text else [])
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=False)

    @torch.no_grad()
    def _embed(self, texts: list[str], images: list[Image.Image] | None) -> np.ndarray:
        prompts = [self._prompt(t, images is not None) for t in texts]
        kw = dict(text=prompts, padding=True, return_tensors="pt")
        if images is not None:
            kw["images"] = images
        enc = self.processor(**kw).to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        out = self.model(**enc, output_hidden_states=True)
        return l2_normalise(out.hidden_states[-1][:, -1, :])          # left padding: the last token is real

    def preprocess(self, image: Image.Image) -> Image.Image:     # the processor does the pixels
        return image.convert("RGB")

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._embed([""] * len(images), [im.convert("RGB") for im in images])

    def encode_pixels(self, pixels) -> np.ndarray:
        return self.encode_images(pixels)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts), None)

    def encode_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        q = [QUERY_TEMPLATE.format(instruction=self.instruction, text=t) for t in texts]
        return self._embed(q, [im.convert("RGB") for im in images])
