from pathlib import Path

import pytest
import torch

from omgm.data.images import load_image
from omgm.data.samples import ImageDirs
from omgm.fusion import Fusion
from omgm.rerank.inputs import image_transform
from omgm.rerank.scoring import CandidateEncoder, encode_queries, entity_scores, naive_section_scores


@pytest.fixture()
def setup(step2_env, tiny_reranker, bert_tokenizer):
    t = image_transform(224)
    dirs = ImageDirs(str(step2_env.demo / "images/inat"), str(step2_env.demo / "images/gld"))
    s = step2_env.test[0]
    pix = t(load_image(dirs.resolve(s))).unsqueeze(0)
    q = encode_queries(tiny_reranker, bert_tokenizer, pix, [s.question], query_norm="faithful")[0]
    return t, s, q


def test_fast_scores_equal_naive_per_pair_scores(step2_env, tiny_reranker, bert_tokenizer, setup):
    t, s, q = setup
    urls = step2_env.urls[:6]
    enc = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, batch_size=5)
    ents = enc.encode(urls)
    assert enc.counts["images encoded"] == enc.counts["entities encoded"] <= 6
    for u in urls:
        ent = step2_env.kb.get(u)
        img = step2_env.wiki.first(ent.title)
        fast = entity_scores(q, ents[u])
        if img is None:
            assert fast == [] and ents[u].reason
            continue
        naive = naive_section_scores(tiny_reranker, bert_tokenizer, q, ent, image=img, transform=t)
        assert len(fast) == len(ent.sections()) and ents[u].section_ids == [x.index for x in ent.sections()]
        assert max(abs(a - b) for a, b in zip(fast, naive)) < 1e-5


def test_entity_without_image_or_unknown_scores_empty(step2_env, tiny_reranker, bert_tokenizer, setup):
    t, s, q = setup
    no_img = next(u for u in step2_env.urls if step2_env.wiki.first(step2_env.kb.get(u).title) is None)
    enc = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t)
    ents = enc.encode([no_img, "https://not-in-kb"])
    assert entity_scores(q, ents[no_img]) == [] and ents[no_img].reason == "title not in the wiki-image CSVs"
    assert entity_scores(q, ents["https://not-in-kb"]) == [] and enc.counts["entity not in KB"] == 1


def test_disk_cache_is_reused_and_keyed_by_model(step2_env, tiny_reranker, bert_tokenizer, setup, tmp_path):
    t, s, q = setup
    urls = step2_env.urls[:4]
    first = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path)
    a = first.encode(urls)
    second = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path)
    b = second.encode(urls)
    assert second.counts["disk hits"] == 4 and second.counts["entities encoded"] == 0
    for u in urls:
        fa, fb = entity_scores(q, a[u]), entity_scores(q, b[u])
        assert len(fa) == len(fb) and all(abs(x - y) < 2e-3 for x, y in zip(fa, fb))   # stored in fp16
    with torch.no_grad():
        tiny_reranker.temp.add_(1.0)                  # another model -> another cache key
    third = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path)
    third.encode(urls[:1])
    assert third.counts["disk hits"] == 0 and third.cache_dir != first.cache_dir


def test_a_cache_miss_reads_each_entity_once(step2_env, tiny_reranker, bert_tokenizer, setup, tmp_path):
    t, _, _ = setup
    reads = []

    class CountingKB:
        def __contains__(self, url):
            return url in step2_env.kb

        def get(self, url):
            reads.append(url)
            return step2_env.kb.get(url)

    urls = step2_env.urls[:3]
    enc = CandidateEncoder(tiny_reranker, bert_tokenizer, CountingKB(), step2_env.wiki, t, cache_dir=tmp_path)
    enc.encode(urls)
    assert sorted(reads) == sorted(urls)            # one read per entity, with the disk cache on (was 2-3)
    reads.clear()
    enc.encode(urls)                                # memory hits: no read at all
    assert reads == [] and enc.counts["memory hits"] == 3


def test_fusion_by_hand():
    s1 = [0.30, 0.28, 0.25]
    secs = [[0.1, 0.2], [], [0.9, 0.5]]
    order = Fusion().order(s1, secs, alpha=0.9)
    # fused: 0.9*0.30+0.1*0.2=0.29 ; 0.9*0.28+0=0.252 ; 0.9*0.25+0.1*0.9=0.315
    assert [i for i, _, _ in order] == [2, 0, 1]
    assert [round(f, 6) for _, f, _ in order] == [0.315, 0.29, 0.252]
    assert [s2 for _, _, s2 in order] == [0.9, 0.2, 0.0]
    assert [i for i, _, _ in Fusion().order(s1, secs, alpha=1.0)] == [0, 1, 2]


def test_memory_cache_is_capped_in_bytes(step2_env, tiny_reranker, bert_tokenizer, setup):
    t, s, q = setup
    urls = step2_env.urls[:8]
    enc = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, memory_bytes=25_000)
    first = enc.encode(urls)
    assert enc.held_bytes <= 25_000 and 1 <= len(enc.memory) < 8
    assert enc.held_bytes == sum(CandidateEncoder._size(e) for e in enc.memory.values())
    last = next(reversed(enc.memory))                              # the most recently stored stays cached
    again = enc.encode([last])
    assert enc.counts["memory hits"] == 1 and again[last] is first[last]


