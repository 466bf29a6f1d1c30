"""Device and precision choices shared by every model wrapper."""
from __future__ import annotations

import argparse
from typing import Any

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: the GPU when there is one, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(name: str | None, device: torch.device, gpu_default: str = "bf16") -> torch.dtype:
    """``fp16``/``bf16``/``fp32``; by default ``gpu_default`` on a GPU and fp32 on the CPU."""
    key = name or (gpu_default if device.type == "cuda" else "fp32")
    if key not in _DTYPES:
        raise ValueError(f"unknown precision {key!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[key]


def device_name(text: str | None) -> str | None:
    """A ``--device`` value: ``auto`` (or nothing) -> None, the GPU when there is one; else a torch device name."""
    if text in (None, "", "auto"):
        return None
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: cpu, cuda, cuda:N or auto") from None
    return str(text)


device_name.validates = True          # type: ignore[attr-defined]  # config-file values are checked too


def device_setting() -> Any:
    """The one ``--device`` setting every stage has."""
    from omgm.settings import setting

    return setting(None, type=device_name, help="cpu, cuda, cuda:N, or auto: the GPU when there is one")
