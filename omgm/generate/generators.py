"""Answer generators for step 3, all through transformers: batched, left-padded, greedy.

``--answer_generator``:
- ``llava1_5``    -> ``llava-hf/llava-1.5-7b-hf`` (VLM, up to 200 new tokens)
- ``internvl2_5`` -> ``OpenGVLab/InternVL2_5-8B-MPO-hf`` style transformers-format InternVL checkpoints (VLM)
- ``llama3``      -> ``meta-llama/Meta-Llama-3-8B-Instruct`` (chat LLM, 128 new tokens)
- ``mistral``     -> ``mistralai/Mistral-7B-Instruct-v0.2`` (chat LLM; its template has no system role)
- a local folder  -> a VLM if its config has a vision part, else a chat LLM
``--llm_checkpoint`` replaces the weights of the chosen generator with a local fine-tuned folder (the paper's
best generator is a fine-tuned LLaVA-1.5-7B). bf16 on GPU, fp32 on CPU; sdpa attention (flash-attn only if
installed and asked for).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from omgm.data.images import load_image
from omgm.devices import resolve_device, torch_dtype
from omgm.errors import OmgmError
from omgm.generate.prompts import chat_messages, merge_system, vlm_messages

log = logging.getLogger(__name__)

KNOWN = {
    "llava1_5": ("llava-hf/llava-1.5-7b-hf", "vlm", 200),
    "internvl2_5": ("OpenGVLab/InternVL2_5-8B-MPO-hf", "vlm", 128),
    "llama3": ("meta-llama/Meta-Llama-3-8B-Instruct", "llm", 128),
    "mistral": ("mistralai/Mistral-7B-Instruct-v0.2", "llm", 128),
}


class GeneratorError(OmgmError, ValueError):
    """An unknown generator name or an unusable model folder."""


@dataclass
class GenRequest:
    question: str
    section: str
    infoseek: bool
    image: Path | None = None


def greedy_generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, **inputs) -> list[str]:
    """Greedy, left-padded batch generation from rendered prompts; returns only the new text of each."""
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def _attn(attn: str | None) -> str:
    if attn == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            log.warning("flash-attn is not installed: using sdpa")
            return "sdpa"
    return attn or "sdpa"


class Generator:
    name = "generator"
    tokenizer = None
    max_new_tokens = 128

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """Cut ``text`` to ``max_tokens`` tokens of this generator's tokenizer; returns (text, was_cut)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, False
        return self.tokenizer.decode(ids[:max_tokens]), True

    def generate(self, requests: Sequence[GenRequest]) -> list[str]:
        raise NotImplementedError

    def render(self, req: GenRequest) -> str:
        raise NotImplementedError

    def generate_all(self, requests: Sequence[GenRequest], batch_size: int = 8) -> list[str]:
        """Answers in request order, generated in batches of similar prompt length (less left padding)."""
        lengths = [len(self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"]) for r in requests]
        order = sorted(range(len(requests)), key=lengths.__getitem__)
        answers: list[str] = [""] * len(requests)
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            for j, a in zip(chunk, self.generate([requests[k] for k in chunk])):
                answers[j] = a
        return answers


class ChatLMGenerator(Generator):
    def __init__(self, path: str, device: torch.device, dtype: str | None = None, max_new_tokens: int = 128,
                 attn: str | None = None, name: str = "") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, self.max_new_tokens, self.name = device, max_new_tokens, name or str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, device),
                                                          attn_implementation=_attn(attn)).to(device).eval()

    def render(self, req: GenRequest) -> str:
        msgs = chat_messages(req.question, req.section, req.infoseek)
        try:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates raise their own errors for an unsupported system role
            return self.tokenizer.apply_chat_template(merge_system(msgs), tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[GenRequest]) -> list[str]:
        return greedy_generate(self.model, self.tokenizer, [self.render(r) for r in requests], self.max_new_tokens)


class VLMGenerator(Generator):
    def __init__(self, path: str, device: torch.device, dtype: str | None = None, max_new_tokens: int = 200,
                 attn: str | None = None, name: str = "") -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device, self.max_new_tokens, self.name = device, max_new_tokens, name or str(path)
        self.processor = AutoProcessor.from_pretrained(path)
        self.processor.tokenizer.padding_side = "left"
        self.tokenizer = self.processor.tokenizer
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype(dtype, device),
                                                                 attn_implementation=_attn(attn)).to(device).eval()

    def render(self, req: GenRequest) -> str:
        return self.processor.apply_chat_template(vlm_messages(req.question, req.section, req.infoseek),
                                                  add_generation_prompt=True)

    def generate(self, requests: Sequence[GenRequest]) -> list[str]:
        if any(r.image is None for r in requests):
            raise GeneratorError("a VLM generator needs the query image of every sample")
        images = [load_image(r.image) for r in requests]
        enc = self.processor(images=images, text=[self.render(r) for r in requests], return_tensors="pt",
                             padding=True).to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def is_vlm_folder(path: Path) -> bool:
    import json

    cfg = json.loads((path / "config.json").read_text())
    return "vision_config" in cfg or "vision_tower" in json.dumps(cfg)


def build_generator(answer_generator: str, llm_checkpoint: str | None = None, device: str | None = None,
                    dtype: str | None = None, max_new_tokens: int | None = None, attn: str | None = None) -> Generator:
    dev = resolve_device(device)
    if answer_generator in KNOWN:
        hub_id, kind, default_new = KNOWN[answer_generator]
        path = llm_checkpoint or hub_id
    else:
        p = Path(answer_generator)
        if not (p / "config.json").is_file():
            raise GeneratorError(f"unknown generator {answer_generator!r}: use one of {sorted(KNOWN)} or a local "
                                 f"model folder (with config.json)")
        path = llm_checkpoint or str(p)
        kind, default_new = ("vlm", 200) if is_vlm_folder(p) else ("llm", 128)
    cls = VLMGenerator if kind == "vlm" else ChatLMGenerator
    return cls(path, dev, dtype, max_new_tokens or default_new, attn, name=f"{answer_generator}:{path}")
