"""Bytes around the models, equal to what the authors' libraries produced (transformers 4.37, Pillow 10.3,
TensorFlow-Text 2.15): decoded answers, the pixels of every image path, BEM's input ids and segment ids.

The references were recorded by ``tests/fixtures/faithful/record.py`` in a separate environment with those
versions (its docstring says how). A failure here after a dependency upgrade names the input and the path whose
bytes changed: pin the dependency back or reproduce the old behaviour, and record the difference in
docs/faithfulness.md.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

FIX = Path(__file__).resolve().parent / "fixtures" / "faithful"
REF = json.loads((FIX / "reference.json").read_text())
_spec = importlib.util.spec_from_file_location("faithful_inputs", FIX / "inputs.py")
inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inputs)
IMAGES = inputs.images()


def _digest(a) -> dict:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest(), "sum": float(a.sum(dtype=np.float64))}


def _same(got: dict, want: dict, what: str) -> None:
    assert got["shape"] == want["shape"], f"{what}: shape {got['shape']} != recorded {want['shape']}"
    assert got["sha256"] == want["sha256"], (
        f"{what}: bytes differ from the reference recorded with {REF['versions']} "
        f"(sum {got['sum']:.6f} vs {want['sum']:.6f})")


# ---- pixels ---------------------------------------------------------------------------------------------------
def _processor(name: str):
    from omgm.hub import load_pretrained

    return load_pretrained("CLIPImageProcessor", FIX / "processors" / name, what="test processor")


def _pixel_paths():
    from omgm.data.images import clip_eval_transform
    from omgm.generate.generators.internvl import internvl_pixels
    from omgm.generate.generators.llava_original import OriginalLlavaGenerator
    from omgm.rerank.inputs import image_transform
    from omgm.retrieval.encoders import HFClipRetriever

    step1 = SimpleNamespace(processor=_processor("clip224"))                # EVA-CLIP-8B / MMRet-CLIP queries
    p336 = _processor("clip336")
    llava = SimpleNamespace(llava=SimpleNamespace(image_processor=p336, config={"image_aspect_ratio": "pad"}))
    clip_tf, rerank_tf = clip_eval_transform(224), image_transform()
    return {
        "clip224": lambda im: HFClipRetriever.preprocess(step1, im),
        "clip336": lambda im: p336(images=im, return_tensors="pt")["pixel_values"][0],   # llava-hf's tower
        "llava_pad336": lambda im: OriginalLlavaGenerator.pixels(llava, im)[0],
        "internvl": internvl_pixels,
        "clip_torchvision224": clip_tf,                                     # open_clip / VISTA / EVA eval
        "rerank224": rerank_tf,                                             # the reranker's query and sections
    }


PATHS = ["clip224", "clip336", "llava_pad336", "internvl", "clip_torchvision224", "rerank224"]


@pytest.fixture(scope="module")
def pixel_paths():
    return _pixel_paths()


@pytest.mark.parametrize("image", sorted(REF["pixels"]))
def test_decoded_rgb_images_match(image):
    _same(_digest(np.asarray(IMAGES[image].convert("RGB"))), REF["pixels"][image]["rgb"], f"{image} as RGB")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("image", sorted(REF["pixels"]))
def test_pixels_match_the_reference(pixel_paths, image, path):
    rgb = IMAGES[image].convert("RGB")
    _same(_digest(pixel_paths[path](rgb)), REF["pixels"][image][path], f"{image} through {path}")


def test_open_clip_transform_matches_the_reference():
    open_clip = pytest.importorskip("open_clip")
    tf = open_clip.image_transform(224, is_train=False)
    for name in ("tall_100x800", "photo_640x480", "jpeg_257x193"):
        _same(_digest(tf(IMAGES[name].convert("RGB"))), REF["pixels"][name]["clip_torchvision224"], f"{name} open_clip")


def test_processors_load_the_pil_backend(tmp_path):
    from omgm.hub import load_pretrained
    from utils.make_tiny_models import make_tiny_llava

    assert type(_processor("clip224")).__name__.endswith("Pil")
    folder = make_tiny_llava(tmp_path / "llava", ["hello world"])
    assert type(load_pretrained("AutoProcessor", folder).image_processor).__name__.endswith("Pil")


def test_target_pad_pads_towards_the_ratio_not_to_a_square():
    from PIL import Image

    from omgm.data.images import target_pad

    assert target_pad(Image.new("RGB", (100, 800))).size == (640, 800)     # 800/1.25 = 640: 270 px each side
    assert target_pad(Image.new("RGB", (333, 127))).size == (333, 265)     # int(69.7) = 69 rows each side
    assert target_pad(Image.new("RGB", (120, 100))).size == (120, 100)      # below the ratio: unchanged


# ---- decoding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", sorted(REF["decode"]))
def test_decoded_answers_match_transformers_4(folder):
    from transformers import AutoTokenizer

    from omgm.generate.decoding import restore_v4_decoding

    want = REF["decode"][folder]
    tok = restore_v4_decoding(AutoTokenizer.from_pretrained(str(FIX / "decode" / folder)))
    assert [tok.decode(r, skip_special_tokens=True) for r in want["ids"]] == want["decode"], folder
    assert tok.batch_decode(want["ids"], skip_special_tokens=True) == want["batch_decode"], folder
    assert tok.batch_decode(torch.tensor(want["ids"][:1]), skip_special_tokens=True) == want["batch_decode"][:1]


def test_chat_generator_decodes_like_transformers_4():
    from omgm.generate.generators.chat_llm import ChatLLMGenerator

    want = REF["decode"]["cleanup_true"]
    gen = ChatLLMGenerator(FIX / "decode" / "cleanup_true", load_model=False)
    assert [gen.tokenizer.decode(r, skip_special_tokens=True) for r in want["ids"]] == want["decode"]
    assert want["decode"][0] == "Don't? I'm fine." != REF["decode"]["cleanup_false"]["decode"][0]


# ---- BEM input ------------------------------------------------------------------------------------------------
def _bem_check(tokenizer, case: dict) -> None:
    from omgm.metrics.bem import BemInputTooLong, bem_input

    args = (tokenizer, case["candidate"], case["reference"], case["question"])
    if "error" in case:
        with pytest.raises(BemInputTooLong):
            bem_input(*args)
        return
    ids, segs = bem_input(*args)
    n = len(case["input_ids"])
    assert ids[:n] == case["input_ids"], f"ids of {case['candidate'][:30]!r}"
    assert segs[:n] == case["segment_ids"] and set(ids[n:]) <= {0} and set(segs[n:]) <= {0} and len(ids) == 512


@pytest.mark.parametrize("n", range(len(REF["bem"])))
def test_bem_input_matches_tensorflow_text(n):
    from omgm.metrics.bert_text import TFTextBertTokenizer

    _bem_check(TFTextBertTokenizer.from_vocab_file(str(FIX / "bem_vocab.txt")), REF["bem"][n])


def test_bem_input_from_a_hugging_face_tokenizer_uses_its_vocabulary():
    from transformers import BertTokenizerFast

    hf = BertTokenizerFast(vocab=str(FIX / "bem_vocab.txt"), do_lower_case=True)
    for case in REF["bem"]:     # transformers splits vocab lines on U+2028 too (TF on "\n" only): skip that entry
        if "\u2028" not in case["candidate"]:
            _bem_check(hf, case)


def test_the_recorded_cases_cover_the_known_differences():
    from transformers import BertTokenizerFast

    hf = BertTokenizerFast(vocab=str(FIX / "bem_vocab.txt"), do_lower_case=True)
    differ = [c["candidate"] for c in REF["bem"] if "input_ids" in c
              and [hf.cls_token_id] + hf(c["candidate"], add_special_tokens=False)["input_ids"] + [hf.sep_token_id]
              != c["input_ids"][:len(hf(c["candidate"], add_special_tokens=False)["input_ids"]) + 2]]
    assert len(differ) >= 8, differ                  # HF's own tokenization would drift on these
