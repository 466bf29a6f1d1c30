import json

import pytest

from omgm.metrics import infoseek
from omgm.metrics.evqa import EvaluationError, evaluate_evqa, normalize, score_answer


@pytest.mark.parametrize("text, norm", [
    ("The Eiffel Tower", "eiffel tower"),
    ("The answer is: Paris.", "paris"),
    ("A cat and an owl", "cat and owl"),
    ("a", ""),
    ("U.S.A.", "usa"),                       # punctuation deleted, no space inserted
    ("rock-and-roll", "rockandroll"),
    ("Three", "3"), ("ten", "10"), ("eleven", "eleven"), ("none", "0"), ("Zero", "0"),
    ("True", "yes"), ("contradiction", "no"),
    ("don't", "don't"), ("Dont", "don't"),    # apostrophe deleted, then re-expanded
    ("  line\nbreak\ttab ", "line break tab"),
    ("<extra_id_0> hello", "hello"),
    ("‘quoted’ `x` under_score", "quoted x underscore"),
])
def test_evqa_normalisation(text, norm):
    assert normalize(text) == norm


def test_evqa_single_alternatives_and_types():
    assert score_answer("q", "1889", "It was 1889.", "automatic") == (False, "miss")     # EM is exact
    assert score_answer("q", "1889", "1889.", "automatic") == (True, "em")
    assert score_answer("q", "Paris|City of Light", "the city of light", "templated") == (True, "em")
    assert score_answer("q", "three", "3", "2_hop") == (True, "em")
    with pytest.raises(EvaluationError, match="not an E-VQA type"):
        score_answer("q", "x", "x", "infoseek")
    with pytest.raises(EvaluationError, match="empty after normalisation"):
        score_answer("q", "the", "x", "automatic")


@pytest.mark.parametrize("ref, cand, ok", [
    ("red&&blue", "red and blue", True),
    ("red&&blue", "blue, red", True),
    ("red&&blue&&green", "red & blue", True),            # IoU 2/3
    ("red&&blue", "red", True),                          # IoU 1/2 passes (>= 0.5)
    ("red&&blue&&green", "red", False),                  # 1/3
    ("red&&blue", "red, yellow, purple", False),         # 1/4
    ("red&&blue", "Red And blue", False),                # " And " is not a separator (case-sensitive split)
    ("red&&blue", "", False),
])
def test_evqa_multi_answer_iou(ref, cand, ok):
    assert score_answer("q", ref, cand, "multi_answer")[0] is ok


class FakeBem:
    name = "fake BEM"

    def __init__(self):
        self.calls = []

    def equivalent(self, triples):
        self.calls += [(r, c) for _, r, c in triples]
        return ["approximately" in c for _, _, c in triples]


def test_evqa_bem_only_after_em_fails_and_report():
    bem = FakeBem()
    records = [
        {"data_id": "a", "question": "q", "gt_answer": "1889", "prediction": "1889", "question_type": "automatic"},
        {"data_id": "b", "question": "q", "gt_answer": "300 m|300 metres", "prediction": "approximately 300",
         "question_type": "templated"},
        {"data_id": "c", "question": "q", "gt_answer": "x&&y", "prediction": "  ", "question_type": "multi_answer"},
    ]
    rep = evaluate_evqa(records, bem)
    assert rep.accuracy == round(200 / 3, 2) and rep.passed_by == {"em": 1, "bem": 1, "miss": 1}
    assert ("300 m", "approximately 300") in bem.calls and all(c[1] != "1889" for c in bem.calls)
    assert rep.empty_predictions == 1 and rep.by_type["automatic"] == {"accuracy": 100.0, "count": 1}
    em_only = evaluate_evqa(records)
    assert em_only.accuracy == round(100 / 3, 2) and "lower bound" in em_only.metric
    with pytest.raises(EvaluationError, match="record 'z': missing field 'gt_answer'"):
        evaluate_evqa([{"data_id": "z", "question": "q", "prediction": "x", "question_type": "automatic"}])


def test_every_alternative_is_validated():
    """The official scorer scores every | alternative: an empty one is an error even after a match."""
    with pytest.raises(EvaluationError, match="empty after normalisation"):
        score_answer("q", "Paris|", "Paris", "automatic")
    with pytest.raises(EvaluationError, match="empty after normalisation"):
        score_answer("q", "the|Paris", "Paris", "templated")
    assert score_answer("q", "Paris|Lyon", "Lyon", "automatic") == (True, "em")


