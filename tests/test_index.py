from pathlib import Path

import faiss
import numpy as np
import pytest

from omgm.retrieval.index import (
    IndexManifest,
    IndexMismatchError,
    build_flat_ip,
    check_index,
    load_index,
    manifest_path,
    search,
    write_index,
)


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_search_equals_numpy_brute_force(batch: int):
    rng = np.random.default_rng(0)
    db, q = _unit(rng, 500, 32), _unit(rng, 40, 32)
    scores, ids = search(build_flat_ip(db), q, k=10, batch_size=batch)
    ref = q @ db.T
    ref_ids = np.argsort(-ref, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, ref_ids, 1), rtol=1e-5, atol=1e-6)


def test_k_larger_than_index_is_clipped():
    rng = np.random.default_rng(1)
    scores, ids = search(build_flat_ip(_unit(rng, 5, 8)), _unit(rng, 2, 8), k=20)
    assert ids.shape == (2, 5) and sorted(ids[0].tolist()) == list(range(5))


def _manifest(**kw) -> IndexManifest:
    base = dict(model_id="m", dim=8, count=5, kb_url_order_hash="h", kb_path="kb.json")
    return IndexManifest(**{**base, **kw})


def test_manifest_written_and_checked(tmp_path: Path):
    idx = build_flat_ip(_unit(np.random.default_rng(2), 5, 8))
    path = write_index(idx, tmp_path / "s.index", _manifest())
    index, man = load_index(path)
    assert manifest_path(path).is_file() and man.model_id == "m" and index.ntotal == 5
    ok = dict(index_path=path, kb_len=5, kb_hash="h", model_id="m", dim=8)
    assert check_index(index, man, **ok) == []
    with pytest.raises(IndexMismatchError, match="field 'kb_url_order_hash' differs"):
        check_index(index, man, **{**ok, "kb_hash": "other"})
    with pytest.raises(IndexMismatchError, match="field 'model_id' is 'm' in the manifest but the retriever is 'x'"):
        check_index(index, man, **{**ok, "model_id": "x"})
    notes = check_index(index, man, **{**ok, "model_id": "x"}, allow_model_mismatch=True)
    assert notes and notes[0].startswith("WARNING")
    with pytest.raises(IndexMismatchError, match="5 vectors but the knowledge base has 6"):
        check_index(index, man, **{**ok, "kb_len": 6})
    with pytest.raises(IndexMismatchError, match="dimension 8 but the retriever"):
        check_index(index, man, **{**ok, "dim": 16})
    with pytest.raises(IndexMismatchError, match="field 'count' is 4"):
        check_index(index, _manifest(count=4), **ok)


def test_bare_index_without_manifest_is_accepted_with_a_note(tmp_path: Path):
    faiss.write_index(build_flat_ip(_unit(np.random.default_rng(3), 5, 8)), str(tmp_path / "summary_llama3.index"))
    index, man = load_index(tmp_path / "summary_llama3.index")
    assert man is None
    notes = check_index(index, None, index_path="summary_llama3.index", kb_len=5, kb_hash="h", model_id="m", dim=8)
    assert "no manifest found" in notes[0]
    with pytest.raises(IndexMismatchError, match="5 vectors but the knowledge base has 9"):
        check_index(index, None, index_path="x", kb_len=9, kb_hash="h", model_id="m", dim=8)


def test_corrupt_index_file(tmp_path: Path):
    (tmp_path / "bad.index").write_bytes(b"not faiss")
    with pytest.raises(IndexMismatchError, match="bad.index: not a readable FAISS index"):
        load_index(tmp_path / "bad.index")


def _shards(tmp_path: Path, x: np.ndarray, parts: int) -> list[Path]:
    out = []
    for i, block in enumerate(np.array_split(x, parts)):
        out.append(tmp_path / f"shard_{i:03d}.npy")
        np.save(out[-1], block)
    return out


def test_approximate_index_keeps_its_search_params_and_measures_recall_with_them(tmp_path):
    from omgm.retrieval.assemble import build_from_shards
    from omgm.retrieval.index import IndexMismatchError, apply_search_params

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    shards = _shards(tmp_path, x, 3)
    low, m_low = build_from_shards(shards, 16, "IVF64,Flat", recall_queries=200)
    high, m_high = build_from_shards(shards, 16, "IVF64,Flat", search_params="nprobe=64", recall_queries=200)
    assert faiss.extract_index_ivf(low).nprobe == 1 and faiss.extract_index_ivf(high).nprobe == 64
    assert m_high["search_params"] == "nprobe=64" and m_high["recall_vs_flat"]["R@20"] == 1.0
    assert m_low["recall_vs_flat"]["R@20"] == 0.2975          # as the one-array build measured it (same queries)
    _, pq = build_from_shards(shards, 16, "IVF16,PQ4x4", recall_queries=300)
    assert pq["recall_vs_flat"]["R@20"] == 0.303              # idem: trained on the same (all) vectors
    with pytest.raises(IndexMismatchError, match="--faiss_params 'efSearch=8'"):
        apply_search_params(low, "efSearch=8")


def test_search_uses_the_manifests_params_unless_given(tmp_path: Path, tiny_retriever, step2_env):
    from omgm.pipeline.search import EntitySearch

    kb = step2_env.kb
    x = _unit(np.random.default_rng(4), len(kb), tiny_retriever.dim)
    index = faiss.index_factory(x.shape[1], "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    man = IndexManifest(model_id=tiny_retriever.model_id, dim=x.shape[1], count=len(kb),
                        kb_url_order_hash=kb.url_order_hash(), kb_path="kb", index_type="IVF4,Flat",
                        texts={"search_params": "nprobe=3"})
    path = write_index(index, tmp_path / "s.index", man)
    built = EntitySearch.load(tiny_retriever, path, kb, faiss_gpu="no")
    assert faiss.extract_index_ivf(built.index).nprobe == 3 and "FAISS search parameters: nprobe=3" in built.notes
    given = EntitySearch.load(tiny_retriever, path, kb, faiss_gpu="no", search_params="nprobe=4")
    assert faiss.extract_index_ivf(given.index).nprobe == 4
