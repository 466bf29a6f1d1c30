"""Original-format LLaVA-1.5 (the paper's fine-tuned generator): strict conversion, the slow tokenizer, and
answers equal to the LLaVA repository's own code on a tiny random folder (tests/fixtures/llava_original,
reference.json recorded with llava-torch 1.2.2.post1 + transformers 4.37.2, see reference.py there)."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from omgm.commands import step3
from omgm.generate.generators import GeneratorError, GeneratorSpec, build_generator
from omgm.generate.generators.base import GenRequest
from omgm.generate.generators.llava_convert import LlavaConversionError, load_original_llava
from omgm.generate.generators.llava_original import expand_to_square
from omgm.generate.sp_llama import SlowLlamaTokenizer, TokenizerLoadError
from omgm.hub import ModelLoadError

FIX = Path(__file__).parent / "fixtures" / "llava_original"
REF = json.loads((FIX / "reference.json").read_text())
CASES = json.loads((FIX / "cases.json").read_text())


def _reference_text(case: dict, style: str) -> str:
    """The text the reference script built (its own copy of the published strings)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llava_reference", FIX / "reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.text_of(case, style)


def _requests():
    return [GenRequest(c["question"], c["context"], c["dataset"], FIX / c["image"]) for c in CASES]


@pytest.fixture(scope="module")
def official():
    return build_generator(GeneratorSpec("llava1_5", str(FIX / "llava-v1.5-tiny"), prompt_style="official", device="cpu",
                                         dtype="fp32", max_new_tokens=12, vision_tower=str(FIX / "clip-tower")))


@pytest.fixture(scope="module")
def corrected(official):
    from omgm.generate.generators.llava_original import OriginalLlavaGenerator

    g = OriginalLlavaGenerator.__new__(OriginalLlavaGenerator)   # same weights, other prompt style
    g.__dict__.update(official.__dict__, style="omgm")
    return g


def test_layout_is_detected_and_converted_strictly(official):
    assert official.family == "llava-original" and official.needs_image
    report = "\n".join(official.llava.report)
    assert "converted" in report and "ignored" in report and "text_model" in report   # CLIP text tower unused
    assert official.model.get_input_embeddings().weight.shape[0] == len(official.tokenizer)


def test_prompt_ids_equal_the_llava_repository(official, corrected):
    for style, gen in (("official", official), ("omgm", corrected)):
        ours = [gen.slots(r) for r in _requests()]
        assert ours == [x["input_ids"] for x in REF[style]]


def test_answers_equal_the_llava_repository(official, corrected):
    assert official.generate(_requests()) == [x["answer"] for x in REF["official"]]
    assert corrected.generate(_requests()) == [x["answer"] for x in REF["omgm"]]


def test_image_ignored_in_official_style_used_in_omgm_style(official, corrected):
    reqs = _requests()[:4]
    other = [GenRequest(r.question, r.context, r.dataset, FIX / "images" / ("tall.png" if "wide" in str(r.image)
                                                                             else "wide.png")) for r in reqs]
    assert official.generate(reqs) == official.generate(other)          # no <image> token: the published 50.17
    assert corrected.generate(reqs) != corrected.generate(other)


@pytest.mark.parametrize("name", ["llava-v1.5-tiny", "sp-default"])
def test_slow_tokenizer_equals_transformers_4(name):
    texts = [_reference_text(c, s) for c in CASES for s in ("official", "omgm")] + [c["context"] for c in CASES]
    tok = SlowLlamaTokenizer(FIX / name)
    assert [tok.encode(t) for t in texts] == REF["tokenizer_ids"][name]
    if name == "llava-v1.5-tiny":
        assert [tok.decode(tok.encode(t)[1:40], skip_special_tokens=True) for t in texts] == REF["tokenizer_decode"][name]
    else:
        assert [tok.decode(tok.encode(t)[:40]) for t in texts] == REF["tokenizer_decode"][name]


def test_pad_to_square_uses_the_processor_mean():
    from PIL import Image

    img = Image.new("RGB", (40, 10), (255, 0, 0))
    sq = expand_to_square(img, (0.48145466, 0.4578275, 0.40821073))
    assert sq.size == (40, 40) and sq.getpixel((0, 0)) == (122, 116, 104) and sq.getpixel((0, 20)) == (255, 0, 0)


