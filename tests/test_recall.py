import pytest

from omgm.metrics.recall import recall_at_k


def test_hand_made_recall():
    rankings = {"a": ["x", "g", "y"], "b": ["g2", "z"], "c": ["p", "q", "r"], "d": ["g4"]}
    gold = {"a": "g", "b": "g2", "c": "nope", "d": "g4", "e": "g5"}      # e has no ranking
    rep = recall_at_k(rankings, gold, [1, 2, 3])
    assert rep.total == 5 and rep.missing == 1
    assert rep.hits == {1: 2, 2: 3, 3: 3}
    assert rep.recall == {1: 40.0, 2: 60.0, 3: 60.0}
    assert rep.as_dict()["recall"] == {"R@1": 40.0, "R@2": 60.0, "R@3": 60.0}
    assert "1 samples had no ranking" in rep.table()


def test_k_beyond_list_and_empty_gold():
    assert recall_at_k({"a": ["x", "g"]}, {"a": "g"}, [1, 50]).recall == {1: 0.0, 50: 100.0}
    with pytest.raises(ValueError, match="zero samples"):
        recall_at_k({}, {}, [1])
