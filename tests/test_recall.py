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


def test_evaluate_takes_one_form_of_ranking():
    """Rankings reach evaluate() as {sample_id: [url, ...]} only (it used to guess between URL lists, (url, score)
    pairs and result entries); step-1/2 results are converted by one function, in their order."""
    import pytest

    from omgm.data.results import ranking
    from omgm.metrics.evaluate import evaluate

    results = {"q1": {"retrieved_entities": [{"url": "b"}, {"url": "a"}], "retrieval_similarities": [0.9, 0.9]},
               "q2": {"retrieved_entities": [{"url": "c"}], "retrieval_similarities": [0.1]}}
    assert ranking(results) == {"q1": ["b", "a"], "q2": ["c"]}
    rep = evaluate({"q1": "a", "q2": "c"}, ranking(results), [1, 2])
    assert rep.recall == {1: 50.0, 2: 100.0}
    with pytest.raises(TypeError, match="ranking"):
        evaluate({"q1": "a"}, results, [1])
    with pytest.raises(TypeError, match="ranking"):
        evaluate({"q1": "a"}, {"q1": [("a", 0.5)]}, [1])
