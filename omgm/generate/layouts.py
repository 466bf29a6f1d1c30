"""Which kind of generator a model folder holds, read from its ``config.json``.

A folder is never loaded in a layout it is not in: an original-format LLaVA folder (``model_type: llava`` with
flat Llama fields and ``mm_vision_tower``) opened as transformers' ``LlavaForConditionalGeneration`` would
build a default-size model whose key names do not match and fill it at random.

- ``llava-original``: the LLaVA repository's own format (``LlavaLlamaForCausalLM``), e.g. the paper's fine-tuned
  LLaVA-1.5-7B; converted on load by :mod:`omgm.generate.generators.llava_original`.
- ``llava-hf``: transformers' LLaVA (``text_config`` + ``vision_config``), e.g. ``llava-hf/llava-1.5-7b-hf``.
- ``internvl-remote``: InternVL's remote-code format (``auto_map`` -> ``InternVLChatModel``).
- ``vlm-hf``: another transformers image-text-to-text model.
- ``chat-llm``: a causal language model with a chat template (Llama-3, Mistral, ...).
"""
from __future__ import annotations

import json
from pathlib import Path

from omgm.errors import OmgmError

LAYOUTS = ("llava-original", "llava-hf", "internvl-remote", "vlm-hf", "chat-llm")


class LayoutError(OmgmError, ValueError):
    """A folder that is not a generator this project can load; the message says what was found."""


def read_config(folder: str | Path) -> dict:
    p = Path(folder) / "config.json"
    if not p.is_file():
        raise LayoutError(f"{folder}: no config.json (expected a model folder)")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise LayoutError(f"{p}: expected a JSON object")
    return cfg


def layout_of(cfg: dict, where: str = "") -> str:
    """The layout of a parsed ``config.json`` (see the module docstring)."""
    archs = cfg.get("architectures") or []
    auto = json.dumps(cfg.get("auto_map") or {})
    if "InternVLChat" in auto or "InternVLChatModel" in archs:
        return "internvl-remote"
    if cfg.get("model_type") == "llava" or "LlavaLlamaForCausalLM" in archs:
        if "text_config" in cfg or "vision_config" in cfg:
            return "llava-hf"
        if "mm_vision_tower" in cfg or "LlavaLlamaForCausalLM" in archs:
            return "llava-original"
        raise LayoutError(f"{where}: model_type 'llava' but neither transformers' layout (text_config/"
                          f"vision_config) nor LLaVA's original one (mm_vision_tower)")
    if "vision_config" in cfg:
        return "vlm-hf"
    if "hidden_size" in cfg or "text_config" in cfg or "auto_map" in cfg:
        return "chat-llm"
    raise LayoutError(f"{where}: config.json describes no language model this project can load "
                      f"(model_type {cfg.get('model_type')!r}); expected {', '.join(LAYOUTS)}")


def detect_layout(folder: str | Path) -> str:
    return layout_of(read_config(folder), str(folder))
