"""BEM in PyTorch: the official input (candidate, reference, question; segment ids; padded to 512) and scoring."""
import pytest
import torch

from omgm.metrics.bem import BemInputTooLong, BemModelError, BemScorer, bem_input, bem_reference
from omgm.metrics.evqa import evaluate_evqa


def _bert_classifier(folder, tokenizer, type_vocab_size=2, num_labels=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, type_vocab_size=type_vocab_size, num_labels=num_labels)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_input_is_cls_candidate_sep_reference_sep_question_sep(bert_tokenizer):
    tok = bert_tokenizer
    ids, segs = bem_input(tok, "in 1889", "1889", "what year", type_vocab_size=3)
    cand = tok("in 1889", add_special_tokens=False)["input_ids"]
    ref = tok("1889", add_special_tokens=False)["input_ids"]
    q = tok("what year", add_special_tokens=False)["input_ids"]
    body = [tok.cls_token_id] + cand + [tok.sep_token_id] + ref + [tok.sep_token_id] + q + [tok.sep_token_id]
    assert len(ids) == len(segs) == 512
    assert ids[:len(body)] == body and set(ids[len(body):]) == {0}
    assert segs[:len(body)] == [0] * (len(cand) + 2) + [1] * (len(ref) + 1) + [2] * (len(q) + 1)
    assert set(segs[len(body):]) == {0}
    _, segs2 = bem_input(tok, "in 1889", "1889", "what year", type_vocab_size=2)
    assert max(segs2) == 1                                   # a 2-type model gets the question as segment 1
    with pytest.raises(BemInputTooLong, match="exceeds 512"):       # the official scorer raises; no silent cut
        bem_input(tok, "word " * 600, "x", "q")
    assert bem_reference("red&&blue", "multi_answer") == "red,blue" and bem_reference("a&&b", "automatic") == "a&&b"


@pytest.mark.parametrize("types", [2, 3])
def test_scorer_batches_and_thresholds(tmp_path, bert_tokenizer, types):
    bem = BemScorer(str(_bert_classifier(tmp_path / "bem", bert_tokenizer, types)), device="cpu", batch_size=2)
    triples = [("what year", "1889", "in 1889"), ("q", "red,blue", "red"), ("what year", "1889", "in 1889")]
    p = bem.probabilities(triples)
    assert len(p) == 3 and all(0.0 < x < 1.0 for x in p) and p[0] == pytest.approx(p[2], abs=1e-6)
    assert bem.equivalent(triples) == [x >= 0.5 for x in p]
    assert ("0/1/2" in bem.name) == (types == 3)


def test_wrong_model_class_is_refused(tmp_path, bert_tokenizer):
    folder = _bert_classifier(tmp_path / "one", bert_tokenizer, num_labels=1)
    with pytest.raises(BemModelError, match="with 1 labels; BEM is a BERT sequence classifier with 2 labels"):
        BemScorer(str(folder), device="cpu")


def test_evaluate_with_bem_counts_how_each_question_passed(tmp_path, bert_tokenizer, monkeypatch):
    bem = BemScorer(str(_bert_classifier(tmp_path / "bem", bert_tokenizer)), device="cpu")
    monkeypatch.setattr(bem, "probabilities", lambda triples: [0.9 if "approximately" in c else 0.1 for _, _, c in triples])
    recs = [{"data_id": "a", "question": "q", "gt_answer": "1889", "prediction": "1889", "question_type": "automatic"},
            {"data_id": "b", "question": "q", "gt_answer": "300 m", "prediction": "approximately 300",
             "question_type": "templated"},
            {"data_id": "c", "question": "q", "gt_answer": "x", "prediction": "y", "question_type": "automatic"}]
    rep = evaluate_evqa(recs, bem)
    assert rep.passed_by == {"em": 1, "bem": 1, "miss": 1} and rep.metric.startswith("BEM (")


def test_answers_over_512_ids_are_counted_and_do_not_pass(tmp_path, bert_tokenizer):
    bem = BemScorer(str(_bert_classifier(tmp_path / "bem", bert_tokenizer)), device="cpu")
    triples = [("q", "1889", "in 1889"), ("q", "1889", "word " * 600)]
    p = bem.probabilities(triples)
    assert p[0] is not None and p[1] is None and bem.equivalent(triples)[1] is None
    recs = [{"data_id": "a", "question": "q", "gt_answer": "1889", "prediction": "word " * 600,
             "question_type": "automatic"},
            {"data_id": "b", "question": "q", "gt_answer": "1889", "prediction": "1889", "question_type": "automatic"}]
    rep = evaluate_evqa(recs, bem).as_dict()
    assert rep["bem_inputs_over_512"] == 1 and rep["passed_by"] == {"bem_too_long": 1, "em": 1}
    assert rep["accuracy"] == 50.0
