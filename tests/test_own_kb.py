"""Your own knowledge base: JSONL + images -> store -> index -> ``omgm ask`` (and the Python API), end to end."""
import json
from pathlib import Path

import pytest

from omgm import cli
from omgm.data.kb import open_kb
from omgm.data.wiki_images import wiki_images_for

OWN = Path(__file__).resolve().parents[1] / "assets" / "own_kb"


@pytest.fixture(scope="module")
def own(tmp_path_factory, tiny_clip_ckpt, tiny_step3_models, bert_tokenizer):
    w = tmp_path_factory.mktemp("own")
    assert cli.main(["kb", "import", "--jsonl", str(OWN / "entities.jsonl"), "--images_dir", str(OWN / "images"),
                     "--out", str(w / "kb.sqlite")]) == 0
    assert cli.main(["index", "build", "--knowledge_base", str(w / "kb.sqlite"), "--faiss_index", str(w / "own.index"),
                     "--retriever_vit", "omgm-tiny-eva", "--retriever_pretrained", str(tiny_clip_ckpt),
                     "--device", "cpu", "--no_progress"]) == 0
    import torch

    from omgm.rerank.convert import save_ours
    from omgm.rerank.model import IT2ITConfig, IT2ITReranker

    torch.manual_seed(0)
    save_ours(IT2ITReranker(IT2ITConfig.tiny(len(bert_tokenizer))), w / "reranker.pth")
    bert_tokenizer.save_pretrained(w / "tok")
    cfg = {"knowledge_base": str(w / "kb.sqlite"), "faiss_index": str(w / "own.index"),
           "retriever_vit": "omgm-tiny-eva", "retriever_pretrained": str(tiny_clip_ckpt), "device": "cpu",
           "reranker_ckpt_path": str(w / "reranker.pth"), "tokenizer": str(w / "tok"),
           "answer_generator": str(tiny_step3_models.llava), "section_reranker": str(tiny_step3_models.cross),
           "context_tokenizer": str(tiny_step3_models.llava), "max_new_tokens": 4, "retrieval_top_k": 5}
    (w / "own.yaml").write_text("\n".join(f"{k}: {v}" for k, v in cfg.items()))
    return w


def test_import_keeps_order_sections_and_images(own):
    kb = open_kb(own / "kb.sqlite")
    lines = [json.loads(x) for x in (OWN / "entities.jsonl").read_text().splitlines()]
    assert list(kb.urls()) == [x["url"] for x in lines]
    ent = kb.get(lines[1]["url"])
    assert ent.title == lines[1]["title"] and ent.section_texts == [s["text"] for s in lines[1]["sections"]]
    wiki = wiki_images_for(kb, None)                     # the store remembers its images folder
    assert wiki.first(lines[0]["title"]) == OWN / "images" / lines[0]["images"][0]


def test_ask_end_to_end_cli_and_python(own, capsys):
    img = OWN / "images" / "violet_ring_wren_0.jpg"
    assert cli.main(["ask", "--config", str(own / "own.yaml"), "--image", str(img), "--question",
                     "What colour is it?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reranked"] and len(out["entities"]) == 5 and out["entities"][0]["step2"] is not None
    assert out["section"]["text"].startswith("# Wiki Article: ") and isinstance(out["answer"], str)
    assert out["unanswered"] is None
    from omgm.pipeline.pipeline import Pipeline

    pipe = Pipeline.from_config(str(own / "own.yaml"))
    again = pipe.ask(img, "What colour is it?")
    assert [e["url"] for e in again["entities"]] == [e["url"] for e in out["entities"]]
    assert again["answer"] == out["answer"]
    assert cli.main(["ask", "--config", str(own / "own.yaml"), "--image", str(img), "--question", "q"]) == 0
    assert "answer:" in capsys.readouterr().out


def test_url_images_are_listed_for_download_and_bad_lines_named(tmp_path, capsys):
    lines = [{"url": "u1", "title": "One", "sections": [{"title": "One", "text": "x"}],
              "images": ["a.jpg", "https://example.org/img/One.png?x=1"]},
             {"url": "u2", "title": "Two", "sections": [{"title": "Two", "text": "y"}]}]
    src = tmp_path / "kb.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert cli.main(["kb", "import", "--jsonl", str(src), "--out", str(tmp_path / "kb.sqlite")]) == 0
    csv_file = tmp_path / "kb.sqlite.images" / "wiki_image_url_part_1_processed.csv"
    rows = csv_file.read_text().splitlines()
    assert rows[0] == "title,image_URL,img_path,caption" and rows[1].startswith("One,https://example.org/img/One.png")
    assert "url_images/" in rows[1] and rows[1].split(",")[2].endswith(".png")
    src.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"url": "u3", "title": "T", "sections": "no"}) + "\n")
    assert cli.main(["kb", "import", "--jsonl", str(src), "--out", str(tmp_path / "k2.sqlite")]) == 2
    assert "line 2 (u3): 'sections' must be a non-empty list" in capsys.readouterr().err


