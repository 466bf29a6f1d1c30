"""The step-3 generators, one module per family, behind :func:`build_generator`.

``--answer_generator`` names (the official script's) and their default models:

==============  ======================================  =======================  ===============
name            default model                           family (layout)          new tokens
==============  ======================================  =======================  ===============
``llava1_5``    ``llava-hf/llava-1.5-7b-hf``            llava-hf                 200
``internvl2_5`` ``OpenGVLab/InternVL2_5-8B``            InternVL remote code     128
``llama3``      ``meta-llama/Meta-Llama-3-8B-Instruct`` chat LLM                 128
``mistral``     ``mistralai/Mistral-7B-Instruct-v0.2``  chat LLM (pad id 2)      128
==============  ======================================  =======================  ===============

``--llm_checkpoint`` replaces the default model; its layout is read from its ``config.json``, so the paper's
fine-tuned LLaVA-1.5-7B (original LLaVA format) loads with ``--answer_generator llava1_5 --llm_checkpoint DIR``.
A local folder may also be given as ``--answer_generator`` itself. A LoRA adapter folder (``adapter_config.json``)
loads its base model (``base_model_name_or_path``) and merges the adapter into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omgm.generate.generators.adapters import adapter_base, apply_adapter, is_adapter_folder
from omgm.generate.generators.base import Generator, GeneratorError, GenRequest
from omgm.generate.layouts import detect_layout, layout_of
from omgm.generate.prompts import check_style
from omgm.hub import looks_local

KNOWN = {
    "llava1_5": ("llava-hf/llava-1.5-7b-hf", "llava-hf", 200),
    "internvl2_5": ("OpenGVLab/InternVL2_5-8B", "internvl-remote", 128),
    "llama3": ("meta-llama/Meta-Llama-3-8B-Instruct", "chat-llm", 128),
    "mistral": ("mistralai/Mistral-7B-Instruct-v0.2", "chat-llm", 128),
}
ALLOWED = {"llava1_5": ("llava-hf", "llava-original"), "internvl2_5": ("internvl-remote", "vlm-hf"),
           "llama3": ("chat-llm",), "mistral": ("chat-llm",)}
NEW_TOKENS = {"llava-hf": 200, "llava-original": 200, "vlm-hf": 200, "internvl-remote": 128, "chat-llm": 128}

__all__ = ["GenRequest", "Generator", "GeneratorError", "GeneratorSpec", "build_generator", "list_generators",
           "KNOWN"]


@dataclass
class GeneratorSpec:
    """What ``--answer_generator`` and its companion flags name."""

    answer_generator: str = "llava1_5"
    llm_checkpoint: str | None = None
    prompt_style: str = "official"
    device: str | None = None
    dtype: str | None = None
    max_new_tokens: int | None = None
    attn_implementation: str | None = None
    vision_tower: str | None = None
    engine: str = "transformers"            # or "vllm" (optional, CUDA)


def list_generators() -> dict[str, str]:
    return {name: f"{hub} ({family}, {n} new tokens)" for name, (hub, family, n) in KNOWN.items()}


def _hub_layout(repo_id: str) -> str | None:
    """The layout of a hub model whose config.json is in the local cache (or downloadable), else None."""
    try:
        import json

        from huggingface_hub import hf_hub_download

        return layout_of(json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text()), repo_id)
    except Exception:  # noqa: BLE001 - not cached and offline, or not a model repository
        return None


def resolve(spec: GeneratorSpec) -> tuple[str, str, str]:
    """``(path, layout, kind)`` for a spec, with a one-line error for a name or folder that does not fit."""
    name = spec.answer_generator
    if name in KNOWN:
        hub_id, default_layout, _ = KNOWN[name]
        path = spec.llm_checkpoint or hub_id
    elif (Path(name) / "config.json").is_file():
        path, default_layout = spec.llm_checkpoint or name, None
    else:
        raise GeneratorError(f"unknown generator {name!r}: use one of {', '.join(KNOWN)} or a local model folder "
                             f"(with config.json)")
    if Path(path).expanduser().is_dir():
        layout = detect_layout(Path(path).expanduser())
    elif looks_local(path):
        raise GeneratorError(f"{path}: no such model folder")
    elif name in KNOWN and path == KNOWN[name][0]:
        layout = default_layout
    else:
        layout = _hub_layout(path)
        if layout is None:
            raise GeneratorError(f"{path}: not a local folder, and its config.json is not in the Hugging Face cache "
                                 f"(offline?): cannot tell which kind of model it is")
    if name in ALLOWED and layout not in ALLOWED[name]:
        raise GeneratorError(f"--answer_generator {name}: {path} is a {layout} folder; expected "
                             f"{' or '.join(ALLOWED[name])}")
    kind = "mistral" if name == "mistral" else "llama3"
    return str(path), layout, kind


def build_generator(spec: GeneratorSpec) -> Generator:
    """The generator a spec names, loaded strictly (see the module docstring)."""
    check_style(spec.prompt_style)
    adapter = _adapter_of(spec)
    if adapter:
        return _with_adapter(spec, adapter)
    path, layout, kind = resolve(spec)
    n = spec.max_new_tokens or NEW_TOKENS[layout]
    common = dict(style=spec.prompt_style, device=spec.device, dtype=spec.dtype, max_new_tokens=n)
    if spec.engine not in ("transformers", "vllm"):
        raise GeneratorError(f"unknown engine {spec.engine!r}: transformers or vllm")
    if spec.engine == "vllm" and layout in ("llava-original", "internvl-remote"):
        raise GeneratorError(f"--engine vllm does not serve {layout} folders ({path}); use --engine transformers")
    if layout == "llava-original":
        from omgm.generate.generators.llava_original import OriginalLlavaGenerator

        return OriginalLlavaGenerator(path, vision_tower=spec.vision_tower, **common)
    if spec.vision_tower:
        raise GeneratorError(f"--vision_tower applies to original-format LLaVA folders only; {path} is {layout}")
    if layout == "internvl-remote":
        from omgm.generate.generators.internvl import InternVLGenerator

        return InternVLGenerator(path, **common)
    vllm = spec.engine == "vllm"
    if layout in ("llava-hf", "vlm-hf"):
        from omgm.generate.generators.llava_hf import HFVisionGenerator

        base = HFVisionGenerator(path, attn=spec.attn_implementation, load_model=not vllm, **common)
    else:
        from omgm.generate.generators.chat_llm import ChatLLMGenerator

        base = ChatLLMGenerator(path, kind=kind, attn=spec.attn_implementation, load_model=not vllm, **common)
    if not vllm:
        return base
    from omgm.generate.generators.vllm_engine import VllmGenerator

    return VllmGenerator(base, path, spec.dtype)


def _adapter_of(spec: GeneratorSpec) -> str | None:
    path = spec.llm_checkpoint or spec.answer_generator
    return path if is_adapter_folder(path) else None


def _with_adapter(spec: GeneratorSpec, adapter: str) -> Generator:
    """The base model's generator with the adapter merged into its weights."""
    from dataclasses import replace

    if spec.engine != "transformers":
        raise GeneratorError(f"{adapter}: a LoRA adapter runs with --engine transformers; merge it first "
                             f"(omgm step3 train --merge_lora 1) to serve it with {spec.engine}")
    base = adapter_base(adapter)
    if is_adapter_folder(base):
        raise GeneratorError(f"{adapter}: its base {base} is itself an adapter folder")
    name = spec.answer_generator if spec.llm_checkpoint else \
        next((n for n, (hub, _, _) in KNOWN.items() if hub == base), base)
    gen = build_generator(replace(spec, answer_generator=name, llm_checkpoint=base if spec.llm_checkpoint else None))
    if gen.family not in ("llava-hf", "chat-llm"):
        raise GeneratorError(f"{adapter}: adapters are applied to llava-hf LLaVA or chat-LLM models; {base} is "
                             f"{gen.family}")
    gen.model = apply_adapter(gen.model, adapter)
    gen.name = f"{gen.name}+{Path(adapter).name}"
    return gen

