"""The optional vLLM engine: refused clearly where it cannot run; on a CUDA machine with vLLM, the same greedy
answers as the transformers path (skipped elsewhere, as in CI)."""
import importlib.util

import pytest
import torch

from omgm.generate.generators import GeneratorError, GeneratorSpec, build_generator
from omgm.generate.generators.base import GenRequest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is usable here")
def test_vllm_engine_without_vllm_or_cuda_is_one_clear_error(tiny_step3_models):
    with pytest.raises(GeneratorError, match="--engine vllm needs"):
        build_generator(GeneratorSpec(str(tiny_step3_models.llm), device="cpu", engine="vllm"))


def test_vllm_engine_refuses_layouts_it_does_not_serve():
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "llava_original" / "llava-v1.5-tiny"
    with pytest.raises(GeneratorError, match="--engine vllm does not serve llava-original"):
        build_generator(GeneratorSpec("llava1_5", str(fixture), device="cpu", engine="vllm"))


@pytest.mark.skipif(not HAVE_VLLM, reason="needs CUDA and vLLM")
def test_vllm_answers_equal_the_transformers_path(tiny_step3_models):
    reqs = [GenRequest(f"question {i}?", "context " * (i + 1), "infoseek" if i % 2 else "evqa") for i in range(6)]
    ref = build_generator(GeneratorSpec(str(tiny_step3_models.llm), device="cuda", dtype="fp32", max_new_tokens=8))
    fast = build_generator(GeneratorSpec(str(tiny_step3_models.llm), device="cuda", dtype="fp32", max_new_tokens=8,
                                         engine="vllm"))
    assert fast.generate(reqs, batch_size=6) == ref.generate(reqs)