def _copy(tmp_path) -> Path:
    dst = Path(shutil.copytree(FIX / "llava-v1.5-tiny", tmp_path / "llava-v1.5-copy"))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["mm_vision_tower"] = str(FIX / "clip-tower")
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_missing_and_unexpected_keys_are_refused(tmp_path):
    folder = _copy(tmp_path)
    shard = folder / "pytorch_model-00002-of-00002.bin"
    sd = torch.load(shard, weights_only=True)
    gone = sorted(sd)[0]
    del sd[gone]
    sd["model.extra_head.weight"] = torch.zeros(2)
    torch.save(sd, shard)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    index["weight_map"].pop(gone)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(LlavaConversionError) as err:
        load_original_llava(folder)
    msg = str(err.value)
    assert "missing (1)" in msg and "unexpected (1)" in msg and "model.extra_head.weight" in msg


def test_bad_folders_fail_with_one_line_naming_the_path(tmp_path):
    folder = _copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mm_vision_tower"] = str(tmp_path / "nowhere")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no such folder .*nowhere"):
        load_original_llava(folder)
    cfg["mm_projector_type"] = "linear"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LlavaConversionError, match="mm_projector_type 'linear'"):
        load_original_llava(folder)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "vision_config": {}}))
    with pytest.raises(GeneratorError, match="is a vlm-hf folder; expected llava-hf or llava-original"):
        build_generator(GeneratorSpec("llava1_5", str(odd), device="cpu"))
    cfg["mm_projector_type"] = "mlp2x_gelu"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer.model").unlink()
    with pytest.raises(TokenizerLoadError, match="no tokenizer.model"):
        load_original_llava(folder, vision_tower=str(FIX / "clip-tower"))


def _world(tmp_path: Path, dataset: str):
    """A KB with one entity per case (its one section is the case's context), a CSV, images and a step-1 file
    whose top entity is the case's, so that step 3 builds exactly the reference's prompts."""
    kb, rows, results, images = {}, [], {}, tmp_path / "images"
    images.mkdir(parents=True)
    cases = [(i, c) for i, c in enumerate(CASES) if c["dataset"] == dataset and c["context"].startswith("# Wiki")
             and not any(m in c["context"].split("\n")[1].lower() for m in ("references", "external links"))]
    for n, (i, c) in enumerate(cases):
        title, rest = c["context"][len("# Wiki Article: "):].split("\n## Section Title: ", 1)
        sec_title, text = rest.split("\n", 1)
        url = f"https://en.wikipedia.org/wiki/Case_{i}"
        kb[url] = {"title": title, "url": url, "section_titles": [sec_title], "section_texts": [text],
                   "image_urls": [], "image_reference_descriptions": [], "image_section_indices": []}
        shutil.copy(FIX / c["image"], images / f"q{i}.jpg")
        sid = f"E-VQA_{n}" if dataset == "evqa" else f"oven_{i}"
        rows.append({"question": c["question"], "answer": "x", "dataset_image_ids": f"q{i}", "question_type":
                     "automatic" if dataset == "evqa" else "infoseek", "wikipedia_url": url, "evidence_section_id": "0",
                     "dataset_name": "inaturalist" if dataset == "evqa" else "infoseek", "data_id": sid if
                     dataset == "infoseek" else ""})
        results[sid] = {"retrieved_entities": [{"url": url, "title": title}], "retrieval_similarities": [0.5]}
    (tmp_path / "kb.json").write_text(json.dumps(kb))
    (tmp_path / "step1.json").write_text(json.dumps(results))
    with (tmp_path / "test.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return [i for i, _ in cases], images


@pytest.mark.parametrize("dataset", ["evqa", "infoseek"])
def test_step3_cli_reproduces_the_published_answers(tmp_path, dataset):
    """The whole step 3 through its CLI, as the published script runs the paper's fine-tuned LLaVA."""
    from utils.make_tiny_models import make_tiny_cross_encoder

    which, images = _world(tmp_path, dataset)
    assert len(which) >= 2
    cross = make_tiny_cross_encoder(tmp_path / "cross", ["a section"])
    args = ["--test_file", str(tmp_path / "test.csv"), "--retrieval_results_file", str(tmp_path / "step1.json"),
            "--knowledge_base_path", str(tmp_path / "kb.json"), "--output_file", str(tmp_path / "out") + "/",
            "--answer_generator", "llava1_5", "--llm_checkpoint", str(FIX / "llava-v1.5-tiny"),
            "--vision_tower", str(FIX / "clip-tower"), "--section_reranker", str(cross), "--inat_dir", str(images),
            "--infoseek_dir", str(images), "--device", "cpu", "--dtype", "fp32", "--max_new_tokens", "12",
            "--no_progress"]
    assert step3.main(args) == 0
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [r["prediction"] for r in data["records"]] == [REF["official"][i]["answer"] for i in which]
    assert data["meta"]["context_cut"].endswith("llava-v1.5-tiny")        # the folder's own LLaVA-1.5 tokenizer
    assert (tmp_path / "out" / "result.summary.json").is_file()
