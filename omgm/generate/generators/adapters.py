"""LoRA adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``, as ``omgm step3 train --tuning
lora`` or PEFT writes them) as step-3 generators: the base model named in ``base_model_name_or_path`` is loaded,
the adapter applied strictly (every saved adapter weight used, every adapter weight of the model filled) and
merged, so generation runs at the base model's speed.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from omgm.generate.generators.base import GeneratorError

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(path: str | Path) -> bool:
    p = Path(path).expanduser()
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def adapter_base(folder: str | Path) -> str:
    """The base model an adapter folder was trained on (a local folder, relative to the adapter's if need be,
    or a hub id)."""
    p = Path(folder).expanduser() / ADAPTER_CONFIG
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeneratorError(f"{p}: not valid JSON ({exc})") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base:
        raise GeneratorError(f"{p}: no base_model_name_or_path, so the model it adapts is unknown")
    beside = Path(folder).expanduser() / base
    return str(beside) if not Path(base).is_absolute() and beside.is_dir() else str(base)


def apply_adapter(model, folder: str | Path):
    """``model`` with the adapter in ``folder`` applied and merged; a clear error when the adapter's weights do
    not match the model's adapter layers one for one."""
    from peft import PeftModel, get_peft_model_state_dict

    try:
        saved = _saved_keys(Path(folder))
        wrapped = PeftModel.from_pretrained(model, str(folder))
    except pickle.UnpicklingError:
        raise GeneratorError(f"{folder}: the adapter's weight file holds pickled objects besides tensors: refused, "
                             f"nothing in it was run") from None
    expected = set(get_peft_model_state_dict(wrapped))
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    if missing or unexpected:
        raise GeneratorError(f"{folder}: adapter does not fit its base model: missing {missing[:3]} "
                             f"({len(missing)}), unexpected {unexpected[:3]} ({len(unexpected)})")
    return wrapped.merge_and_unload().eval()


def _saved_keys(folder: Path) -> set[str]:
    """The adapter weights' names, read from the safetensors header alone where there is one."""
    from peft.utils import SAFETENSORS_WEIGHTS_NAME, load_peft_weights

    if (folder / SAFETENSORS_WEIGHTS_NAME).is_file():
        from safetensors import safe_open

        with safe_open(str(folder / SAFETENSORS_WEIGHTS_NAME), framework="pt") as f:
            return set(f.keys())
    return set(load_peft_weights(str(folder), device="cpu"))
