"""Original-format LLaVA-1.5 folders -> transformers' ``LlavaForConditionalGeneration``, by key mapping.

The LLaVA repository saves ``LlavaLlamaForCausalLM``: a ``config.json`` with ``model_type: llava``, the Llama
fields at top level, and ``mm_vision_tower`` (a hub id such as ``openai/clip-vit-large-patch14-336`` or a
folder), ``mm_projector_type: mlp2x_gelu``, ``mm_vision_select_layer: -2``, ``mm_vision_select_feature:
patch``, ``image_aspect_ratio: pad``; weights ``model.embed_tokens``, ``model.layers.*``, ``model.norm``,
``lm_head``, ``model.mm_projector.{0,2}``, and no vision-tower weights (they come from ``mm_vision_tower``); a
sentencepiece ``tokenizer.model``. Keys map as:

    model.embed_tokens / model.layers.* / model.norm  ->  model.language_model.*
    model.mm_projector.0.* / .2.*                      ->  model.multi_modal_projector.linear_1.* / linear_2.*
    lm_head.*                                          ->  lm_head.*
    vision_model.* of the CLIP tower checkpoint        ->  model.vision_tower.*

Loading is strict: every parameter of the built model must be filled and every checkpoint tensor must be
used, except those known to be unused (rotary ``inv_freq`` buffers of old checkpoints, the CLIP text tower and
projections of a full CLIP checkpoint), which are reported. Like LLaVA's own loader, the embedding and output
matrices are cut to the tokenizer's length when the tokenizer is shorter (``resize_token_embeddings``).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from omgm.checkpoints import read_folder_weights
from omgm.errors import OmgmError
from omgm.generate.layouts import read_config
from omgm.generate.sp_llama import SlowLlamaTokenizer

log = logging.getLogger(__name__)
_LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
               "rope_scaling", "attention_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id",
               "pad_token_id", "initializer_range", "head_dim", "mlp_bias", "attention_dropout")
_IGNORED = [r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"text_model\..*", r"logit_scale",
            r"text_projection\..*", r"visual_projection\..*", r"vision_model\.embeddings\.position_ids"]


class LlavaConversionError(OmgmError, ValueError):
    """An original-format LLaVA folder that cannot be converted; lists what is missing or unexpected."""


@dataclass
class OriginalLlava:
    model: object                       # LlavaForConditionalGeneration
    tokenizer: SlowLlamaTokenizer
    image_processor: object             # CLIPImageProcessor of the vision tower
    config: dict                        # the folder's own config.json
    vision_tower: str
    generation_config: object
    report: list[str] = field(default_factory=list)

    @property
    def max_prompt_tokens(self) -> int | None:
        """LLaVA cuts every input to ``tokenizer_model_max_length`` (2,048 for LLaVA-1.5) before generating."""
        return self.config.get("tokenizer_model_max_length")


def check_supported(cfg: dict, folder: Path) -> None:
    problems = []
    if cfg.get("mm_projector_type", "linear") != "mlp2x_gelu":
        problems.append(f"mm_projector_type {cfg.get('mm_projector_type')!r} (LLaVA-1.5 uses 'mlp2x_gelu')")
    if cfg.get("mm_use_im_start_end"):
        problems.append("mm_use_im_start_end is true (LLaVA-1.5 does not use image start/end tokens)")
    if cfg.get("image_aspect_ratio", "pad") not in ("pad", "square"):
        problems.append(f"image_aspect_ratio {cfg.get('image_aspect_ratio')!r} (LLaVA-1.5: 'pad')")
    if cfg.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        problems.append(f"mm_vision_select_feature {cfg.get('mm_vision_select_feature')!r}")
    if problems:
        raise LlavaConversionError(f"{folder} is not an original-format LLaVA-1.5 folder this converter supports: "
                                   + "; ".join(problems))


def resolve_tower(name: str, folder: Path) -> Path:
    """The vision tower's local folder: a path, or a hub id already in the Hugging Face cache (or downloadable)."""
    from omgm.hub import ModelLoadError, explain, looks_local

    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if looks_local(name):
        raise ModelLoadError(f"vision tower of {folder}: no such folder {p} (mm_vision_tower in config.json; "
                             f"pass --vision_tower DIR to use another copy)")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        return Path(snapshot_download(name, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types
        raise ModelLoadError(explain(name, f"vision tower of {folder} (mm_vision_tower; or pass --vision_tower)",
                                     exc)) from None


def build_config(cfg: dict, tower: Path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig.from_pretrained(str(tower))
    text = LlamaConfig(**{k: cfg[k] for k in _LLAMA_KEYS if k in cfg})
    strategy = "default" if cfg.get("mm_vision_select_feature", "patch") == "patch" else "full"
    return LlavaConfig(vision_config=vision, text_config=text, projector_hidden_act="gelu",
                       vision_feature_layer=cfg.get("mm_vision_select_layer", -2),
                       vision_feature_select_strategy=strategy, image_token_id=text.vocab_size,
                       image_seq_length=(vision.image_size // vision.patch_size) ** 2,
                       multimodal_projector_bias=True)


def map_keys(llava_sd: dict, tower_sd: dict) -> tuple[dict, dict[str, list[str]]]:
    """``{new name: tensor}`` and ``{source: [ignored keys]}``; unmappable keys stay under ``"unexpected"``."""
    out, ignored = {}, {"llava": [], "tower": [], "unexpected": []}
    rules = [(r"model\.(embed_tokens|layers|norm)\.(.+)", r"model.language_model.\1.\2"),
             (r"model\.mm_projector\.0\.(.+)", r"model.multi_modal_projector.linear_1.\1"),
             (r"model\.mm_projector\.2\.(.+)", r"model.multi_modal_projector.linear_2.\1"),
             (r"lm_head\.(.+)", r"lm_head.\1"),
             (r"model\.vision_tower\.vision_tower\.vision_model\.(.+)", r"model.vision_tower.\1")]
    for source, sd, table in (("llava", llava_sd, rules), ("tower", tower_sd, [(r"vision_model\.(.+)",
                                                                                  r"model.vision_tower.\1")])):
        for key, t in sd.items():
            if any(re.fullmatch(p, key) for p in _IGNORED):
                ignored[source].append(key)
                continue
            new = next((re.sub(p, r, key) for p, r in table if re.fullmatch(p, key)), None)
            if new is None:
                ignored["unexpected"].append(f"{source}: {key}")
            elif new in out:
                ignored[source].append(key)         # the checkpoint's own tower weights win over the tower's
            else:
                out[new] = t
    return out, ignored


def load_original_llava(folder: str | Path, vision_tower: str | None = None, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> OriginalLlava:
    """Convert and load an original-format LLaVA-1.5 folder (see the module docstring)."""
    from accelerate import init_empty_weights
    from transformers import GenerationConfig, LlavaForConditionalGeneration

    from omgm.hub import load_pretrained

    folder = Path(folder)
    cfg = read_config(folder)
    check_supported(cfg, folder)
    tower_name = vision_tower or cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if not tower_name:
        raise LlavaConversionError(f"{folder}/config.json names no mm_vision_tower; pass --vision_tower DIR")
    tower = resolve_tower(str(tower_name), folder)
    tokenizer = SlowLlamaTokenizer(folder)
    config = build_config(cfg, tower)
    llava_sd = read_folder_weights(folder)
    tower_sd = {} if any(k.startswith("model.vision_tower.") for k in llava_sd) else read_folder_weights(tower)
    mapped, ignored = map_keys(llava_sd, tower_sd)
    with init_empty_weights(include_buffers=False):          # parameters on meta, buffers (rope) computed
        model = LlavaForConditionalGeneration(config)
    _check_strict(model, mapped, ignored["unexpected"], folder, tower)
    model.load_state_dict({k: v.to(dtype) for k, v in mapped.items()}, strict=True, assign=True)
    report = [f"converted {len(mapped)} tensors ({len(llava_sd)} from {folder}, vision tower from {tower})"]
    report += [f"ignored {len(v)} {src} keys that LLaVA does not use: {_groups(v)}" for src, v in ignored.items()
               if v and src != "unexpected"]
    report += _match_tokenizer(model, tokenizer, cfg, folder)
    model.config.dtype = dtype
    gen = (GenerationConfig.from_pretrained(str(folder)) if (folder / "generation_config.json").is_file()
           else GenerationConfig(bos_token_id=cfg.get("bos_token_id"), eos_token_id=cfg.get("eos_token_id"),
                                 pad_token_id=cfg.get("pad_token_id")))
    model.generation_config = gen
    return OriginalLlava(model.to(device).eval(), tokenizer,
                         load_pretrained("AutoImageProcessor", tower, what="LLaVA vision tower processor"), cfg,
                         str(tower_name), gen, report)


def _groups(keys: list[str]) -> str:
    from collections import Counter

    counts = Counter(k.split(".")[0] + (".*" if "." in k else "") for k in keys)
    return ", ".join(f"{g} ({n})" for g, n in sorted(counts.items()))


def _check_strict(model, mapped: dict, unexpected: list[str], folder: Path, tower: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    unexpected = unexpected + [k for k in mapped if k not in own]
    shapes = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in mapped
              if k in own and tuple(mapped[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise LlavaConversionError(
            f"{folder} (vision tower {tower}) does not fit LLaVA-1.5 as its config.json describes it:"
            + (f"\n  missing ({len(missing)}): {missing[:6]}" if missing else "")
            + (f"\n  unexpected ({len(unexpected)}): {unexpected[:6]}" if unexpected else "")
            + (f"\n  wrong shape ({len(shapes)}): {shapes[:4]}" if shapes else ""))


def _match_tokenizer(model, tokenizer: SlowLlamaTokenizer, cfg: dict, folder: Path) -> list[str]:
    """LLaVA's loader adds ``<im_patch>`` (``mm_use_im_patch_token``, default true) and resizes the embeddings
    to the tokenizer's length: cut rows when shorter; growing would add random rows, which we refuse."""
    if cfg.get("mm_use_im_patch_token", True):
        tokenizer.add_tokens(["<im_patch>"])
    n, rows = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    if n > rows:
        raise LlavaConversionError(
            f"{folder}: the tokenizer has {n} tokens but the model only {rows} embedding rows; LLaVA's loader would "
            f"add {n - rows} randomly initialised rows, which cannot be reproduced")
    if n == rows:
        return []
    model.resize_token_embeddings(n)
    return [f"embedding and output rows cut from {rows} to the tokenizer's {n} tokens (as LLaVA's loader does)"]
