"""Visualized-BGE (VISTA): a BGE text encoder that reads EVA-CLIP image tokens, as a step-1 retriever.

Built from transformers' BERT / XLM-RoBERTa (the BGE model's own config, ``bge-base-en-v1.5`` 768-d or
``bge-m3`` 1024-d) and timm's EVA-02 vision tower (EVA02-CLIP-B/16 or -L/14), loading the released
``Visualized_base_en_v1.5.pth`` / ``Visualized_m3.pth`` by key name (strict, with a report).

Encoding (FlagEmbedding's Visualized_BGE, which we follow exactly):
- text: BGE on the text, ``[CLS]`` output, L2-normalised;
- image (+ optional text): the EVA tokens of the last block (no final norm, CLS dropped) -> ``visual_proj`` ->
  + BGE position embeddings 1..N -> BGE's embedding LayerNorm; the sequence is BGE ``[CLS]`` (position 0),
  the image tokens, then the text tokens (positions N+1...); the ``[CLS]`` output, L2-normalised. An image
  alone is encoded with an empty text.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from omgm.buffers import nonpersistent_buffers
from omgm.data.images import clip_eval_transform
from omgm.devices import resolve_device
from omgm.errors import OmgmError
from omgm.retrieval.base import Retriever, file_fingerprint, l2_normalise

VARIANTS = {  # bge hidden size -> timm EVA-02 CLIP vision tower (ViT width equals the BGE width)
    768: "eva02_base_patch16_clip_224",
    1024: "eva02_large_patch14_clip_224",
}
# The tiny test tower (BGE width 32): the released towers' layout (token pooling, so no ``fc_norm``; rope with
# a reference feature shape), a few layers wide. Only for tests and the demo; no real BGE is 32 wide.
TINY_VISION = dict(img_size=224, patch_size=32, embed_dim=32, depth=2, num_heads=2, ref_feat_shape=(7, 7))
_EVA_CLIP_LAYOUT = dict(qkv_fused=False, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
                        use_rot_pos_emb=True, global_pool="token")
# EVA-CLIP name -> timm name (timm's own EVA-CLIP conversion does the same in the other direction)
_EVA_TO_TIMM = [("mlp.ffn_ln", "mlp.norm"), ("attn.inner_attn_ln", "attn.norm"), ("mlp.w1", "mlp.fc1_g"),
                ("mlp.w2", "mlp.fc1_x"), ("mlp.w3", "mlp.fc2"), ("attn.q_bias", "attn.q_proj.bias"),
                ("attn.v_bias", "attn.v_proj.bias")]


class VistaCheckpointError(OmgmError, ValueError):
    """A checkpoint that is not a Visualized-BGE of this size."""


class VistaModel(nn.Module):
    """The network; parameter names ``bge``/``visual``/``visual_proj`` map to the released ``bge_*``/``model_visual``."""

    def __init__(self, bge_config, vision: nn.Module) -> None:
        super().__init__()
        from transformers import AutoModel

        self.bge = AutoModel.from_config(bge_config, attn_implementation="sdpa")
        self.visual = vision
        self.visual_proj = nn.Linear(vision.embed_dim, bge_config.hidden_size)

    def _encode(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ext = (1.0 - mask[:, None, None, :].to(embeds.dtype)) * torch.finfo(embeds.dtype).min
        return self.bge.encoder(embeds, attention_mask=ext).last_hidden_state[:, 0]

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._encode(self.bge.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids)), mask)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.patch_embed(pixels)
        x, rope = v._pos_embed(x)
        x = v.norm_pre(x)
        for blk in v.blocks:
            x = blk(x, rope=rope)
        return x[:, v.num_prefix_tokens:]                    # last block, no final norm, CLS dropped

    def encode_mm(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = self.bge.embeddings
        img = self.visual_proj(self.image_tokens(pixels))
        n, device = img.shape[1], img.device
        img = emb.LayerNorm(img + emb.position_embeddings(torch.arange(1, 1 + n, device=device)))
        pos = torch.cat([torch.zeros(1, dtype=torch.long, device=device),
                         torch.arange(1 + n, n + ids.shape[1], device=device)])
        txt = emb(input_ids=ids, position_ids=pos.unsqueeze(0).expand_as(ids), token_type_ids=torch.zeros_like(ids))
        seq = torch.cat([txt[:, :1], img, txt[:, 1:]], dim=1)
        full_mask = torch.cat([torch.ones(ids.shape[0], n, dtype=mask.dtype, device=device), mask], dim=1)
        return self._encode(seq, full_mask)


def build_vision(hidden: int, tiny: dict | None = None) -> nn.Module:
    import timm

    if tiny or hidden == TINY_VISION["embed_dim"]:
        from timm.models.eva import Eva

        return Eva(num_classes=0, **_EVA_CLIP_LAYOUT, **(tiny or TINY_VISION))
    if hidden not in VARIANTS:
        raise VistaCheckpointError(f"no Visualized-BGE variant for a {hidden}-d BGE model (768: base, 1024: m3)")
    return timm.create_model(VARIANTS[hidden], pretrained=False, num_classes=0)


def released_to_ours(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Released Visualized-BGE keys -> :class:`VistaModel` keys; returns (mapped, ignored keys)."""
    out, ignored = {}, []
    for k, v in sd.items():
        if k.startswith(("bge_encoder.", "bge_embeddings.", "bge_pooler.")):
            out["bge." + k[len("bge_"):]] = v
        elif k.startswith("visual_proj."):
            out[k] = v
        elif k.startswith("model_visual."):
            name = re.sub(r"^model_visual\.(visual\.)?", "", k)
            if name.startswith(("head.", "rope.")) or "rope." in name or name.startswith(("logit_scale", "text.")):
                ignored.append(k)
                continue
            for a, b in _EVA_TO_TIMM:
                name = name.replace(a, b)
            out["visual." + name] = v
        else:
            ignored.append(k)
    return out, ignored


