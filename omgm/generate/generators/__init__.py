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

The names are rows of :data:`NAMES`, the model layouts rows of :data:`FAMILIES` (a new family: its module
and one row there). ``--llm_checkpoint`` replaces the default model; its layout is read from its ``config.json``, so the paper's
fine-tuned LLaVA-1.5-7B (original LLaVA format) loads with ``--answer_generator llava1_5 --llm_checkpoint DIR``.
A local folder may also be given as ``--answer_generator`` itself. A LoRA adapter folder (``adapter_config.json``)
loads its base model (``base_model_name_or_path``) and merges the adapter into it.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Callable

from omgm.config import positive_int
from omgm.devices import device_setting
from omgm.generate.generators.adapters import adapter_base, apply_adapter, is_adapter_folder
from omgm.generate.generators.base import Generator, GeneratorError, GenRequest
from omgm.generate.layouts import layout_of, read_config
from omgm.generate.prompts import PROMPT_STYLES, check_style
from omgm.hub import looks_local
from omgm.settings import setting

__all__ = ["GenRequest", "Generator", "GeneratorError", "GeneratorSpec", "build_generator", "list_generators",
           "FAMILIES", "NAMES", "Family", "register_family"]


@dataclass
class GeneratorSpec:
    """What ``--answer_generator`` and its companion flags name (the flags are made from these fields)."""

    answer_generator: str = setting("llava1_5", help="a registered name (omgm list-models) or a local model folder")
    llm_checkpoint: str | None = setting(help="other weights for the generator: a llava-hf or original-format LLaVA "
                                              "folder, a chat LLM, a LoRA adapter folder...")
    _: KW_ONLY
    prompt_style: str = setting("official", choices=PROMPT_STYLES, help="official: the published prompts (reproduces "
                                                                        "the paper); omgm: every VLM sees the image")
    device: str | None = device_setting()
    dtype: str | None = setting(choices=("bf16", "fp16", "fp32"),
                                help="default: bf16 on GPU (LLaVA fp16), fp32 on CPU")
    max_new_tokens: int | None = setting(type=positive_int, help="default: the family's (200 for LLaVA, 128 otherwise)")
    attn_implementation: str | None = setting(help="sdpa (default) or flash_attention_2 if installed")
    vision_tower: str | None = setting(help="original-format LLaVA: use this CLIP folder, not mm_vision_tower")
    engine: str = setting("transformers", choices=("transformers", "vllm"),
                          help="vllm: optional, CUDA only, chat LLMs and llava-hf VLMs (transformers is the reference)")


@dataclass(frozen=True)
class Family:
    """A model layout omgm can run, everything about it in one row: its loader ``(path, spec, common kwargs) ->
    Generator``, its default answer length, whether vLLM may serve it, whether ``omgm step3 train`` (and LoRA
    adapters) may fine-tune it and whether its training examples carry the image (its processor expands the image
    token), the text its official answer follows (``answer_marker``: the published split of llava-hf's decode;
    None: the answer is the new tokens), and ``detect``: a test of a folder's parsed ``config.json`` that claims
    folders for this family (for families added with :func:`register_family`; the built-in layouts are told apart
    by :mod:`omgm.generate.layouts`)."""

    load: Callable[[str, GeneratorSpec, dict], Generator]
    new_tokens: int
    vllm: bool = False
    finetune: bool = False
    train_image: bool = False
    answer_marker: str | None = None
    detect: Callable[[dict], bool] | None = None


@dataclass(frozen=True)
class Name:
    """A registered ``--answer_generator`` name: its default model and the layouts its weights may have (the
    first is the default model's)."""

    hub_id: str
    layouts: tuple[str, ...]
    chat: str = "llama3"                # the chat template family of a chat LLM


def _llava_original(path: str, spec: GeneratorSpec, common: dict) -> Generator:
    from omgm.generate.generators.llava_original import OriginalLlavaGenerator

    return OriginalLlavaGenerator(path, vision_tower=spec.vision_tower, **common)


def _internvl(path: str, spec: GeneratorSpec, common: dict) -> Generator:
    from omgm.generate.generators.internvl import InternVLGenerator

    return InternVLGenerator(path, **common)


def _llava_hf(path: str, spec: GeneratorSpec, common: dict) -> Generator:
    from omgm.generate.generators.llava_hf import HFVisionGenerator

    return HFVisionGenerator(path, attn=spec.attn_implementation, load_model=spec.engine != "vllm",
                             answer_marker=FAMILIES["llava-hf"].answer_marker, **common)


def _vlm_hf(path: str, spec: GeneratorSpec, common: dict) -> Generator:
    """Another transformers image-text-to-text model: its own chat template, the answer is its new tokens (it
    has no LLaVA "ASSISTANT:" to split on)."""
    from omgm.generate.generators.llava_hf import HFVisionGenerator

    return HFVisionGenerator(path, attn=spec.attn_implementation, answer_marker=FAMILIES["vlm-hf"].answer_marker,
                             **common)


def _chat_llm(path: str, spec: GeneratorSpec, common: dict) -> Generator:
    from omgm.generate.generators.chat_llm import ChatLLMGenerator

    kind = NAMES[spec.answer_generator].chat if spec.answer_generator in NAMES else "llama3"
    return ChatLLMGenerator(path, kind=kind, attn=spec.attn_implementation, load_model=spec.engine != "vllm",
                            **common)


