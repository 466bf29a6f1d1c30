"""Step-3 prompts (exact bytes of the published code), generators, the context cut and section fusion."""
import pytest

from omgm.errors import OmgmError
from omgm.generate import prompts
from omgm.generate.context import OfficialContextCut
from omgm.generate.decoding import clean_up_tokenization
from omgm.generate.generators import GeneratorError, GeneratorSpec, build_generator
from omgm.generate.generators.base import GenRequest
from omgm.generate.sections import CrossEncoder, SectionMismatchError, fuse_sections

# The published strings, typed independently of omgm/generate/prompts.py.
EXAMPLE = ("- Context: # Wiki Article: Dolomites\n## Section Title: Dolomites\nThe Dolomites, also known as the "
           "Dolomite Mountains, Dolomite Alps or Dolomitic Alps, are a mountain range located in northeastern Italy. "
           "The Dolomites are located in the regions of Veneto, Trentino-Alto Adige/Südtirol and Friuli Venezia "
           "Giulia, covering an area shared between the provinces of Belluno, Vicenza, Verona, Trentino, South "
           "Tyrol, Udine and Pordenone.\n- Question: Which city or region does this mountain locate in?\nJust answer "
           "the questions , no explanations needed. Short answer is: Province of Belluno\n\n")
VLM_EVQA = ("Answer the encyclopedic question about the given image.Don't mention the visuall content of image in "
            "your output. Directly output the answer of the question according to the Context.If the context does not "
            "contain the information required to answer the question, you should answer the question using internal "
            "model knowledge.\n ")
VLM_INFOSEEK = ("Answer the encyclopedic question about the given image.Don't mention the visuall content of image "
                "in your output. Directly output the answer of the question according to the Context.\nIf you need to "
                "answer questions about numbers or time, please output the corresponding numerical format directly.\n"
                "If the context does not contain the information required to answer the question, you should answer "
                "the question using internal model knowledge.\n There is an example:\n" + EXAMPLE)
SYS_EVQA = ("You are a helpful assistant for answering encyclopedic questions.If the context does not contain the "
            "information required to answer the question, you should answer the question using internal model "
            "knowledge.")
SYS_INFOSEEK = ("You are a helpful assistant for answering encyclopedic questions. Do not answer anything else.If you "
                "need to answer questions about numbers or time, please output the corresponding numerical format "
                "directly.If the context does not contain the information required to answer the question, you "
                "should answer the question using internal model knowledge.")
CORE_EVQA = "- Context: C\n- Question: Q?\nThe answer is:"
CORE_INFOSEEK = "- Context: C\n- Question: Q?\nJust answer the questions , no explanations needed. Short answer is:"


def test_prompt_bytes_are_the_published_ones():
    assert prompts.prompt_core("Q?", "C", "evqa") == CORE_EVQA
    assert prompts.prompt_core("Q?", "C", "infoseek") == CORE_INFOSEEK
    assert prompts.INFOSEEK_EXAMPLE == EXAMPLE
    assert prompts.vlm_text("Q?", "C", "evqa") == VLM_EVQA + CORE_EVQA
    assert prompts.vlm_text("Q?", "C", "infoseek") == VLM_INFOSEEK + CORE_INFOSEEK
    assert prompts.chat_messages("Q?", "C", "evqa") == [{"role": "system", "content": SYS_EVQA},
                                                         {"role": "user", "content": CORE_EVQA}]
    assert prompts.chat_messages("Q?", "C", "infoseek") == [{"role": "system", "content": SYS_INFOSEEK},
                                                             {"role": "user", "content": EXAMPLE + CORE_INFOSEEK}]
    merged = prompts.merge_system(prompts.chat_messages("Q?", "C", "evqa"))
    assert merged == [{"role": "user", "content": SYS_EVQA + "\n\n" + CORE_EVQA}]
    with pytest.raises(OmgmError, match="unknown prompt style 'fancy'"):
        prompts.check_style("fancy")