def test_omgm_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("step1", "step2 train", "step3", "kb import", "index build", "data download-images", "ask",
                "list-models"):
        assert cmd in out
    assert cli.main(["nope"]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["step1", "--help"])
    assert e.value.code == 0 and "--retriever_vit" in capsys.readouterr().out
    assert cli.main(["list-models"]) == 0 and "eva-clip" in capsys.readouterr().out


def test_the_store_images_win_over_an_inherited_demo_config(own, demo_dir, caplog):
    from omgm.data.kb import open_kb

    kb = open_kb(own / "kb.sqlite")
    lines = [json.loads(x) for x in (OWN / "entities.jsonl").read_text().splitlines()]
    with caplog.at_level("WARNING"):
        wiki = wiki_images_for(kb, demo_dir / "wiki_images", demo_dir / "wiki_image_csv")   # a layered demo config
    assert wiki.first(lines[0]["title"]) == OWN / "images" / lines[0]["images"][0]
    assert "lists its own images" in caplog.text and "--wiki_img_csv_dir" in caplog.text


def test_listed_local_images_that_do_not_exist_are_counted(tmp_path, capsys):
    src = tmp_path / "kb.jsonl"
    src.write_text(json.dumps({"url": "u1", "title": "One", "sections": [{"title": "One", "text": "x"}],
                               "images": ["there.jpg", "gone.jpg"]}) + "\n")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "there.jpg").write_bytes(b"x")
    assert cli.main(["kb", "import", "--jsonl", str(src), "--images_dir", str(tmp_path / "imgs"), "--out",
                     str(tmp_path / "kb.sqlite")]) == 0
    assert "1 of 2 listed local images do not exist" in capsys.readouterr().err


def test_a_kb_smaller_than_the_default_top_ks_runs_steps_1_and_2(own, capsys):
    args = ["--config", str(own / "own.yaml"), "--sample_file", str(OWN / "questions.csv"), "--inat_dir",
            str(OWN / "images"), "--no_progress"]
    assert cli.main(["step1", *args, "--retrieval_top_k", "20", "--save_result_path", str(own / "s1") + "/"]) == 0
    out = capsys.readouterr()                                   # step 1 too: no R@10 / R@20 of a 5-entity KB
    assert "recall at [10, 20] is not reported" in out.err and "R@5" in out.out and "R@10" not in out.out
    assert set(json.loads((own / "s1" / "result.summary.json").read_text())["recall"]) == {"R@1", "R@5"}
    assert cli.main(["step2", "rerank", *args, "--step1_result", str(own / "s1" / "result.json"),
                     "--knowledge_base_path", str(own / "kb.sqlite"), "--save_result_path", str(own / "s2") + "/"]) == 0
    out = capsys.readouterr()
    assert "recall at [10, 20] is not reported" in out.err and "R@5" in out.out
    assert cli.main(["report", "--sample_file", str(OWN / "questions.csv"), "--step1", str(own / "s1" / "result.json"),
                     "--out", str(own / "r.html")]) == 0
    assert "R@10" not in (own / "r.html").read_text() and "R@5" in (own / "r.html").read_text()


