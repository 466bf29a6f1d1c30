"""Step 1 through its CLI for every retriever family, with and without composed queries; remote-code retrievers
(EVA-CLIP-8B's layout) with their non-persistent buffers; the published output convention."""
import csv
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from omgm.commands import build_index, step1
from omgm.data import kb_import
from omgm.data.results import read_retrieval
from utils.rehearsal.models import REMOTE_CLIP


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_dir):
    """A KB store and the first 10 test questions."""
    w = tmp_path_factory.mktemp("fam")
    assert kb_import.main(["--kb_json", str(demo_dir / "kb.json"), "--out", str(w / "kb.sqlite")]) == 0
    with (demo_dir / "test.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (w / "test10.csv").open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows([r for r in rows if r["question_type"] != "2_hop"][:10])
    return w


@pytest.fixture(scope="module")
def remote_clip(tmp_path_factory, tiny_hf_clip):
    """A remote-code CLIP-like folder (auto_map + trust_remote_code), with the tiny CLIP tokenizer/processor."""
    d = tmp_path_factory.mktemp("remote") / "tiny-eva-clip"
    d.mkdir()
    (d / "modeling_tiny_eva_clip.py").write_text(textwrap.dedent(REMOTE_CLIP))
    (d / "config.json").write_text(json.dumps({
        "model_type": "tiny_eva_clip", "architectures": ["TinyEvaClip"], "dim": 16, "vocab_size": 600,
        "auto_map": {"AutoConfig": "modeling_tiny_eva_clip.TinyEvaClipConfig",
                     "AutoModel": "modeling_tiny_eva_clip.TinyEvaClip"}}))
    for f in tiny_hf_clip.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt", "preprocessor_config.json", "special_tokens_map.json"):
            shutil.copy(f, d / f.name)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_eva_clip_ref", d / "modeling_tiny_eva_clip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.TinyEvaClip(mod.TinyEvaClipConfig())
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "model.safetensors")
    return d, model.eval()


FAMILIES = {  # name -> (flags, supports composed queries)
    "open_clip": (lambda m: ["--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained", str(m["clip"])], False),
    "hf-clip": (lambda m: ["--retriever_vit", "hf-clip", "--retriever_path", str(m["hf"])], False),
    "eva-clip": (lambda m: ["--retriever_vit", "eva-clip", "--retriever_path", str(m["remote"]), "--trust_remote_code"],
                 False),
    "vista": (lambda m: ["--retriever_vit", "vista", "--retriever_path", str(m["bge"])], True),
    "mmret-base": (lambda m: ["--retriever_vit", "mmret-base", "--retriever_path", str(m["hf"])], True),
    "mmret-mllm": (lambda m: ["--retriever_vit", "mmret-mllm", "--retriever_path", str(m["llava"])], True),
}


