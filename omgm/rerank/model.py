"""The IT2IT reranker: BLIP-2's Q-Former over a frozen EVA ViT-g, built from transformers' BLIP-2 modules.

One side (query image + question, or wiki image + section text) is encoded by running the Q-Former BERT on
the 32 learned query tokens followed by the text tokens, with the query positions cross-attending to the
ViT features (``ln_vision`` applied); the 32 query-token outputs (768-d, no projection) are the embedding.
Two sides are compared by late interaction, ``s(q, c) = mean_i max_j <q_i, c_j>``.

Parity notes: LayerNorm eps 1e-6 inside the ViT, 1e-5 for ``ln_vision`` (the
vision model's ``post_layernorm`` here, set explicitly), 1e-12 in the Q-Former; no causal mask; padding the
text does not change the query outputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2VisionConfig
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2TextEmbeddings, Blip2VisionModel

LN_VISION_EPS = 1e-5


@dataclass
class VisionSpec:
    hidden_size: int = 1408
    intermediate_size: int = 6144
    num_hidden_layers: int = 39
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    layer_norm_eps: float = 1e-6


@dataclass
class QFormerSpec:
    vocab_size: int = 30523
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12


@dataclass
class IT2ITConfig:
    """Sizes of the reranker; the defaults are BLIP-2's (EVA ViT-g/14 + BERT-base Q-Former, 32 queries)."""

    vision: VisionSpec = field(default_factory=VisionSpec)
    qformer: QFormerSpec = field(default_factory=QFormerSpec)
    num_query_tokens: int = 32
    temp_init: float = 0.07
    max_text_length: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IT2ITConfig":
        return cls(vision=VisionSpec(**d.get("vision", {})), qformer=QFormerSpec(**d.get("qformer", {})),
                   **{k: v for k, v in d.items() if k not in ("vision", "qformer")})

    @classmethod
    def tiny(cls, vocab_size: int) -> "IT2ITConfig":
        """A few-layer, narrow config for tests and the demo (same code paths, random weights)."""
        return cls(vision=VisionSpec(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                                     image_size=224, patch_size=32),
                   qformer=QFormerSpec(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=128, max_position_embeddings=512),
                   num_query_tokens=8)


class IT2ITReranker(nn.Module):
    """Q-Former reranker; submodule names are what :mod:`omgm.rerank.convert` maps LAVIS keys onto."""

    def __init__(self, config: IT2ITConfig) -> None:
        super().__init__()
        self.config = config
        v, q = config.vision, config.qformer
        vcfg = Blip2VisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                                 num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                                 image_size=v.image_size, patch_size=v.patch_size, layer_norm_eps=v.layer_norm_eps,
                                 qkv_bias=True, hidden_act="gelu",
                                 initializer_range=0.02)  # HF's default 1e-10 leaves a random ViT ~constant
        qcfg = Blip2QFormerConfig(vocab_size=q.vocab_size, hidden_size=q.hidden_size,
                                  num_hidden_layers=q.num_hidden_layers, num_attention_heads=q.num_attention_heads,
                                  intermediate_size=q.intermediate_size,
                                  cross_attention_frequency=q.cross_attention_frequency,
                                  max_position_embeddings=q.max_position_embeddings, layer_norm_eps=q.layer_norm_eps,
                                  encoder_hidden_size=v.hidden_size, use_qformer_text_input=True, pad_token_id=0)
        vcfg._attn_implementation = "sdpa"
        qcfg._attn_implementation = "sdpa"
        self.vision = Blip2VisionModel(vcfg)
        self.vision.post_layernorm.eps = LN_VISION_EPS          # LAVIS ln_vision, not the ViT's 1e-6
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, q.hidden_size))
        self.embeddings = Blip2TextEmbeddings(qcfg)
        self.qformer = Blip2QFormerModel(qcfg)
        self.temp = nn.Parameter(torch.tensor(config.temp_init))
        nn.init.normal_(self.query_tokens, std=0.02)

    def freeze_vision(self) -> None:
        """Freeze the ViT (its blocks and patch embedding); ``ln_vision`` stays trainable, as in LAVIS."""
        for name, p in self.vision.named_parameters():
            p.requires_grad = name.startswith("post_layernorm")

    def half_vit(self) -> None:
        """The ViT blocks in fp16, as LAVIS runs them on GPU; ``ln_vision`` and the Q-Former stay fp32."""
        self.vision.embeddings.half()
        self.vision.encoder.half()

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViT tokens after ``ln_vision``: ``[B, 1 + patches, vision_hidden]``.

        The same computation as ``Blip2VisionModel.forward``, split so that a frozen ViT runs without autograd
        while ``ln_vision`` (trainable, fp32) still receives gradients.
        """
        frozen = not any(p.requires_grad for p in self.vision.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            dtype = self.vision.embeddings.patch_embedding.weight.dtype
            h = self.vision.embeddings(pixel_values.to(dtype))
            h = self.vision.encoder(inputs_embeds=h).last_hidden_state
        return self.vision.post_layernorm(h.to(self.vision.post_layernorm.weight.dtype))

    def encode(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The 32 query-token outputs ``[B, Q, D]`` (not normalised) for images with texts.

        ``image_embeds`` may have batch 1 and is then shared by every text (all sections of one entity).
        """
        b = input_ids.shape[0]
        if image_embeds.shape[0] == 1 and b > 1:
            image_embeds = image_embeds.expand(b, -1, -1)
        queries = self.query_tokens.expand(b, -1, -1)
        embeds = self.embeddings(input_ids=input_ids, query_embeds=queries)
        mask = torch.cat([torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        out = self.qformer(query_embeds=embeds, query_length=queries.shape[1], attention_mask=mask,
                           encoder_hidden_states=image_embeds)
        return out.last_hidden_state[:, : queries.shape[1], :]

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode(self.vision_features(pixel_values), input_ids, attention_mask)


def normalise_tokens(x: torch.Tensor, mode: str = "per_token") -> torch.Tensor:
    """``per_token``: each token to unit length (training, candidates). ``faithful``: the official rerank-time
    query normalisation, across the tokens (dim 1) instead; the published alpha = 0.9 was tuned with it."""
    if mode == "per_token":
        return nn.functional.normalize(x, dim=-1)
    if mode == "faithful":
        return nn.functional.normalize(x, dim=1)
    raise ValueError(f"unknown normalisation {mode!r}: use per_token or faithful")


def late_interaction(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``mean_i max_j <q_i, c_j>`` for every query/candidate pair: ``q [Bq, Q, D]``, ``c [Bc, Q, D]`` -> ``[Bq, Bc]``."""
    sim = torch.einsum("aid,bjd->abij", q.float(), c.float())
    return sim.max(dim=-1).values.mean(dim=-1)


def paired_late_interaction(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Scores of each query against its own candidates: ``q [B, Q, D]``, ``c [B, N, Q, D]`` -> ``[B, N]``."""
    sim = torch.einsum("bid,bnjd->bnij", q.float(), c.float())
    return sim.max(dim=-1).values.mean(dim=-1)
