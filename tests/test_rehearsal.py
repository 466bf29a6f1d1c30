"""The dress rehearsal, small: ``omgm fetch infoseek`` + ``omgm reproduce infoseek`` against every InfoSeek registry
entry of the published rows served on 127.0.0.1 in its real layout (utils/rehearsal), with tiny RANDOM-weight models,
in one reproduce pass (``--quick``). The E-VQA half, the retraining files and the two-pass flow (reproduce, fetch the
candidates' wiki images, reproduce again) run in ``bash scripts/rehearse.sh OUT`` (the same code; docs/reproduce.md
shows its tables)."""
from __future__ import annotations

import json

import pytest
import yaml

from utils.rehearsal.__main__ import PRIMARY_DOWN
from utils.rehearsal.__main__ import main as rehearse


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    assert rehearse([str(out), "--datasets", "infoseek", "--quick"]) == 0
    report = json.loads((out / "rehearsal.json").read_text())
    registry = yaml.safe_load((out / "release" / "registry.yaml").read_text())
    return out, report, registry


def test_every_entry_lands_where_its_reader_looks(rehearsal):
    out, report, registry = rehearsal
    root = out / "root"
    served = report["datasets"]["infoseek"]["served_by"]
    for a in registry["artifacts"]:
        if "infoseek" not in a["datasets"] or "manual" in a["source"] or a["name"] == "wiki-images" or \
                a["rows"] == ["train"]:                    # retraining files: scripts/rehearse.sh fetches them
            continue
        if "hub" in a["source"]:                     # a hub snapshot: resolvable offline from the root's cache
            snap = root / "models/hub_cache" / f"models--{a['source']['hub'].replace('/', '--')}" / "refs/main"
            assert snap.is_file(), a["name"]
            continue
        key = f".downloads/{a['name']}" if a.get("unpack", "none") != "none" else a["dest"]
        assert key in served, a["name"]
    kb = root / "infoseek" / "wiki_100_dict_v4.json"          # the zip's JSON, as a file kb import read
    assert kb.is_file() and len(json.loads(kb.read_text())) == 40
    assert served["infoseek/wiki_100_dict_v4.json"] == "unpacked from infoseek-kb"          # in the lock too, so:
    inputs = json.loads((out / "infoseek" / "tables.json").read_text())["inputs"]
    assert [i["lock"] for i in inputs if i["stage"] == "kb_import"] == ["as fetched", "as fetched"]    # + the CSVs
    assert len(list((root / "wiki/wiki_image_csv").glob("wiki_image_url_part_*_processed.csv"))) == 13


def test_the_primary_source_down_the_mirror_serves_and_the_lock_says_so(rehearsal):
    out, report, registry = rehearsal
    (name, fault), = PRIMARY_DOWN.items()
    entry = next(a for a in registry["artifacts"] if a["name"] == name)
    served = report["datasets"]["infoseek"]["served_by"][f".downloads/{name}"]
    assert fault == "quota" and served == f"url:{entry['mirrors'][0]['url']}" and "dl=1" in served
    assert report["requests"]["/drive.usercontent.google.com/download"] >= 1      # Drive was asked first
    assert any(p.startswith("/dl.dropboxusercontent.com/") for p in report["requests"])   # the redirect was followed


def test_every_row_is_filled_or_says_why(rehearsal):
    out, report, _ = rehearsal
    tables = json.loads((out / "infoseek" / "tables.json").read_text())
    assert tables["groups"] == ["main", "retrieval", "ablation", "efficiency"]
    main = {(r["row"], r["metric"]): r for r in tables["rows"]}
    for key in (("retrieval", "recall@1"), ("retrieval", "recall@20"), ("internvl", "accuracy")):
        assert main[key]["ours"] is not None and len(main[key]["ci95"]) == 2, key
    not_run = main[("vqa", "accuracy")]                          # the authors did not release this fine-tune
    assert not_run["ours"] is None and "did not release" in not_run["reason"] and not_run["paper"] == 43.49
    for r in tables["rows"] + tables["group_rows"]:
        assert r["ours"] is not None or r["reason"], r
    groups = {r["group"] for r in tables["group_rows"]}
    assert groups == {"retrieval", "ablation", "efficiency"}
    assert report["datasets"]["infoseek"]["rows"]["efficiency"]
    step2 = json.loads((out / "infoseek" / "step2" / "result.summary.json").read_text())
    assert step2["counts"]["images encoded"] > 0                       # the wiki images were fetched and scored


def test_infoseek_overall_figure_is_the_harmonic_mean_of_its_two_parts(rehearsal):
    out, _, _ = rehearsal
    row = next(r for r in json.loads((out / "infoseek" / "tables.json").read_text())["rows"] if r["row"] == "internvl")
    parts = row["breakdown"]
    q, e = parts["unseen_question"], parts["unseen_entity"]
    expect = round(2 / (1 / q + 1 / e), 2) if q and e else 0.0
    assert parts["final score (harmonic mean)"] == row["ours"] == pytest.approx(expect, abs=0.01)
    summary = json.loads((out / "infoseek" / "step3_internvl" / "result.summary.json").read_text())["evaluation"]
    assert summary["unseen_question"]["count"] + summary["unseen_entity"]["count"] == 20
    assert "unseen_question" in (out / "infoseek" / "tables.md").read_text()
