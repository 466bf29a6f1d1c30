"""Encode throughput (items/s) of each retriever on CPU with tiny random configs, batch 1 vs batch 32.

Models: open_clip (omgm-tiny-eva), VISTA (tiny BGE + EVA-02), MMRet-CLIP (tiny transformers CLIP),
MMRet-MLLM (tiny LLaVA). Random weights: the figures measure the code path (batching, preprocessing), not the
real models' speed.

    python benchmarks/embedders_throughput.py [--items 64]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._smoke import add_smoke, apply_smoke  # noqa: E402
from omgm.retrieval.base import RetrieverSpec  # noqa: E402
from omgm.retrieval.registry import build_retriever  # noqa: E402
from omgm.retrieval.vista import VistaRetriever  # noqa: E402
from utils import make_tiny_models as tiny  # noqa: E402


def rate(fn, items: list, batch: int) -> float:
    fn(items[:2])
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        fn(items[i:i + batch])
    return len(items) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=64)
    add_smoke(p)
    a = apply_smoke(p.parse_args(argv), items=4)
    torch.manual_seed(0)
    corpus = tiny.demo_corpus(ROOT / "assets/demo")
    images = [Image.new("RGB", (96 + i % 7, 80), (i * 37 % 255, 90, 200 - i % 200)) for i in range(a.items)]
    texts = [corpus[i % len(corpus)] for i in range(a.items)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        models = {
            "open_clip tiny": build_retriever(RetrieverSpec("omgm-tiny-eva", retriever_pretrained=str(
                tiny.make_tiny_clip(t / "clip.pt")), device="cpu")),
            "vista tiny": VistaRetriever(str(tiny.make_tiny_bge(t / "bge", corpus)), None, device="cpu",
                                         tiny_vision=dict(img_size=224, patch_size=32, embed_dim=32, depth=2,
                                                          num_heads=2, ref_feat_shape=(7, 7))),
            "mmret-clip tiny": build_retriever(RetrieverSpec("mmret-base", retriever_path=str(
                tiny.make_tiny_hf_clip(t / "hfclip")), device="cpu")),
            "mmret-mllm tiny": build_retriever(RetrieverSpec("mmret-mllm", retriever_path=str(
                tiny.make_tiny_llava(t / "llava", corpus)), device="cpu")),
        }
        for name, r in models.items():
            row = {}
            for kind, fn, data in (("image", r.encode_images, images), ("text", r.encode_texts, texts)):
                b1, b32 = rate(fn, data, 1), rate(fn, data, 32)
                row[kind] = {"batch1": round(b1, 1), "batch32": round(b32, 1), "speedup": round(b32 / b1, 1)}
            if r.supports_composed:
                fn = lambda pairs, r=r: r.encode_composed([x for x, _ in pairs], [y for _, y in pairs])  # noqa: E731
                pairs = list(zip(images, texts))
                b1, b32 = rate(fn, pairs, 1), rate(fn, pairs, 32)
                row["composed"] = {"batch1": round(b1, 1), "batch32": round(b32, 1), "speedup": round(b32 / b1, 1)}
            rows[name] = row
    print(f"encode throughput on CPU, items/s (batch 1 -> batch 32), {a.items} items, tiny random models:")
    for name, row in rows.items():
        print(f"  {name:16} " + "; ".join(f"{k} {v['batch1']} -> {v['batch32']} ({v['speedup']}x)" for k, v in row.items()))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
