"""Write the tiny random-weight models that the demo and tests use (no download needed).

    python -m utils.make_tiny_models --out .cache/demo/models

- ``tiny_clip.pt``: an open_clip ``omgm-tiny-eva`` state dict (timm EVA02-tiny image tower, 2-layer text
  tower, 64-d embeddings), seeded so every machine writes the same weights. RANDOM weights: retrieval with it
  is chance level; it exists to run every code path end to end.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def make_tiny_clip(path: Path, seed: int = 0) -> Path:
    import open_clip

    from omgm.retrieval.encoders import MODEL_CONFIG_DIR

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    torch.manual_seed(seed)
    model = open_clip.create_model("omgm-tiny-eva", pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".cache/demo/models")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "tiny_clip.pt").is_file():
        print("wrote", make_tiny_clip(out / "tiny_clip.pt", args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