def test_chunks_group_questions_that_share_candidates():
    from types import SimpleNamespace

    from omgm.pipeline.rerank import grouped

    lists = {"a": ["x", "y"], "b": ["z", "y"], "c": ["x", "y"], "d": ["x", "w"], "e": ["z", "y"]}
    samples = [SimpleNamespace(sample_id=k) for k in lists]
    entries = {k: {"retrieved_entities": [{"url": u} for u in v]} for k, v in lists.items()}
    assert [s.sample_id for s in grouped(samples, entries)] == ["a", "c", "d", "b", "e"]


def test_disk_cache_entries_expire_when_their_image_or_text_changes(step2_env, tiny_reranker, bert_tokenizer, setup,
                                                                     tmp_path):
    import shutil

    from omgm.data.wiki_images import wiki_images_for

    t, _, _ = setup
    images = Path(shutil.copytree(step2_env.demo / "wiki_images", tmp_path / "imgs"))
    wiki = wiki_images_for(step2_env.kb, images, step2_env.demo / "wiki_image_csv")
    url = next(u for u in step2_env.urls if wiki.first(step2_env.kb.get(u).title) is not None)
    first_image = wiki.first(step2_env.kb.get(url).title)
    saved = first_image.read_bytes()
    backup = {p: p.read_bytes() for p in images.rglob("*.jpg")}
    for p in backup:                                          # every wiki image missing, for now
        p.unlink()
    a = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, wiki, t, cache_dir=tmp_path / "c")
    assert a.encode([url])[url].tokens is None
    for p, data in backup.items():                            # the images arrive
        p.write_bytes(data)
    b = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, wiki, t, cache_dir=tmp_path / "c")
    assert b.encode([url])[url].tokens is not None and b.counts["disk hits"] == 0
    assert first_image.read_bytes() == saved
    c = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, wiki, t, cache_dir=tmp_path / "c")
    c.encode([url])
    assert c.counts["disk hits"] == 1                          # unchanged inputs: reused


def test_the_disk_cache_is_bounded_least_recently_used_first(step2_env, tiny_reranker, bert_tokenizer, setup,
                                                             tmp_path):
    t, _, _ = setup
    urls = [u for u in step2_env.urls if step2_env.wiki.first(step2_env.kb.get(u).title)][:6]
    probe = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path / "p")
    probe.encode(urls[:1])
    entry = probe.disk.bytes                                         # one entity's file
    enc = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path / "c",
                           disk_bytes=entry * 3.5)
    enc.encode(urls[:3])
    enc.memory.clear()
    enc.encode(urls[:1])                                             # used again: now the most recent
    enc.encode(urls[3:5])
    report = enc.disk.report()
    assert report["disk_cache_evicted"] >= 1 and enc.disk.bytes <= entry * 3.5
    assert enc.disk.bytes == sum(p.stat().st_size for p in (tmp_path / "c").rglob("*.pt"))      # counted exactly
    left = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path / "c")
    left.encode([urls[0], urls[1]])
    assert left.counts["disk hits"] == 1 and left.counts["entities encoded"] == 1     # urls[1] went first


def test_a_damaged_cache_entry_is_recomputed(step2_env, tiny_reranker, bert_tokenizer, setup, tmp_path, caplog):
    t, s, q = setup
    url = step2_env.urls[0]
    first = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path)
    good = entity_scores(q, first.encode([url])[url])
    (entry,) = list(first.cache_dir.rglob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:40])                     # torn
    again = CandidateEncoder(tiny_reranker, bert_tokenizer, step2_env.kb, step2_env.wiki, t, cache_dir=tmp_path)
    with caplog.at_level("WARNING"):
        got = entity_scores(q, again.encode([url])[url])
    assert "a damaged cache entry" in caplog.text and again.counts["entities encoded"] == 1
    assert len(got) == len(good) and all(abs(x - y) < 1e-5 for x, y in zip(got, good))


def test_random_reranker_weights_are_seeded(step2_env):
    from omgm.data.wiki_images import WikiSource
    from omgm.pipeline.rerank import RerankConfig, RerankerSpec
    from omgm.rerank.scoring import model_hash

    cfg = RerankConfig(model=RerankerSpec(reranker_model_name=str(step2_env.config), tokenizer=str(step2_env.tok_dir),
                                          device="cpu"),
                       wiki=WikiSource(wiki_img_path_prefix=str(step2_env.demo / "wiki_images")))
    torch.manual_seed(123)
    a = cfg.build(step2_env.kb)
    state = torch.get_rng_state()
    b = cfg.build(step2_env.kb)
    assert model_hash(a.model) == model_hash(b.model)                # one cache key, not one per run
    assert torch.equal(state, torch.get_rng_state())                 # the caller's random state is left alone


def test_question_scores_batched_equal_each_candidate_alone():
    """Step 2 scores all of a question's candidates in one call; the figures equal one call per candidate, bit for
    bit, and a candidate without tokens keeps its place with no scores."""
    from omgm.rerank.model import late_interaction
    from omgm.rerank.scoring import EntityTokens, question_scores

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(32, 64, generator=g), dim=-1)
    ets = []
    for n in [3, 0, 8, 1, 5]:
        tokens = torch.nn.functional.normalize(torch.randn(n, 32, 64, generator=g), dim=-1) if n else None
        ets.append(EntityTokens(list(range(n)), tokens, "" if n else "no sections"))
    got = question_scores(q, ets)
    want = [late_interaction(q.unsqueeze(0), et.tokens)[0].tolist() if et.tokens is not None else [] for et in ets]
    assert got == want
    assert [len(x) for x in got] == [3, 0, 8, 1, 5]
    assert question_scores(q, [ets[1]]) == [[]]
