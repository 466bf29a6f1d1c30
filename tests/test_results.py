import json
from pathlib import Path

import pytest

from omgm.data.results import ResultFileError, read_retrieval, write_json_atomic, write_retrieval

ENTRY = {"retrieved_entities": [{"url": "u1", "title": "A"}, {"url": "u2", "title": "B"}],
         "retrieval_similarities": [0.9, 0.5]}


def test_round_trip_with_header_and_bare(tmp_path: Path):
    write_retrieval(tmp_path / "r.json", {"E-VQA_0": ENTRY}, "step1", {"k": 2})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["format"] == "omgm.retrieval" and data["version"] == 1 and data["stage"] == "step1"
    rf = read_retrieval(tmp_path / "r.json")
    assert rf.results == {"E-VQA_0": ENTRY} and rf.meta == {"k": 2} and rf.urls("E-VQA_0") == ["u1", "u2"]
    write_retrieval(tmp_path / "bare.json", {"E-VQA_0": ENTRY}, "step1", bare=True)
    assert json.loads((tmp_path / "bare.json").read_text()) == {"E-VQA_0": ENTRY}   # the authors' form
    assert read_retrieval(tmp_path / "bare.json").results == {"E-VQA_0": ENTRY}
    step2 = dict(ENTRY, sec_sim=[[0.1, 0.2], []])
    write_json_atomic(tmp_path / "s2.json", {"x": step2})
    assert read_retrieval(tmp_path / "s2.json").stage == "step2"


@pytest.mark.parametrize("entry, msg", [
    ({"retrieved_entities": [{"url": "u"}], "retrieval_similarities": []}, "1 entities but 0 similarities"),
    ({"retrieved_entities": [{"title": "t"}], "retrieval_similarities": [1.0]}, r"retrieved_entities\[0\] has no 'url'"),
    ({"retrieved_entities": [{"url": "u"}], "retrieval_similarities": ["x"]},
     r"retrieval_similarities\[0\] is not a finite number"),
    ({"retrieved_entities": [{"url": "u"}], "retrieval_similarities": [1.0], "sec_sim": [1]}, "'sec_sim' must be"),
    ([1, 2], "expected an object"),
])
def test_malformed_entries_name_file_and_sample(tmp_path: Path, entry, msg):
    (tmp_path / "bad.json").write_text(json.dumps({"q7": entry}))
    with pytest.raises(ResultFileError, match=f"bad.json, sample 'q7': {msg}"):
        read_retrieval(tmp_path / "bad.json")


def test_not_json_and_newer_version(tmp_path: Path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ResultFileError, match="x.json: not valid JSON"):
        read_retrieval(tmp_path / "x.json")
    (tmp_path / "v.json").write_text(json.dumps({"format": "omgm.retrieval", "version": 99, "results": {}}))
    with pytest.raises(ResultFileError, match="version 99 is newer"):
        read_retrieval(tmp_path / "v.json")


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path: Path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"bad": float("nan")})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]   # no temp file left behind


def test_samples_without_a_result_are_matched_by_id_in_linear_time(monkeypatch):
    from omgm.data.results import among
    from omgm.data.samples import Sample

    everything = [Sample(f"E-VQA_{i}", "q", "a", f"img{i}", "inaturalist", "automatic", "u") for i in range(3000)]
    calls = []
    monkeypatch.setattr(Sample, "__eq__", lambda self, other: calls.append(1) or self is other)
    got = among(everything[::2], everything[:1000])
    assert [s.sample_id for s in got] == [f"E-VQA_{i}" for i in range(0, 1000, 2)] and calls == []
