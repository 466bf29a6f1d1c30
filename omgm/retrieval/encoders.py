"""The CLIP-family retrievers (step 1: query image vs entity-summary text), behind the interface of
:class:`omgm.retrieval.base.Retriever`; :mod:`omgm.retrieval.registry` builds them by name.

Adapters:
- :class:`HFClipRetriever`: a transformers model loaded with ``AutoModel.from_pretrained(path_or_id,
  trust_remote_code=True)``: EVA-CLIP-8B as the paper ran it (its remote code exposes ``encode_image`` /
  ``encode_text``), or any ``CLIPModel`` (``get_image_features`` / ``get_text_features``); CLIP ViT-L/14
  preprocessing and tokenizer by default.
- :class:`OpenClipRetriever`: any open_clip model by name with a pretrained tag or a local checkpoint
  (EVA01-g-14, EVA02-L-14, ...; ``omgm-tiny-eva`` is a tiny config shipped for tests and the demo).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from omgm.devices import resolve_device, torch_dtype
from omgm.hub import ModelLoadError
from omgm.retrieval.base import Retriever, file_fingerprint, l2_normalise

log = logging.getLogger(__name__)
MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
EVA_CLIP_8B = "BAAI/EVA-CLIP-8B"
CLIP_L14 = "openai/clip-vit-large-patch14"


class OpenClipRetriever(Retriever):
    def __init__(self, model_name: str, pretrained: str | None = None, device: str | None = None,
                 precision: str | None = None) -> None:
        super().__init__()
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        self.device = resolve_device(device)
        precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if pretrained and not Path(pretrained).is_file() and os.sep in pretrained:
            raise ModelLoadError(f"open_clip checkpoint not found: {pretrained}")
        if not pretrained:
            log.warning("open_clip model %s has no pretrained weights: RANDOM weights, results are meaningless",
                        model_name)
        self.model, _, self._preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained or None, precision=precision, device=self.device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.name = model_name
        weights = (f"file-{file_fingerprint(pretrained)}" if pretrained and Path(pretrained).is_file()
                   else (pretrained or "random-init"))
        self.model_id = f"open_clip:{model_name}:{weights}"
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._preprocess(image)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        dtype = next(self.model.parameters()).dtype
        return l2_normalise(self.model.encode_image(pixels.to(self.device, dtype)))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts))
        self.truncated_texts += int((tokens[:, -1] != 0).sum())  # a full context means the text was cut
        return l2_normalise(self.model.encode_text(tokens.to(self.device)))


class HFClipRetriever(Retriever):
    """EVA-CLIP-8B (remote code) or any transformers CLIP-style model from a hub id or local folder."""

    def __init__(self, path_or_id: str = EVA_CLIP_8B, processor: str | None = None, tokenizer: str | None = None,
                 device: str | None = None, dtype: str | None = None, max_length: int = 77,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        from omgm.buffers import restore_nonpersistent_buffers
        from omgm.hub import load_pretrained

        self.device = resolve_device(device)
        self.model = load_pretrained("AutoModel", path_or_id, what="retriever (--retriever_path)",
                                     dtype=torch_dtype(dtype, self.device, "fp16"),
                                     trust_remote_code=trust_remote_code)
        # remote code (EVA-CLIP-8B) creates position ids and rope tables as non-persistent buffers, which
        # transformers 5 leaves uninitialised when loading: recompute them
        self.restored_buffers = restore_nonpersistent_buffers(self.model) if trust_remote_code else []
        self.model.to(self.device).eval()
        # EVA-CLIP-8B ships no processor/tokenizer of its own: it uses CLIP ViT-L/14's
        self.processor = load_pretrained("CLIPImageProcessor", processor or _own_or(path_or_id, CLIP_L14),
                                         what="retriever image processor")
        self.tokenizer = load_pretrained("AutoTokenizer", tokenizer or _own_or(path_or_id, CLIP_L14),
                                         what="retriever tokenizer")
        self.max_length = max_length
        self.name = str(path_or_id)
        self.model_id = f"hf:{_hf_identity(path_or_id)}"
        self.dim = int(self.encode_texts(["x"]).shape[-1])
        self.truncated_texts = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
        if hasattr(self.model, "encode_image"):
            return l2_normalise(self.model.encode_image(pixels))
        return l2_normalise(_pooled(self.model.get_image_features(pixel_values=pixels)))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        full = self.tokenizer(list(texts), padding=False, truncation=False)["input_ids"]
        self.truncated_texts += sum(len(ids) > self.max_length for ids in full)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        if hasattr(self.model, "encode_text"):
            return l2_normalise(self.model.encode_text(enc["input_ids"]))
        return l2_normalise(_pooled(self.model.get_text_features(**enc)))


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected feature; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _own_or(path_or_id: str, fallback: str) -> str:
    """A local model folder's own processor/tokenizer files when it has them, else ``fallback``."""
    p = Path(path_or_id)
    if p.is_dir() and ((p / "preprocessor_config.json").is_file() or (p / "tokenizer_config.json").is_file()):
        return str(p)
    return fallback


def _hf_identity(path_or_id: str) -> str:
    p = Path(path_or_id)
    if p.is_dir() and (p / "config.json").is_file():
        h = hashlib.sha256((p / "config.json").read_bytes())
        for w in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
            h.update(file_fingerprint(w).encode())
        return f"{p.name}-{h.hexdigest()[:16]}"
    return str(path_or_id)