def test_chat_llm_official_rendering_and_decoding(tiny_step3_models):
    gen = build_generator(GeneratorSpec(str(tiny_step3_models.llm), device="cpu", max_new_tokens=5))
    req = GenRequest("Q?", "C", "infoseek")
    text = gen.render(req)
    assert text == f"<|system|>\n{SYS_INFOSEEK}\n<|user|>\n{EXAMPLE + CORE_INFOSEEK}\n<|assistant|>\n"
    assert gen.input_ids(req) == gen.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert gen.eos_ids == [gen.tokenizer.eos_token_id] + ([gen.tokenizer.unk_token_id]
                                                          if gen.tokenizer.unk_token_id is not None else [])
    assert gen.pad_id == gen.tokenizer.eos_token_id
    long = GenRequest("Q?", "word " * 9000, "evqa")
    assert len(gen.input_ids(long)) == 8000                      # the rendered chat is cut from the end
    gen.style = "omgm"
    assert len(gen.input_ids(long)) > 8000
    mistral = build_generator(GeneratorSpec("mistral", str(tiny_step3_models.llm), device="cpu"))
    assert mistral.pad_id == 2 and mistral.max_new_tokens == 128


def test_llava_hf_renders_the_image_first(tiny_step3_models, demo_dir):
    gen = build_generator(GeneratorSpec("llava1_5", str(tiny_step3_models.llava), device="cpu", max_new_tokens=4))
    assert gen.family == "llava-hf" and gen.max_new_tokens == 4
    assert gen.render(GenRequest("Q?", "C", "evqa")) == "USER: <image>\n" + VLM_EVQA + CORE_EVQA + " ASSISTANT:"
    img = demo_dir / "images/inat/inat0000.jpg"
    reqs = [GenRequest("what is it?", "ctx one", "evqa", img), GenRequest("where?", "a longer context here", "infoseek", img)]
    assert all(isinstance(a, str) for a in gen.generate(reqs))
    with pytest.raises(GeneratorError, match="every request needs one"):
        gen.generate([GenRequest("q", "c", "evqa", None)])
    assert build_generator(GeneratorSpec(str(tiny_step3_models.llava), device="cpu")).max_new_tokens == 200


@pytest.mark.parametrize("style", ["official", "omgm"])
def test_batched_generation_equals_one_by_one(tiny_step3_models, style):
    llm = build_generator(GeneratorSpec(str(tiny_step3_models.llm), prompt_style=style, device="cpu", max_new_tokens=6))
    reqs = [GenRequest(f"question {i}?", "context " * (i + 1), "infoseek" if i % 2 else "evqa") for i in range(5)]
    one_by_one = llm.generate(reqs)
    assert llm.generate(reqs, batch_size=3) == one_by_one             # left padding, grouped by length
    assert llm.generate(reqs[::-1], batch_size=2) == one_by_one[::-1]


def test_generator_names_and_folders(tmp_path):
    with pytest.raises(GeneratorError, match="unknown generator 'gpt-9'"):
        build_generator(GeneratorSpec("gpt-9"))
    with pytest.raises(GeneratorError, match="no such model folder"):
        build_generator(GeneratorSpec("llava1_5", str(tmp_path / "missing")))
    with pytest.raises(OmgmError, match="unknown prompt style"):
        build_generator(GeneratorSpec("llava1_5", prompt_style="x"))


def test_official_context_cut(tiny_step3_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_step3_models.llm))
    cut = OfficialContextCut(tok, max_tokens=20)
    short = "A short section ."
    assert cut(short) == (short, False)
    text = "The section says it . Isn't it ? " * 40
    out, was_cut = cut(text)
    ids = tok(text)["input_ids"]
    assert was_cut and out == clean_up_tokenization(tok.decode(ids[:20], skip_special_tokens=False))[4:]
    assert " ." not in out and " ?" not in out                           # transformers 4's clean-up, kept


