"""Fine-tuning the step-3 generator on the demo with tiny random models: the SFT set, the loss mask, the CLI,
exact resume, and outputs that step 3 loads (full model and LoRA adapter)."""
import json

import pytest
import torch

from omgm.commands import step3_train
from omgm.finetune.data import SftDataError, build_sft_set, read_sft_file, target_answer
from omgm.finetune.tokens import IGNORE, Collate, encode, image_pixels
from omgm.generate.generators import GeneratorSpec, build_generator


@pytest.fixture(scope="module")
def llava(tiny_step3_models):
    return build_generator(GeneratorSpec(str(tiny_step3_models.llava), device="cpu", max_new_tokens=4))


def _args(env, models, out, extra=()):
    d = env.demo
    return ["--train_file", str(d / "train.csv"), "--knowledge_base_path", str(env.dir / "kb.sqlite"),
            "--answer_generator", str(models.llava), "--section_reranker", str(models.cross),
            "--context_tokenizer", str(models.llava), "--inat_dir", str(d / "images/inat"), "--gld_dir",
            str(d / "images/gld"), "--output_dir", str(out), "--device", "cpu", "--no_progress", "--batch_size", "4",
            "--global_batch_size", "8", "--learning_rate", "3e-3", "--max_length", "1024", *extra]


def test_the_sft_set_is_step3s_input_with_the_answer(step2_env, llava, tmp_path):
    from omgm.data.samples import ImageDirs
    from omgm.generate.context import OfficialContextCut
    from omgm.generate.generators.base import GenRequest

    samples = step2_env.train[:12]
    cut = OfficialContextCut.load(str(llava.processor.tokenizer.name_or_path))
    dirs = ImageDirs(str(step2_env.demo / "images/inat"), str(step2_env.demo / "images/gld"))
    sft = build_sft_set(samples, step2_env.kb, llava, cut, mode="evidence", image_dirs=dirs)
    assert len(sft.examples) + sum(sft.skipped.values()) == len(samples)
    assert sft.examples, dict(sft.skipped)
    ex = sft.examples[0]
    s = next(x for x in samples if x.sample_id == ex["id"])
    assert ex["answer"] == target_answer(s) and ex["context"].startswith("# Wiki Article: ")
    assert ex["prompt"] == llava.render(GenRequest(s.question, ex["context"], s.dataset, ex["image"]))
    assert ex["section_id"] == s.evidence_section_index


def test_only_answer_tokens_carry_loss(llava, step2_env, demo_dir):
    ex = {"prompt": llava.render(__import__("omgm.generate.generators.base", fromlist=["GenRequest"]).GenRequest(
        "Where is it?", "# Wiki Article: X\n## Section Title: Y\nIt is in Zed.", "evqa")),
          "answer": "Zed", "image": str(demo_dir / "images/inat/inat0000.jpg")}
    item = encode(llava, ex)
    n_prompt = sum(x == IGNORE for x in item["labels"])
    answer = [x for x in item["labels"] if x != IGNORE]
    assert answer[-1] == llava.tokenizer.eos_token_id and len(answer) >= 2
    assert item["input_ids"][n_prompt:] == answer and len(item["input_ids"]) == len(item["labels"])
    batch = Collate(llava.tokenizer.pad_token_id, lambda paths: image_pixels(llava, paths))([item, item])
    with torch.no_grad():
        logits = llava.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        loss = llava.model(**batch).loss
    # the loss is the mean cross-entropy of the answer tokens alone (predicted from the position before each)
    tgt = torch.tensor(item["input_ids"])
    manual = torch.nn.functional.cross_entropy(logits[n_prompt - 1:len(tgt) - 1], tgt[n_prompt:])
    assert torch.allclose(loss, manual, atol=1e-5)


def test_cli_training_lowers_the_loss_and_raises_exact_match(step2_env, tiny_step3_models, tmp_path, capsys):
    sft = tmp_path / "sft.jsonl"
    args = _args(step2_env, tiny_step3_models, tmp_path / "full",
                 ["--sft_file", str(sft), "--train_section", "evidence", "--num_epochs", "20", "--learning_rate",
                  "1e-2", "--save_steps", "1000", "--eval_examples", "24"])
    assert step3_train.main(args) == 0
    examples, meta = read_sft_file(sft)
    assert meta["train_section"] == "evidence" and len(examples) > 100
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["last_loss"] < summary["first_loss"] / 2
    before, after = summary["exact_match_before_after"]
    assert after > before
    gen = build_generator(GeneratorSpec("llava1_5", str(tmp_path / "full"), device="cpu", max_new_tokens=3))
    assert gen.family == "llava-hf"
    # the SFT file is reused only with the settings it was built with
    other = _args(step2_env, tiny_step3_models, tmp_path / "other", ["--sft_file", str(sft), "--build_only"])
    assert step3_train.main(other) == 2
    assert "built with other settings (train_section: 'evidence' then, 'selected' now)" in capsys.readouterr().err


