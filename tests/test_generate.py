import pytest

from omgm.generate import prompts
from omgm.generate.generators import ChatLMGenerator, GeneratorError, GenRequest, VLMGenerator, build_generator
from omgm.generate.sections import CrossEncoder, SectionMismatchError, fuse_sections


def test_prompt_strings_are_exact():
    assert prompts.user_prompt("Who built it?", "Built by X.", False) == \
        "- Context: Built by X.\n- Question: Who built it?\nThe answer is:"
    assert prompts.user_prompt("Who built it?", "Built by X.", True) == (
        "- Context: Built by X.\n- Question: Who built it?\nThe answer is:"
        "\nJust answer the questions , no explanations needed. Short answer is:")
    evqa = prompts.chat_messages("q", "c", False)
    assert [m["role"] for m in evqa] == ["system", "user"]
    info = prompts.chat_messages("q", "c", True)
    assert [m["role"] for m in info] == ["system", "user", "assistant", "user"]
    assert "Dolomites" in info[1]["content"] and info[2]["content"] == "Province of Belluno"
    assert info[1]["content"].endswith(prompts.INFOSEEK_SUFFIX)
    vlm = prompts.vlm_messages("q", "c", False)
    assert vlm[0]["content"][0] == {"type": "image"} and vlm[0]["content"][1]["text"].startswith("- Context: c")
    merged = prompts.merge_system(evqa)
    assert len(merged) == 1 and merged[0]["content"].startswith(prompts.SYSTEM_PROMPT + "\n\n- Context: c")


def test_beta_fusion_and_fallback():
    q2s, sec = [0.9, 0.5, 0.1], [1.0, 4.0, 2.0]          # faithful step-2 scores are not bounded by 1
    c = fuse_sections(q2s, sec, beta=0.2)
    assert c.index == 1 and c.used_step2 and c.s3 == pytest.approx([0.92, 1.2, 0.48])
    assert fuse_sections(q2s, sec, beta=0.0).index == 0           # the official argparse default: q2s only
    fb = fuse_sections(q2s, [], beta=0.2)
    assert fb.index == 0 and not fb.used_step2 and fb.s3 == q2s   # no image upstream: the official code crashed
    with pytest.raises(SectionMismatchError, match="2 step-2 section scores for 3 sections"):
        fuse_sections(q2s, [1.0, 2.0], 0.2)


def test_cross_encoder_sigmoid_scores(tiny_step3_models):
    ce = CrossEncoder(str(tiny_step3_models.cross), device="cpu", batch_size=2)
    s = ce.scores([("q one", "a text"), ("q two", "another text"), ("q one", "a text")])
    assert len(s) == 3 and all(0.0 < x < 1.0 for x in s) and s[0] == pytest.approx(s[2], abs=1e-6)


def test_generators_from_local_folders(tiny_step3_models, demo_dir):
    vlm = build_generator(str(tiny_step3_models.llava), device="cpu", max_new_tokens=4)
    llm = build_generator(str(tiny_step3_models.llm), device="cpu", max_new_tokens=4)
    assert isinstance(vlm, VLMGenerator) and isinstance(llm, ChatLMGenerator)
    assert build_generator(str(tiny_step3_models.llava), device="cpu").max_new_tokens == 200
    img = demo_dir / "images/inat/inat0000.jpg"
    reqs = [GenRequest("what is it?", "ctx one", False, img), GenRequest("where?", "a longer context here", True, img)]
    assert [type(x) for x in vlm.generate(reqs)] == [str, str]
    assert len(llm.generate(reqs)) == 2
    assert "USER: <image>\n- Context: ctx one" in vlm.render(reqs[0])
    with pytest.raises(GeneratorError, match="needs the query image"):
        vlm.generate([GenRequest("q", "c", False, None)])
    text, cut = llm.truncate("word " * 400, 16)
    assert cut and len(llm.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 17
    assert llm.truncate("short", 16) == ("short", False)


def test_batched_generation_equals_one_by_one(tiny_step3_models, demo_dir):
    llm = build_generator(str(tiny_step3_models.llm), device="cpu", max_new_tokens=6)
    reqs = [GenRequest(f"question {i}?", "context " * (i + 1), i % 2 == 0) for i in range(4)]
    one_by_one = [llm.generate([r])[0] for r in reqs]
    assert llm.generate(reqs) == one_by_one                                # left padding changes nothing
    assert llm.generate_all(reqs[::-1], batch_size=3) == one_by_one[::-1]  # grouped by length, order kept


def test_unknown_generator():
    with pytest.raises(GeneratorError, match="unknown generator 'gpt-9'"):
        build_generator("gpt-9")
