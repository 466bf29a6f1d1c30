"""Chat LLMs (Llama-3-8B-Instruct, Mistral-7B-Instruct-v0.2, or any folder with a chat template).

``official`` style, as the published code: system + user messages (:func:`omgm.generate.prompts.chat_messages`)
rendered by the tokenizer's chat template with the generation prompt, tokenized without extra special tokens
and cut to 8,000 tokens from the end; greedy, 128 new tokens, stopping at the EOS id or at whatever id
``<|eot_id|>`` has in this tokenizer; pad id = EOS (Llama-3) or 2 (Mistral); the answer is the new tokens
decoded without special tokens, not stripped. A template that rejects the system role (older Mistral
revisions) gets the system text folded into the user turn, and ``rendering`` says so.

``omgm`` style: the same messages, no cut from the end (the context is cut instead), answers stripped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omgm.devices import resolve_device, torch_dtype
from omgm.generate.decoding import restore_v4_decoding
from omgm.generate.generators.base import Generator, GenRequest, attn_implementation, greedy_ids
from omgm.generate.generators.prefix import SharedPrefixGenerator
from omgm.generate.prompts import chat_messages, check_style, merge_system
from omgm.hub import load_pretrained

MAX_CHAT_TOKENS = 8000


class ChatLLMGenerator(Generator):
    family = "chat-llm"

    def __init__(self, path: str | Path, kind: str = "llama3", style: str = "official", device: str | None = None,
                 dtype: str | None = None, max_new_tokens: int = 128, attn: str | None = None,
                 load_model: bool = True) -> None:
        self.style, self.kind = check_style(style), kind
        self.device = resolve_device(device)
        self.tokenizer = restore_v4_decoding(load_pretrained("AutoTokenizer", path, what="generator tokenizer"))
        self.model = load_pretrained("AutoModelForCausalLM", path, what="generator",
                                     dtype=torch_dtype(dtype, self.device),
                                     attn_implementation=attn_implementation(attn)).to(self.device).eval() \
            if load_model else None
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids("<|eot_id|>")
        self.eos_ids = [i for i in (tok.eos_token_id, eot) if i is not None]
        self.pad_id = 2 if kind == "mistral" else tok.eos_token_id
        self.max_new_tokens, self.name = max_new_tokens, f"{kind}:{path}"
        self.rendering = "chat template with a system message"
        self.shared = SharedPrefixGenerator(self.model) if load_model else None   # batches share the prefix

    def render(self, req: GenRequest) -> str:
        msgs = chat_messages(req.question, req.context, req.dataset)
        try:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - jinja templates raise their own error types for a system role
            self.rendering = "system message folded into the first user turn (the template has no system role)"
            return self.tokenizer.apply_chat_template(merge_system(msgs), tokenize=False, add_generation_prompt=True)

    def input_ids(self, req: GenRequest) -> list[int]:
        ids = self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"]
        return ids[:MAX_CHAT_TOKENS] if self.style == "official" else ids

    def prompt_length(self, req: GenRequest) -> int:
        return len(self.input_ids(req))

    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        rows = [self.input_ids(r) for r in reqs]
        out = self.shared.generate(rows, self.pad_id, self.max_new_tokens, self.eos_ids)
        if out is None:
            out = greedy_ids(self.model, rows, self.pad_id, self.max_new_tokens, eos_ids=self.eos_ids)
        texts = [self.tokenizer.decode(o, skip_special_tokens=True) for o in out]
        return texts if self.style == "official" else [t.strip() for t in texts]