@pytest.mark.parametrize("text, parsed", [
    ("1,234", 1234.0), ("about 5.5 km", 5.5), ("9-10", [9.0, 10.0]), ("between 3 and 7", [3.0, 7.0]),
    ("10 to 3", 10.0), ("no idea", [0.0, 0.0]), ("1.2.3", [1.2, 3.0]), ("-5 degrees", -5.0), ("2e3", 2000.0),
    ("from 1 to 2 or 3", [1.0, 2.0]),
])
def test_infoseek_number_parsing(text, parsed):
    assert infoseek.parse_number_answer(text) == parsed


@pytest.mark.parametrize("pred, gold, ok", [
    (5.0, [4.5, 5.5], True), (5.5, [4.5, 5.5], True), (5.6, [4.5, 5.5], False),     # ends included
    ([4.6, 5.4], [4.5, 5.5], True),                                                # inside
    ([4.0, 5.0], [4.5, 5.5], False),                                               # IoU 0.5/1.5
    ([4.5, 6.5], [4.5, 5.5], True),                                                # IoU exactly 0.5 passes
    ([0.0, 0.0], [0.9, 1.1], False),
    (100.0, 95.0, True), (104.0, 95.0, True), (105.0, 95.0, False),                # a single value: +/-10%
])
def test_infoseek_numerical_rule(pred, gold, ok):
    assert infoseek.numerical_match(pred, gold) is ok


def test_infoseek_end_to_end_splits_and_harmonic_mean(tmp_path):
    val = [
        {"data_id": "q1", "answer_eval": ["Province of Belluno", "Belluno"], "data_split": "val_unseen_question"},
        {"data_id": "q2", "answer_eval": [{"wikidata": 1.0, "range": [0.9, 1.1]}], "data_split": "val_unseen_question"},
        {"data_id": "q3", "answer_eval": ["1889"], "data_split": "val_unseen_question"},
        {"data_id": "e1", "answer_eval": ["The Alps"], "data_split": "val_unseen_entity"},
        {"data_id": "e2", "answer_eval": ["1990"], "data_split": "val_unseen_entity"},
        {"data_id": "e3", "answer_eval": ["x"], "data_split": "val_unseen_entity"},     # no prediction: not counted
    ]
    qt = [{"data_id": "q1", "question_type": "String"}, {"data_id": "q2", "question_type": "Numerical"},
          {"data_id": "q3", "question_type": "Time"}, {"data_id": "e1", "question_type": "string"},
          {"data_id": "e2", "question_type": "time"}, {"data_id": "e3", "question_type": "string"}]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in val))
    (tmp_path / "qt.jsonl").write_text("\n".join(json.dumps(r) for r in qt))
    refs = infoseek.load_references(tmp_path / "val.jsonl", tmp_path / "qt.jsonl")
    preds = [{"data_id": "q1", "prediction": "belluno!"}, {"data_id": "q2", "prediction": "about 1.05 metres"},
             {"data_id": "q3", "prediction": "1890"},                     # time: no +/-1 year
             {"data_id": "e1", "prediction": "alps"}, {"data_id": "e2", "prediction": "in 1990"},
             {"data_id": "ghost", "prediction": "x"}]
    res = infoseek.evaluate_infoseek(preds, refs)
    assert res["unseen_question"]["score"] == 66.67 and res["unseen_question"]["count"] == 3
    assert res["unseen_question"]["score_numerical"] == 100.0 and res["unseen_question"]["score_time"] == 0.0
    assert res["unseen_entity"]["score"] == 50.0 and res["unseen_entity"]["count"] == 2
    assert res["final_score"] == round(2 / (1 / 66.67 + 1 / 50.0), 2) and res["ignored_unknown_ids"] == 1
    with pytest.raises(EvaluationError, match="no question type for 'q9'"):
        (tmp_path / "val2.jsonl").write_text(json.dumps({"data_id": "q9", "answer_eval": ["a"], "data_split": "x"}))
        infoseek.load_references(tmp_path / "val2.jsonl", tmp_path / "qt.jsonl")


def test_bootstrap_intervals_and_the_paired_test():
    from omgm.metrics.bootstrap import interval, paired

    hits = [1] * 60 + [0] * 40
    low, high = interval(hits)
    assert low < 60.0 < high and high - low < 25 and interval(hits) == [low, high]          # seeded: reproducible
    assert interval([]) is None
    same = paired(hits, hits)
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p_value"] == 1.0
    better = paired([1] * 90 + [0] * 10, hits)
    assert better["difference"] == 30.0 and better["interval"][0] > 0 and better["p_value"] < 0.01
    with pytest.raises(ValueError, match="the same questions"):
        paired(hits, hits[:-1])