def test_beta_fusion_and_fallback():
    q2s, sec = [0.9, 0.5, 0.1], [1.0, 4.0, 2.0]          # faithful step-2 scores are not bounded by 1
    c = fuse_sections(q2s, sec, beta=0.2)
    assert c.index == 1 and c.used_step2 and c.s3 == pytest.approx([0.92, 1.2, 0.48])
    assert fuse_sections(q2s, sec, beta=0.0).index == 0           # the official argparse default: q2s only
    fb = fuse_sections(q2s, [], beta=0.2)
    assert fb.index == 0 and not fb.used_step2 and fb.s3 == q2s   # no image upstream: the official code crashed
    with pytest.raises(SectionMismatchError, match="2 step-2 section scores for 3 sections"):
        fuse_sections(q2s, [1.0, 2.0], 0.2)


def test_cross_encoder_sigmoid_scores_and_batching(tiny_step3_models):
    ce = CrossEncoder(str(tiny_step3_models.cross), device="cpu", batch_size=2)
    pairs = [("q one", "a text"), ("q two", "another longer text here"), ("q one", "a text")]
    s = ce.scores(pairs)
    assert len(s) == 3 and all(0.0 < x < 1.0 for x in s) and s[0] == pytest.approx(s[2], abs=1e-6)
    ce.batch_size = 4
    assert ce.scores(pairs) == pytest.approx(s, abs=1e-6)                # batching does not change scores


def test_shared_prefix_cache_is_computed_once_and_changes_no_answer(tiny_step3_models):
    from omgm.generate.generators.base import greedy_ids
    from omgm.generate.generators.prefix import common_prefix

    llm = build_generator(GeneratorSpec(str(tiny_step3_models.llm), device="cpu", max_new_tokens=5))
    reqs = [GenRequest(f"question {i}?", "context " * (3 * i + 1), "infoseek") for i in range(6)]
    rows = [llm.input_ids(r) for r in reqs]
    n = common_prefix(rows)
    assert n > 100 and all(r[:n] == rows[0][:n] for r in rows)     # the system prompt and worked example
    alone = [greedy_ids(llm.model, [r], llm.pad_id, 5, eos_ids=llm.eos_ids)[0] for r in rows]
    assert llm.shared.generate(rows[:3], llm.pad_id, 5, llm.eos_ids) == alone[:3]
    assert llm.shared.generate(rows[3:], llm.pad_id, 5, llm.eos_ids) == alone[3:]
    assert llm.shared.prefix_runs == 1                               # the second batch reused the prefix cache
    assert llm.shared.generate([[1, 2, 3], [1, 2, 4]], llm.pad_id, 5) is None    # too short to share


def test_a_non_llava_vision_model_answers_with_its_new_tokens_not_its_prompt(tiny_step3_models, tmp_path):
    """A vlm-hf model has its own chat template (no LLaVA "ASSISTANT:"): splitting its whole decode on that marker,
    as the published llava-hf path does, returned the whole prompt as the answer."""
    import shutil

    from PIL import Image

    from omgm.generate.generators import FAMILIES, GeneratorSpec
    from omgm.generate.generators.base import GenRequest

    folder = tmp_path / "other_vlm"
    shutil.copytree(tiny_step3_models.llava, folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").write_text(template.replace("ASSISTANT:", "<|answer|>").replace("USER:", "<|ask|>"))
    common = dict(style="official", device="cpu", dtype=None, max_new_tokens=3)
    req = GenRequest("What is it?", "a context", "evqa", Image.new("RGB", (40, 30), (200, 10, 10)))
    spec = GeneratorSpec(answer_generator=str(folder), device="cpu")
    vlm = FAMILIES["vlm-hf"].load(str(folder), spec, common)
    answer = vlm.generate([req], 1)[0]
    assert vlm.answer_marker is None and "Answer the encyclopedic question" not in answer and "<|ask|>" not in answer
    as_llava = FAMILIES["llava-hf"].load(str(folder), spec, common).generate([req], 1)[0]
    assert "Answer the encyclopedic question" in as_llava           # the marker path on this template: the prompt
    assert FAMILIES["vlm-hf"].new_tokens == 128 and not FAMILIES["vlm-hf"].finetune      # not LLaVA's 200 or its SFT