def ours_to_released(model: VistaModel) -> dict[str, torch.Tensor]:
    """The inverse of :func:`released_to_ours` (for tests and for sharing converted weights)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("bge."):
            out["bge_" + k[4:]] = v
        elif k.startswith("visual."):
            name = k[len("visual."):]
            if "rope" in name:
                continue
            for a, b in reversed(_EVA_TO_TIMM):
                name = name.replace(b, a)
            out["model_visual.visual." + name] = v
        else:
            out[k] = v
    return out


def load_released(model: VistaModel, path: str | Path) -> list[str]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    mapped, ignored = released_to_ours(sd)
    buffers = set(nonpersistent_buffers(model))              # rope tables, position ids: recomputed, not loaded
    ignored += [k for k in mapped if k in buffers]
    mapped = {k: v for k, v in mapped.items() if k not in buffers}
    own = {k for k in model.state_dict() if "rope" not in k and not k.endswith("position_ids")}
    missing = sorted(own - set(mapped))
    unexpected = sorted(set(mapped) - set(model.state_dict()))
    bad_shape = [k for k in set(mapped) & own if tuple(mapped[k].shape) != tuple(model.state_dict()[k].shape)]
    if missing or unexpected or bad_shape:
        raise VistaCheckpointError(f"{path} is not a Visualized-BGE checkpoint of this size: "
                                   f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {bad_shape[:5]}")
    model.load_state_dict(mapped, strict=False)
    return ignored


class VistaRetriever(Retriever):
    supports_composed = True

    def __init__(self, bge_path: str, weights: str | None = None, device: str | None = None,
                 tiny_vision: dict | None = None, max_length: int = 512) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoTokenizer

        self.device = resolve_device(device)
        cfg = AutoConfig.from_pretrained(bge_path)
        self.model = VistaModel(cfg, build_vision(cfg.hidden_size, tiny_vision))
        if weights:
            self.ignored = load_released(self.model, weights)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(bge_path)
        self.size = self.model.visual.patch_embed.img_size[0]
        self.max_length = min(max_length, cfg.max_position_embeddings)
        self.n_img = self.model.visual.patch_embed.num_patches
        self.dim = cfg.hidden_size
        self.name = "vista"
        self.model_id = f"vista:{Path(bge_path).name}:{file_fingerprint(weights) if weights else 'random-init'}"
        self._tf = clip_eval_transform(self.size)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._tf(image.convert("RGB"))

    def _tokens(self, texts: Sequence[str], room: int) -> tuple[torch.Tensor, torch.Tensor]:
        full = self.tokenizer(list(texts))["input_ids"]
        self.truncated_texts += sum(len(x) > room for x in full)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=room, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(self.model.encode_text(*self._tokens(texts, self.max_length)))

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor, texts: Sequence[str] | None = None) -> np.ndarray:
        texts = list(texts) if texts is not None else [""] * len(pixels)
        ids, mask = self._tokens(texts, self.max_length - self.n_img)
        return l2_normalise(self.model.encode_mm(pixels.to(self.device), ids, mask))

    def encode_composed(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]), texts)