def test_ask_refuses_unknown_and_out_of_range_settings(own, capsys):
    img = OWN / "images" / "violet_ring_wren_0.jpg"
    base = ["ask", "--config", str(own / "own.yaml"), "--image", str(img), "--question", "q"]
    assert cli.main(base + ["--set", "step1_alpha=2"]) == 2
    assert "step1_alpha: expected weights between 0 and 1" in capsys.readouterr().err
    assert cli.main(base + ["--set", "no_such_key=1"]) == 2
    assert "unknown setting(s) no_such_key" in capsys.readouterr().err


def test_ask_reads_omgm_variables_for_every_setting(own, monkeypatch, capsys):
    img = OWN / "images" / "violet_ring_wren_0.jpg"
    monkeypatch.setenv("OMGM_FAISS_INDEX", str(own / "missing.index"))
    assert cli.main(["ask", "--config", str(own / "own.yaml"), "--image", str(img), "--question", "q"]) == 2
    assert "missing.index" in capsys.readouterr().err


def test_asking_about_a_pil_image_leaves_no_file_and_no_changed_answerer(own, tmp_path, monkeypatch):
    import tempfile

    from PIL import Image

    from omgm.pipeline.pipeline import Pipeline

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pipe = Pipeline.from_config(str(own / "own.yaml"))
    dirs = pipe.answerer.image_dirs
    with Image.open(OWN / "images" / "violet_ring_wren_0.jpg") as im:
        out = pipe.ask(im.copy(), "What colour is it?")
    assert out["image"] is None and list(tmp_path.iterdir()) == [] and pipe.answerer.image_dirs is dirs


def test_ask_from_several_threads_equals_asking_one_after_another(own):
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from omgm.pipeline.pipeline import Pipeline

    pipe = Pipeline.from_config(str(own / "own.yaml"))
    images = sorted((OWN / "images").glob("*.jpg"))[:4]
    asks = [(Image.open(p).copy() if i % 2 else p, f"What colour is thing {i}?") for i, p in enumerate(images)]

    def key(out):
        return [e["url"] for e in out["entities"]], out["section"]["text"], out["answer"]

    alone = [key(pipe.ask(img, q)) for img, q in asks]
    with ThreadPoolExecutor(4) as pool:
        together = [key(o) for o in pool.map(lambda a: pipe.ask(*a), asks)]
    assert together == alone


class _Retriever:
    name, supports_composed = "stub", True


class _Search:
    def __init__(self, composed: bool = True) -> None:
        self.retriever, self.asked = _Retriever(), []
        self.retriever.supports_composed = composed

    def query(self, image, question, k):
        self.asked.append(question)
        return {"retrieved_entities": [], "retrieval_similarities": []}


class _Answerer:
    def answer(self, samples, entries, images=None):
        return [{"top1_entity_title": None, "top1_section_title": None, "top1_sec": None, "q2s_scores": [],
                 "step3_sec_sim": [], "prediction": "", "unanswered": "no retrieval result"}]


def test_ask_searches_with_the_question_where_the_retriever_is_composed():
    from PIL import Image

    from omgm.errors import OmgmError
    from omgm.pipeline.pipeline import Pipeline

    image = Image.new("RGB", (8, 8))
    for composed, expected in ((True, "What is it?"), (False, None)):
        search = _Search()
        Pipeline(search, _Answerer(), k=5, alpha=0.9, composed=composed).ask(image, "What is it?")
        assert search.asked == [expected]
    with pytest.raises(OmgmError, match="stub has no composed"):
        Pipeline(_Search(composed=False), _Answerer(), k=5, alpha=0.9, composed=True)
