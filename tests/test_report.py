import json
import re

from omgm.commands import report
from omgm.data.results import read_retrieval, write_retrieval


def test_report_links_images_and_shows_movement(step2_env, tmp_path):
    d = step2_env.demo
    s1 = read_retrieval(step2_env.dir / "test_step1.json")
    s2 = {}
    for sid, e in s1.results.items():              # a "step 2" that reverses the order
        e2 = {k: list(reversed(v)) for k, v in e.items()}
        e2["step2_scores"] = [0.5] * len(e2["retrieved_entities"])
        s2[sid] = e2
    write_retrieval(tmp_path / "s2.json", s2, "step2")
    answers = [{"data_id": "E-VQA_0", "question": "q", "gt_answer": "x", "prediction": "x", "question_type": "automatic",
                "top1_section_title": "History", "top1_entity_title": "T", "section_hit": True}]
    (tmp_path / "a.json").write_text(json.dumps(answers))
    out = tmp_path / "sub" / "report.html"
    args = ["--sample_file", str(d / "test.csv"), "--step1", str(step2_env.dir / "test_step1.json"),
            "--step2", str(tmp_path / "s2.json"), "--answers", str(tmp_path / "a.json"), "--knowledge_base",
            str(step2_env.dir / "kb.sqlite"), "--wiki_img_path_prefix", str(d / "wiki_images"),
            "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"), "--out", str(out), "--top_k", "20"]
    assert report.main(args) == 0
    doc = out.read_text()
    assert doc.count('class="card"') == 80 and (out.parent / "report_files/recall.png").is_file()
    srcs = re.findall(r'<img src="([^"]+)"', doc)
    assert len(srcs) > 100 and all((out.parent / s).is_file() for s in srcs)       # relative links resolve
    assert "correct (EM)" in doc and "(gold section)" in doc
    ranks = re.search(r"gold rank: step 1 ([0-9]+) → step 2 ([0-9]+)<", doc)
    assert ranks and ranks.group(1) != "–" and int(ranks.group(1)) + int(ranks.group(2)) == 21   # reversed order
    assert 'data-improved="1"' in doc and 'data-worsened="1"' in doc
    assert report.main(args + ["--embed", "--limit", "3", "--out", str(tmp_path / "e.html")]) == 0
    emb = (tmp_path / "e.html").read_text()
    assert emb.count('class="card"') == 3 and 'src="data:image/jpeg;base64,' in emb


def test_report_needs_inputs(tmp_path, capsys):
    assert report.main(["--out", str(tmp_path / "r.html")]) == 2
    assert "give --sample_file" in capsys.readouterr().err
