"""vLLM as an optional generation engine (``--engine vllm``; ``pip install 'omgm[vllm]'``, CUDA only).

The transformers path stays the reference. With vLLM the prompts are the same token ids (chat LLMs) or the
same rendered text and image (llava-hf VLMs), decoding is greedy (temperature 0) with the same stop ids and
budget of new tokens, and vLLM's automatic prefix caching shares the published prompts' common prefix across
requests. Original-format LLaVA and InternVL's remote code are not served by vLLM (use the transformers engine).
For several GPUs, run one process per GPU as ranks *alone* (``CUDA_VISIBLE_DEVICES=r RANK=r WORLD_SIZE=n``),
then the same command once more to merge (see docs/scale.md): vLLM sets up its own process group.

NOT RUN ON A GPU IN THIS REPOSITORY: ``tests/test_vllm.py`` compares vLLM's answers with the transformers
path's and is skipped where CUDA or vLLM is missing (as in CI).
"""
from __future__ import annotations

from typing import Sequence

from omgm.generate.generators.base import Generator, GeneratorError, GenRequest

VLLM_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def require_vllm():
    try:
        import vllm
    except ImportError:
        raise GeneratorError("--engine vllm needs vLLM: pip install 'omgm[vllm]' (CUDA only)") from None
    import torch

    if not torch.cuda.is_available():
        raise GeneratorError("--engine vllm needs a CUDA GPU; use --engine transformers on the CPU")
    return vllm


def make_llm(path: str, dtype: str | None = None, max_model_len: int | None = None):
    """A vLLM engine on one GPU with automatic prefix caching."""
    vllm = require_vllm()
    return vllm.LLM(model=str(path), dtype=VLLM_DTYPES.get(dtype or "", "auto"), enable_prefix_caching=True,
                    seed=0, tensor_parallel_size=1, max_model_len=max_model_len)


class VllmGenerator(Generator):
    """A transformers-path generator's prompts (``base``, loaded without its weights) answered by vLLM."""

    def __init__(self, base: Generator, path: str, dtype: str | None = None, max_model_len: int | None = None) -> None:
        # which families vLLM serves is their FAMILIES row's ``vllm`` (checked by build_generator)
        self.base, self.llm = base, make_llm(path, dtype, max_model_len)
        self.family, self.needs_image, self.style = base.family, base.needs_image, base.style
        self.max_new_tokens, self.tokenizer, self.name = base.max_new_tokens, base.tokenizer, f"vllm:{base.name}"

    def render(self, req: GenRequest) -> str:
        return self.base.render(req)

    def cut_tokens(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.base.cut_tokens(text, max_tokens)

    def generate(self, reqs: Sequence[GenRequest], batch_size: int = 1) -> list[str]:
        return self._generate(reqs) if reqs else []          # vLLM schedules the whole list itself

    def _sampling(self, stop_ids: Sequence[int] | None):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens, stop_token_ids=list(stop_ids or []),
                              skip_special_tokens=True)

    def _generate(self, reqs: Sequence[GenRequest]) -> list[str]:
        b = self.base
        if not b.needs_image:                     # a text-only model: its token ids; a VLM: prompt + image
            from vllm.inputs import TokensPrompt

            outs = self.llm.generate([TokensPrompt(prompt_token_ids=b.input_ids(r)) for r in reqs],
                                     self._sampling(b.eos_ids), use_tqdm=False)
            texts = [b.tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outs]
            return texts if b.style == "official" else [t.strip() for t in texts]
        from omgm.data.images import load_image

        if any(r.image is None for r in reqs):
            raise GeneratorError(f"{self.name} reads the query image: every request needs one")
        outs = self.llm.generate([{"prompt": b.render(r), "multi_modal_data": {"image": load_image(r.image)}}
                                  for r in reqs], self._sampling(None), use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outs]
