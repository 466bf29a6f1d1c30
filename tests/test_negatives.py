import json
import random
from collections import Counter

import pytest

from omgm.data.results import read_retrieval
from omgm.rerank.negatives import EntityCache, NegativeEntry, NegativeFileError, draw, negative_pool, read_negative_db


def test_mined_file_is_in_the_authors_format(step2_env):
    raw = json.loads((step2_env.dir / "negatives.json").read_text())
    s = step2_env.train[0]
    entry = raw[s.image_id]
    assert set(entry) == {"gt_entity_pos_img", "top_20"} and len(entry["top_20"]) == 20
    assert entry["top_20"][0] == {"entry": read_retrieval(step2_env.dir / "train_step1.json").urls(s.sample_id)[0]}
    assert entry["gt_entity_pos_img"].startswith("full/wiki_image_split/")
    parsed = read_negative_db(step2_env.dir / "negatives.json")
    assert parsed[s.image_id].top == tuple(e["entry"] for e in entry["top_20"])


def test_pool_rules(step2_env):
    kb, cache = step2_env.kb, EntityCache(step2_env.kb, step2_env.wiki)
    s = next(x for x in step2_env.train if x.question_type == "templated")
    negs = read_negative_db(step2_env.dir / "negatives.json")[s.image_id]
    counts = Counter()
    pos, pool = negative_pool(s, negs, cache, step2_env.wiki.root, rng=random.Random(0), counts=counts)
    assert pos.url == s.wikipedia_url and pos.section_id == int(s.evidence_section_id)
    assert pos.image == step2_env.wiki.root / negs.pos_img
    assert pos not in pool
    same = [c for c in pool if c.url == s.wikipedia_url]
    assert len(same) == 3 and all(c.image == pos.image and c.section_id != pos.section_id for c in same)
    # every kept section of every other top-20 entity that has an image, paired with its first image
    expected = sum(len(kb.get(u).sections()) for u in negs.top
                   if u != s.wikipedia_url and step2_env.wiki.first(kb.get(u).title))
    assert len(pool) - 3 == expected
    for c in pool:
        if c.url != s.wikipedia_url:
            assert c.image == step2_env.wiki.first(kb.get(c.url).title)
    picked = draw(pool, 15, random.Random(1))
    assert len(picked) == 15 and len(set(picked)) == 15 and pos not in picked
    assert draw(pool[:10], 15, random.Random(1)) is None


def test_drops_are_counted(step2_env):
    cache = EntityCache(step2_env.kb, step2_env.wiki)
    s = step2_env.train[0]
    counts = Counter()
    assert negative_pool(s, NegativeEntry(None, ()), cache, step2_env.wiki.root, rng=random.Random(0), counts=counts)[0] is None
    assert negative_pool(s, NegativeEntry("full/nope.jpg", ()), cache, step2_env.wiki.root, rng=random.Random(0),
                         counts=counts)[0] is None
    assert counts["no positive image"] == 2
    pos, pool = negative_pool(s, NegativeEntry(read_negative_db(step2_env.dir / "negatives.json")[s.image_id].pos_img,
                                               ("https://unknown",)), cache, step2_env.wiki.root, rng=random.Random(0),
                              counts=counts)
    assert pos is not None and counts["negative entity not in KB"] == 1 and len(pool) <= 3


def test_malformed_negative_file(tmp_path):
    (tmp_path / "n.json").write_text(json.dumps({"img1": {"gt_entity_pos_img": None, "top_20": [{"url": "x"}]}}))
    with pytest.raises(NegativeFileError, match="image 'img1': every 'top_20' item needs an 'entry'"):
        read_negative_db(tmp_path / "n.json")
