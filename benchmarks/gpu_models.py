"""Random-weight models at the real sizes (or tiny with ``small``) and inputs for :mod:`benchmarks.gpu_suite`.

Sizes, from the public configs: the reranker is omgm's IT2IT model at LAVIS BLIP-2's sizes (EVA ViT-g/14,
39 blocks, width 1408; Q-Former BERT-base); EVA-CLIP-8B's vision tower is approximated by a pre-norm ViT of
width 4096, 32 blocks, MLP 16384, patch 14 at 224 px (~6.4B parameters), its text tower by width 1280,
32 blocks, MLP 5120 on 77 tokens (~0.6B), embedding size 1280; the generator is Llama-2-7B's shape (LLaVA-1.5-7B's
language model: width 4096, 32 layers, MLP 11008, 32k vocabulary).
"""
from __future__ import annotations

import gc
import importlib.util

import torch
from torch import nn


class Skip(Exception):
    """A part that cannot run here; the message says why."""


def free(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def reranker(dev: torch.device, small: bool):
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    cfg = IT2ITConfig.tiny(vocab_size=1000) if small else IT2ITConfig()
    with torch.device(dev):
        model = IT2ITReranker(cfg).eval()
    if dev.type == "cuda":
        model.half_vit()                      # the ViT in fp16, as LAVIS runs it; the Q-Former under autocast
    return model


def reranker_inputs(model, batch: int, dev: torch.device):
    v, q = model.config.vision, model.config.qformer
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, v.image_size, v.image_size, generator=g).to(dev)
    length = min(512, q.max_position_embeddings)
    ids = torch.randint(5, q.vocab_size, (batch, length), generator=g).to(dev)
    return pixels, ids, torch.ones_like(ids)


class Tower(nn.Module):
    """A pre-norm transformer over patch or token embeddings, pooled at the first token and projected."""

    def __init__(self, width: int, depth: int, heads: int, mlp: int, out: int, patch: int | None, vocab: int = 0):
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, patch) if patch else nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, heads, mlp, batch_first=True, norm_first=True, activation="gelu",
                                           dropout=0.0)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.proj = nn.LayerNorm(width), nn.Linear(width, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if h.dim() == 4:
            h = h.flatten(2).transpose(1, 2)
        return self.proj(self.norm(self.blocks(h)[:, 0]))


def tower(kind: str, dev: torch.device, small: bool):
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if kind == "vision":
        spec = dict(width=64, depth=2, heads=4, mlp=128, out=32, patch=14) if small else \
            dict(width=4096, depth=32, heads=32, mlp=16384, out=1280, patch=14)
        batch = 2 if small else 32
        inputs = torch.randn(batch, 3, 224, 224)
        label = "EVA-CLIP-8B-size vision tower (approximate: ViT width 4096, 32 blocks, MLP 16384, 224 px), bf16"
    else:
        spec = dict(width=64, depth=2, heads=4, mlp=128, out=32, patch=None, vocab=1000) if small else \
            dict(width=1280, depth=32, heads=20, mlp=5120, out=1280, patch=None, vocab=49408)
        batch = 4 if small else 256
        inputs = torch.randint(0, spec["vocab"], (batch, 77))
        label = "EVA-CLIP-8B-size text tower (width 1280, 32 blocks, 77 tokens), bf16: summary embedding"
    with torch.device(dev):
        model = Tower(**spec).to(dtype).eval()
    inputs = inputs.to(dev, dtype) if inputs.is_floating_point() else inputs.to(dev)
    return model, inputs, label if not small else label + " [small]"


def decoder(dev: torch.device, small: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=1000) if small else \
        LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = 0, 1, 2
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    model.generation_config.pad_token_id = 0
    return model


def step3_prompts(small: bool) -> list[list[int]]:
    """Token-id prompts shaped like the published step-3 ones: one shared instruction prefix (~80 tokens, the
    VLM instruction), then contexts spread over the 3,072-token cut, a question and the answer cue."""
    g = torch.Generator().manual_seed(0)
    vocab, prefix_len = (1000, 16) if small else (32000, 80)
    contexts = [12, 20, 28, 40] if small else [300, 450, 600, 800, 1000, 1500, 2200, 3072]
    prefix = torch.randint(3, vocab, (prefix_len,), generator=g).tolist()
    return [[1] + prefix + torch.randint(3, vocab, (n + 25,), generator=g).tolist() for n in contexts]


def flat_search(db: torch.Tensor, queries: torch.Tensor, k: int):
    """``(backend label, zero-argument search function)``: faiss-gpu when importable, else torch."""
    if db.is_cuda and importlib.util.find_spec("faiss"):
        import faiss

        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            res = faiss.StandardGpuResources()
            cfg = faiss.GpuIndexFlatConfig()
            cfg.useFloat16 = db.dtype == torch.float16
            index = faiss.GpuIndexFlatIP(res, db.shape[1], cfg)
            index.add(db.float().cpu().numpy())
            q = queries.float().cpu().numpy()
            return "faiss-gpu GpuIndexFlatIP", lambda: index.search(q, k)
    label = "torch matmul + top-k (faiss-gpu not installed)" if db.is_cuda else "torch matmul + top-k (CPU)"
    return label, lambda: torch.topk(queries @ db.T, k, dim=1)


def not_measured(dev: torch.device) -> dict:
    """What this run cannot show, with the reason (never a figure)."""
    out = {}
    n = torch.cuda.device_count() if dev.type == "cuda" else 0
    if n < 2:
        out["multi_gpu"] = f"{n} GPU(s) visible: torchrun data-parallel runs need 2 or more"
    if not importlib.util.find_spec("deepspeed"):
        out["deepspeed"] = "the deepspeed package is not installed"
    if not (dev.type == "cuda" and importlib.util.find_spec("vllm")):
        out["vllm"] = "needs CUDA and the vllm package" if dev.type != "cuda" else "the vllm package is not installed"
    else:
        out["vllm"] = "installed, but this suite has no vLLM throughput part yet: run benchmarks/step3_generate.py"
    return out
