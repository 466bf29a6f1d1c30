from pathlib import Path

import numpy as np
import pytest

from omgm.data.kb import JsonKnowledgeBase
from omgm.retrieval.shards import ShardError, encode_sharded, shard_path
from omgm.retrieval.summaries import LLMSummarizer, SummaryFileError, SummaryStore, article_text, lead_summary, write_summaries


@pytest.fixture()
def kb(demo_dir):
    return JsonKnowledgeBase(demo_dir / "kb.json")


def test_lead_summary_is_title_and_lead_cut_to_words(kb):
    ent = kb.at(0)
    s = lead_summary(ent, max_words=8)
    assert s.startswith(ent.title + ".") and len(s.split()) == 8
    assert "References" not in article_text(ent) and "Description" in article_text(ent)


def test_summaries_resume_after_a_torn_write(tmp_path: Path, kb):
    store = SummaryStore(tmp_path / "s.jsonl")
    calls = []

    def summarize(ents):
        calls.append(len(ents))
        return [lead_summary(e) for e in ents]

    assert write_summaries(kb, store, summarize, batch_size=16, progress=False) == 40
    full = store.path.read_text()
    lines = full.splitlines(keepends=True)
    store.path.write_text("".join(lines[:25]) + lines[25][:10])      # killed mid-line at row 25
    assert store.count_done(kb) == 25
    calls.clear()       # cut back to the last whole batch (row 16), so the batches are those of an uninterrupted run
    assert write_summaries(kb, store, summarize, batch_size=16, progress=False) == 24
    assert calls == [16, 8] and store.path.read_text() == full
    assert list(store.iter_texts(kb)) == [lead_summary(e) for e in kb.entities()]


def test_summaries_of_another_kb_are_refused(tmp_path: Path, kb):
    store = SummaryStore(tmp_path / "s.jsonl")
    store.append([(0, "https://other", "x")])
    with pytest.raises(SummaryFileError, match="line 1: expected row 0"):
        store.count_done(kb)


def test_llm_summarizer_runs_a_tiny_causal_lm(tiny_llm, kb):
    summ = LLMSummarizer(str(tiny_llm), device="cpu", max_new_tokens=5, max_words=50)
    prompt = summ.prompt(kb.at(0))
    assert "<|system|>" in prompt and kb.at(0).title in prompt and prompt.endswith("<|assistant|>\n")
    out = summ([kb.at(0), kb.at(1)])
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)


def test_sharded_encoding_resumes_and_refuses_foreign_shards(tmp_path: Path):
    texts = [f"t{i}" for i in range(23)]
    seen = []

    def enc(batch):
        seen.extend(batch)
        return np.array([[float(t[1:]), 1.0] for t in batch], dtype=np.float32)

    shards = encode_sharded(lambda s: iter(texts[s:]), 23, enc, tmp_path, info={"model_id": "m"}, shard_size=10,
                            batch_size=4, progress=False)
    assert [p.name for p in shards] == [shard_path(tmp_path, s, e).name for s, e in [(0, 10), (10, 20), (20, 23)]]
    assert np.concatenate([np.load(p) for p in shards])[:, 0].tolist() == list(range(23))
    shards[1].unlink()                                              # lost shard: only it is redone
    seen.clear()
    encode_sharded(lambda s: iter(texts[s:]), 23, enc, tmp_path, info={"model_id": "m"}, shard_size=10, batch_size=4,
                   progress=False)
    assert seen == texts[10:20]
    with pytest.raises(ShardError, match=r"different \['model_id'\]"):
        encode_sharded(lambda s: iter(texts[s:]), 23, enc, tmp_path, info={"model_id": "other"}, shard_size=10,
                       progress=False)


def test_encoding_reads_the_texts_once_however_many_shards(tmp_path: Path):
    """build_index read the summaries from their first line again for every shard (quadratic at 2M)."""
    texts = [f"t{i}" for i in range(95)]
    starts, read = [], []

    def texts_from(start):
        starts.append(start)
        for t in texts[start:]:
            read.append(t)
            yield t

    def enc(batch):
        return np.array([[float(t[1:])] for t in batch], dtype=np.float32)

    shards = encode_sharded(texts_from, 95, enc, tmp_path, info={"model_id": "m"}, shard_size=10, progress=False)
    assert starts == [0] and len(read) == 95
    for i in (0, 3, 4, 9):                                           # some shards lost: one pass from the first
        shards[i].unlink()
    starts.clear()
    read.clear()
    shards = encode_sharded(texts_from, 95, enc, tmp_path, info={"model_id": "m"}, shard_size=10, progress=False)
    assert starts == [0] and len(read) == 95
    assert np.concatenate([np.load(p) for p in shards])[:, 0].tolist() == list(range(95))


def test_resuming_summaries_checks_the_file_once_without_a_query_per_row(tmp_path: Path, kb, monkeypatch):
    store = SummaryStore(tmp_path / "s.jsonl")
    write_summaries(kb, store, lambda ents: [lead_summary(e) for e in ents], batch_size=16, progress=False)
    calls = []
    original = SummaryStore.count_done
    monkeypatch.setattr(SummaryStore, "count_done", lambda self, k: calls.append(1) or original(self, k))
    monkeypatch.setattr(type(kb), "url_at", lambda self, row: pytest.fail("a query per row"))
    assert write_summaries(kb, store, lambda ents: [lead_summary(e) for e in ents], batch_size=16,
                           progress=False) == 0
    assert calls == [1]