@pytest.fixture(scope="module")
def models(tiny_clip_ckpt, tiny_hf_clip, remote_clip, tiny_step3_models, tmp_path_factory, demo_corpus):
    from utils.make_tiny_models import make_tiny_bge

    return {"clip": tiny_clip_ckpt, "hf": tiny_hf_clip, "remote": remote_clip[0], "llava": tiny_step3_models.llava,
            "bge": make_tiny_bge(tmp_path_factory.mktemp("bge"), demo_corpus)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_step1_cli_for_every_family_with_and_without_composed_queries(family, world, models, demo_dir, capsys):
    flags, composed = FAMILIES[family]
    common = ["--knowledge_base", str(world / "kb.sqlite"), "--device", "cpu", "--no_progress", *flags(models)]
    index = world / f"{family}.index"
    assert build_index.main(common + ["--faiss_index", str(index)]) == 0
    base = common + ["--sample_file", str(world / "test10.csv"), "--faiss_index", str(index), "--num_workers", "0",
                     "--inat_dir", str(demo_dir / "images/inat"), "--gld_dir", str(demo_dir / "images/gld")]
    assert step1.main(base + ["--save_result_path", str(world / f"{family}.json")]) == 0
    plain = read_retrieval(world / f"{family}.json").results
    assert len(plain) == 10
    for e in plain.values():
        assert len(e["retrieved_entities"]) == 20
        assert e["retrieval_similarities"] == sorted(e["retrieval_similarities"], reverse=True)
    rc = step1.main(base + ["--save_result_path", str(world / f"{family}.c.json"), "--composed_query"])
    if not composed:
        assert rc == 2 and "has no composed (image + question) encoding" in capsys.readouterr().err
        return
    assert rc == 0
    both = read_retrieval(world / f"{family}.c.json")
    assert both.meta["composed_query"] and set(both.results) == set(plain)          # every query ranked
    assert all(len(e["retrieved_entities"]) == 20 for e in both.results.values())
    assert any(both.results[k]["retrieval_similarities"] != plain[k]["retrieval_similarities"] for k in plain)
    summary = json.loads((world / f"{family}.c.summary.json").read_text())
    assert summary["total"] == 10 and summary["missing_rankings"] == 0


def test_remote_code_retriever_recomputes_its_buffers(remote_clip, world, demo_dir):
    from PIL import Image

    from omgm.retrieval.base import RetrieverSpec
    from omgm.retrieval.registry import build_retriever

    folder, reference = remote_clip
    r = build_retriever(RetrieverSpec("eva-clip", retriever_path=str(folder), device="cpu", precision="fp32",
                                      trust_remote_code=True))
    assert set(r.restored_buffers) == {"position_ids", "text_position_ids", "rope"}
    img = Image.open(demo_dir / "images/inat/inat0000.jpg").convert("RGB")
    pix = r.preprocess(img).unsqueeze(0)
    with torch.no_grad():
        want_img = torch.nn.functional.normalize(reference.encode_image(pix), dim=-1).numpy()
        ids = r.tokenizer(["a red disc"], return_tensors="pt")["input_ids"]
        want_txt = torch.nn.functional.normalize(reference.encode_text(ids), dim=-1).numpy()
    np.testing.assert_allclose(r.encode_pixels(pix), want_img, atol=1e-6)
    np.testing.assert_allclose(r.encode_texts(["a red disc"]), want_txt, atol=1e-6)


def test_remote_code_needs_trust_outside_eva_clip(remote_clip, capsys, world):
    args = ["--knowledge_base", str(world / "kb.sqlite"), "--faiss_index", str(world / "x.index"), "--device", "cpu",
            "--retriever_vit", "hf-clip", "--retriever_path", str(remote_clip[0]), "--no_progress"]
    assert build_index.main(args) == 2
    assert "retriever (--retriever_path)" in capsys.readouterr().err
    assert build_index.main(args + ["--trust_remote_code"]) == 0


def test_directory_output_convention(world, models, demo_dir):
    flags, _ = FAMILIES["open_clip"]
    common = ["--knowledge_base", str(world / "kb.sqlite"), "--device", "cpu", "--no_progress", *flags(models)]
    assert build_index.main(common + ["--faiss_index", str(world / "oc.index")]) == 0
    out = world / "step1_results" / "E-VQA"
    assert step1.main(common + ["--sample_file", str(world / "test10.csv"), "--faiss_index", str(world / "oc.index"),
                                "--num_workers", "0", "--inat_dir", str(demo_dir / "images/inat"), "--gld_dir",
                                str(demo_dir / "images/gld"), "--save_result_path", str(out) + "/"]) == 0
    assert len(read_retrieval(out / "result.json").results) == 10 and (out / "result.summary.json").is_file()


def test_a_checkpoint_that_does_not_fill_the_model_is_refused(remote_clip, world, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(remote_clip[0], tmp_path / "broken-eva-clip"))
    sd = load_file(folder / "model.safetensors")
    del sd["vproj.bias"]
    save_file(sd, folder / "model.safetensors")
    args = ["--knowledge_base", str(world / "kb.sqlite"), "--faiss_index", str(tmp_path / "b.index"), "--device",
            "cpu", "--retriever_vit", "eva-clip", "--retriever_path", str(folder), "--no_progress"]
    assert build_index.main(args) == 2
    assert "allow it with --trust_remote_code" in capsys.readouterr().err     # remote code is an explicit opt-in
    args.append("--trust_remote_code")
    assert build_index.main(args) == 2
    err = capsys.readouterr().err
    assert "does not fill the model" in err and "vproj.bias" in err