def test_cli_resume_is_exact(step2_env, tiny_step3_models, tmp_path):
    common = ["--num_epochs", "2", "--save_steps", "2", "--limit", "24"]
    assert step3_train.main(_args(step2_env, tiny_step3_models, tmp_path / "whole", common)) == 0
    cut = _args(step2_env, tiny_step3_models, tmp_path / "cut", common)
    assert step3_train.main(cut + ["--max_steps", "5"]) == 0          # "killed" after step 5, saved at 4 and 5
    for f in ("trainable_5.safetensors", "state_5.pt"):
        (tmp_path / "cut" / f).unlink()
    assert step3_train.main(cut) == 0                                  # resumes from step 4
    a = [json.loads(x) for x in (tmp_path / "whole/train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 7))
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-6
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "whole/trainable_6.safetensors")), load_file(str(tmp_path / "cut/trainable_6.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lora_adapter_and_merged_model_load_in_step3(step2_env, tiny_step3_models, tmp_path):
    args = _args(step2_env, tiny_step3_models, tmp_path / "lora", ["--tuning", "lora", "--lora_r", "4",
                                                                   "--lora_alpha", "8", "--max_steps", "3",
                                                                   "--merge_lora", "1", "--limit", "16"])
    assert step3_train.main(args) == 0
    assert (tmp_path / "lora/adapter_config.json").is_file() and (tmp_path / "lora/merged/config.json").is_file()
    from omgm.generate.generators.base import GenRequest

    req = [GenRequest("Where?", "# Wiki Article: X\n## Section Title: Y\nZ", "evqa",
                      step2_env.demo / "images/inat/inat0000.jpg")]
    merged = build_generator(GeneratorSpec("llava1_5", str(tmp_path / "lora/merged"), device="cpu", max_new_tokens=4))
    adapter = build_generator(GeneratorSpec("llava1_5", str(tmp_path / "lora"), device="cpu", max_new_tokens=4))
    assert adapter.generate(req) == merged.generate(req)
    base = build_generator(GeneratorSpec("llava1_5", str(tiny_step3_models.llava), device="cpu"))
    changed = [n for n, p in merged.model.state_dict().items() if not torch.equal(p, base.model.state_dict()[n])]
    assert changed and all("language_model" in n and n.endswith("_proj.weight") for n in changed)   # LoRA's targets
    assert all(torch.equal(a, b) for a, b in zip(adapter.model.state_dict().values(), merged.model.state_dict().values()))


def test_an_adapter_that_does_not_fit_its_base_is_refused(step2_env, tiny_step3_models, tmp_path):
    from safetensors.torch import load_file, save_file

    from omgm.generate.generators import GeneratorError

    args = _args(step2_env, tiny_step3_models, tmp_path / "lora", ["--tuning", "lora", "--lora_r", "2",
                                                                   "--max_steps", "1", "--limit", "8"])
    assert step3_train.main(args) == 0
    f = tmp_path / "lora/adapter_model.safetensors"
    weights = load_file(str(f))
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(f))
    with pytest.raises(GeneratorError, match="does not fit its base model: missing"):
        build_generator(GeneratorSpec("llava1_5", str(tmp_path / "lora"), device="cpu"))


def test_questions_that_cannot_make_an_example_are_counted_or_refused(step2_env, llava, demo_copy, capsys):
    from omgm.data.samples import ImageDirs

    (demo_copy / "images/inat/inat0000.jpg").unlink()
    def cut(text):
        return text, False
    samples = step2_env.train[:20]
    sft = build_sft_set(samples, step2_env.kb, llava, cut, mode="evidence",
                        image_dirs=ImageDirs(str(demo_copy / "images/inat"), str(demo_copy / "images/gld")))
    assert sft.skipped["query image missing"] >= 1
    with pytest.raises(SftDataError, match="query image missing"):
        build_sft_set(samples, step2_env.kb, llava, cut, mode="evidence", strict=True,
                      image_dirs=ImageDirs(str(demo_copy / "images/inat"), str(demo_copy / "images/gld")))


def test_two_processes_train_one_log_and_resume(step2_env, tiny_step3_models, tmp_path):
    from launch import ok, torchrun

    args = _args(step2_env, tiny_step3_models, tmp_path / "dp", ["--batch_size", "2", "--limit", "32",
                                                                 "--save_steps", "2"])
    first = torchrun("omgm step3 train", args + ["--max_steps", "3"])
    ok(first)
    assert first.stdout.count('"steps": 3') == 1                        # rank 0 alone reports
    ok(torchrun("omgm step3 train", args))                             # resumes from step 3 to the end (4)
    log = [json.loads(x) for x in (tmp_path / "dp/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "dp/train_summary.json").read_text())["steps"] == 4


def test_resume_with_other_settings_is_refused(step2_env, tiny_step3_models, tmp_path, capsys):
    args = _args(step2_env, tiny_step3_models, tmp_path / "run", ["--limit", "16", "--max_steps", "1"])
    assert step3_train.main(args) == 0
    assert step3_train.main(args + ["--learning_rate", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other settings (learning_rate: 0.003 then, 0.0001 now)" in err
