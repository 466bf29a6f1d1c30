import json
from pathlib import Path

import pytest

from omgm.data.jsonstream import JsonStreamError, iter_object_members

DOC = {"https://x/é": {"title": "Ünïcode ✓", "n": [1, 2.5, -3e2], "t": "a \"quoted\" \\ string"},
       "k2": 12345678901234, "k3": {"nested": {"deep": [None, True, False]}}, "k4": "∑" * 50}


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_members_equal_json_load_at_any_chunk_size(tmp_path: Path, chunk: int):
    f = tmp_path / "kb.json"
    f.write_text(json.dumps(DOC, ensure_ascii=False, indent=2), encoding="utf-8")
    got = [(k, v) for k, v, _ in iter_object_members(f, chunk_bytes=chunk)]
    assert got == list(DOC.items())


def test_resume_from_reported_offsets(tmp_path: Path):
    f = tmp_path / "kb.json"
    f.write_text(json.dumps(DOC, ensure_ascii=False), encoding="utf-8")
    members = list(iter_object_members(f, chunk_bytes=5))
    for i, (_, _, end) in enumerate(members):
        rest = [(k, v) for k, v, _ in iter_object_members(f, start_byte=end, chunk_bytes=5)]
        assert rest == list(DOC.items())[i + 1:]


def test_demo_kb_streams_in_key_order(demo_dir: Path):
    keys = [k for k, _, _ in iter_object_members(demo_dir / "kb.json", chunk_bytes=4096)]
    assert keys == list(json.loads((demo_dir / "kb.json").read_text()).keys())


@pytest.mark.parametrize("text, where", [
    ('[1, 2]', "expected '{'"),
    ('{"a": 1 "b": 2}', "expected ',' or '}' at byte 8"),
    ('{"a" 1}', "expected ':'"),
    ('{"a": {"b": }', "malformed JSON at byte"),
    ('{"a": {"b": 1}', "looks truncated"),
    ('{"a": {"b": 1', "malformed JSON"),
])
def test_malformed_input_names_file_and_offset(tmp_path: Path, text: str, where: str):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(JsonStreamError, match="bad.json") as exc:
        list(iter_object_members(f, chunk_bytes=4))
    assert where in str(exc.value)


def test_bom_and_empty_object(tmp_path: Path):
    f = tmp_path / "e.json"
    f.write_bytes("\ufeff { }".encode())
    assert list(iter_object_members(f)) == []