# layout (see omgm.generate.layouts) -> family; a new family is a module and a row here
FAMILIES: dict[str, Family] = {
    "llava-hf": Family(_llava_hf, 200, vllm=True, finetune=True, train_image=True, answer_marker="ASSISTANT:"),
    "vlm-hf": Family(_vlm_hf, 128),
    "llava-original": Family(_llava_original, 200),
    "internvl-remote": Family(_internvl, 128),
    "chat-llm": Family(_chat_llm, 128, vllm=True, finetune=True),
}
# the official script's --answer_generator names; a new name is a row here
NAMES: dict[str, Name] = {
    "llava1_5": Name("llava-hf/llava-1.5-7b-hf", ("llava-hf", "llava-original")),
    "internvl2_5": Name("OpenGVLab/InternVL2_5-8B", ("internvl-remote", "vlm-hf")),
    "llama3": Name("meta-llama/Meta-Llama-3-8B-Instruct", ("chat-llm",)),
    "mistral": Name("mistralai/Mistral-7B-Instruct-v0.2", ("chat-llm",), chat="mistral"),
}


def register_family(layout: str, family: Family) -> None:
    """Add a generator family from your own code: folders whose ``config.json`` ``family.detect`` accepts load
    with ``family.load`` (``--answer_generator FOLDER``). A layout already taken is refused."""
    if layout in FAMILIES:
        raise GeneratorError(f"generator family {layout!r} is already registered")
    if family.detect is None:
        raise GeneratorError(f"generator family {layout!r}: give it a detect(config) test to recognise its folders")
    FAMILIES[layout] = family


def folder_layout(folder: str | Path) -> str:
    """The family of a model folder: a registered family's ``detect`` first, then the built-in layouts."""
    cfg = read_config(folder)
    for layout, family in FAMILIES.items():
        if family.detect is not None and family.detect(cfg):
            return layout
    return layout_of(cfg, str(folder))


def list_generators() -> dict[str, str]:
    """name -> its default model, layout and answer length (for help texts and ``omgm list-models``)."""
    return {name: f"{n.hub_id} ({n.layouts[0]}, {FAMILIES[n.layouts[0]].new_tokens} new tokens)"
            for name, n in NAMES.items()}


def _hub_layout(repo_id: str) -> str | None:
    """The layout of a hub model whose config.json is in the local cache (or downloadable), else None."""
    try:
        import json

        from huggingface_hub import hf_hub_download

        return layout_of(json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text()), repo_id)
    except Exception:  # noqa: BLE001 - not cached and offline, or not a model repository
        return None


def resolve(spec: GeneratorSpec) -> tuple[str, str]:
    """``(path, layout)`` for a spec, with a one-line error for a name or folder that does not fit."""
    name = spec.answer_generator
    known = NAMES.get(name)
    if known is not None:
        path = spec.llm_checkpoint or known.hub_id
    elif (Path(name) / "config.json").is_file():
        path = spec.llm_checkpoint or name
    else:
        raise GeneratorError(f"unknown generator {name!r}: use one of {', '.join(NAMES)} or a local model folder "
                             f"(with config.json)")
    if Path(path).expanduser().is_dir():
        layout = folder_layout(Path(path).expanduser())
    elif looks_local(path):
        raise GeneratorError(f"{path}: no such model folder")
    elif known is not None and path == known.hub_id:
        layout = known.layouts[0]
    else:
        layout = _hub_layout(path)
        if layout is None:
            raise GeneratorError(f"{path}: not a local folder, and its config.json is not in the Hugging Face cache "
                                 f"(offline?): cannot tell which kind of model it is")
    if known is not None and layout not in known.layouts:
        raise GeneratorError(f"--answer_generator {name}: {path} is a {layout} folder; expected "
                             f"{' or '.join(known.layouts)}")
    return str(path), layout


def build_generator(spec: GeneratorSpec) -> Generator:
    """The generator a spec names, loaded strictly (see the module docstring)."""
    check_style(spec.prompt_style)
    adapter = _adapter_of(spec)
    if adapter:
        return _with_adapter(spec, adapter)
    path, layout = resolve(spec)
    family = FAMILIES[layout]
    common = dict(style=spec.prompt_style, device=spec.device, dtype=spec.dtype,
                  max_new_tokens=spec.max_new_tokens or family.new_tokens)
    if spec.engine not in ("transformers", "vllm"):
        raise GeneratorError(f"unknown engine {spec.engine!r}: transformers or vllm")
    if spec.engine == "vllm" and not family.vllm:
        raise GeneratorError(f"--engine vllm does not serve {layout} folders ({path}); use --engine transformers")
    if spec.vision_tower and layout != "llava-original":
        raise GeneratorError(f"--vision_tower applies to original-format LLaVA folders only; {path} is {layout}")
    base = family.load(path, spec, common)
    base.family = layout                       # the row it was loaded by: what fine-tuning and vLLM look up
    if spec.engine != "vllm":
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
        next((n for n, known in NAMES.items() if known.hub_id == base), base)
    gen = build_generator(replace(spec, answer_generator=name, llm_checkpoint=base if spec.llm_checkpoint else None))
    if not FAMILIES[gen.family].finetune:
        raise GeneratorError(f"{adapter}: adapters are applied to the fine-tunable families "
                             f"({', '.join(k for k, f in FAMILIES.items() if f.finetune)}); {base} is {gen.family}")
    gen.model = apply_adapter(gen.model, adapter)
    gen.name = f"{gen.name}+{Path(adapter).name}"
    return gen
