import json

import pytest
import torch

from omgm.commands import step2
from omgm.data.samples import ImageDirs
from omgm.rerank.convert import build_reranker
from omgm.rerank.dataset import Collate, RerankTrainSet
from omgm.rerank.inputs import image_transform
from omgm.rerank.negatives import read_negative_db
from omgm.rerank.train import contrastive_loss


def _dataset(env, neg_num=15):
    d = env.demo
    return RerankTrainSet(env.train, read_negative_db(env.dir / "negatives.json"), env.dir / "kb.sqlite", env.wiki,
                          ImageDirs(str(d / "images/inat"), str(d / "images/gld")), image_transform(224), neg_num)


def test_dataset_counts_drops_and_builds_batches(step2_env, bert_tokenizer):
    ds = _dataset(step2_env)
    assert len(ds) + sum(ds.drops.values()) == len(step2_env.train)
    assert ds.drops["no positive image"] == 4          # the demo entity without images has 4 train rows
    item = ds[0]
    assert len(item["cand_texts"]) == 16 and item["cand_texts"][0].startswith("# Wiki Article: ")
    again = ds[0]
    assert item["cand_texts"] == again["cand_texts"]     # same example, same epoch -> same negatives
    ds.shuffle_for_epoch(1)
    batch = Collate(bert_tokenizer)([ds[0], ds[1]])
    assert batch["qpix"].shape == (2, 3, 224, 224) and batch["cand_img"].shape == (2, 16)
    assert batch["c_ids"].shape[0] == 32 and batch["cpix"].shape[0] == int(batch["cand_img"].max()) + 1
    assert batch["cpix"].shape[0] < 32                  # images shared between candidates are loaded once


def test_training_steps_lower_the_loss_on_a_fixed_batch(step2_env, bert_tokenizer):
    torch.manual_seed(0)
    model, _ = build_reranker(str(step2_env.config))
    model.freeze_vision()
    model.eval()                                    # dropout off: the same batch gives the same loss
    ds = _dataset(step2_env)
    batch = Collate(bert_tokenizer)([ds[i] for i in range(4)])
    batch = {k: v for k, v in batch.items() if k not in ("errors", "size")}
    vit_before = model.vision.encoder.layers[0].mlp.fc1.weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(12):
        loss = contrastive_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-4:]) < 0.8 * losses[0], losses
    assert torch.equal(vit_before, model.vision.encoder.layers[0].mlp.fc1.weight)    # the ViT is frozen
    assert model.vision.post_layernorm.weight.grad is not None                      # ln_vision trains


def _train_args(env, save_dir, max_steps=None):
    d = env.demo
    args = ["train", "--train_file", str(d / "train.csv"), "--knowledge_base_file", str(env.dir / "kb.sqlite"),
            "--negative_db_file", str(env.dir / "negatives.json"), "--wiki_img_path_prefix", str(d / "wiki_images"),
            "--inat_dir", str(d / "images/inat"), "--gld_dir", str(d / "images/gld"),
            "--reranker-model-name", str(env.config), "--tokenizer", str(env.tok_dir), "--save_dir", str(save_dir),
            "--batch-size", "16", "--num-epochs", "2", "--learning-rate", "1e-3", "--save_frequency", "0.25",
            "--num_workers", "0", "--device", "cpu", "--no_progress", "--seed", "3"]
    return args + (["--max_steps", str(max_steps)] if max_steps else [])


def test_interrupted_training_resumes_to_the_same_state(step2_env, tmp_path):
    """Kill after step 5, resume from the step-4 checkpoint: the run continues as if never stopped.

    CPU kernels are not bit-reproducible across process histories (two fresh runs differ ~1e-8), so the
    comparison allows float noise; a wrong optimiser, RNG, data position or epoch order shows as >1e-3.
    """
    assert step2.main(_train_args(step2_env, tmp_path / "full")) == 0
    assert step2.main(_train_args(step2_env, tmp_path / "cut", max_steps=5)) == 0
    cut_log = (tmp_path / "cut/train_log.jsonl").read_text().splitlines()
    assert len(cut_log) == 5 and json.loads(cut_log[-1])["step"] == 5
    (tmp_path / "cut/model_5.pth").unlink()                                # as if killed after step 5, before
    (tmp_path / "cut/state_5.pt").unlink()                                 # any checkpoint after step 4
    assert step2.main(_train_args(step2_env, tmp_path / "cut")) == 0                    # resumes at step 4
    full = json.loads((tmp_path / "full/train_summary.json").read_text())
    resumed = json.loads((tmp_path / "cut/train_summary.json").read_text())
    assert resumed["resumed_from"] == 4 and resumed["steps"] == full["steps"] == 20
    a = [json.loads(x) for x in (tmp_path / "full/train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 21))              # the step logged before the kill is not repeated
    b = b[4:]
    assert [r["lr"] for r in b] == [r["lr"] for r in a[4:]]                              # scheduler restored
    assert abs(b[0]["loss"] - a[4]["loss"]) < 1e-5                                       # same batch, same dropout
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a[4:], b)) < 1e-5
    pa = torch.load(tmp_path / "full/model_20.pth", weights_only=True)["model"]
    pb = torch.load(tmp_path / "cut/model_20.pth", weights_only=True)["model"]
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.allclose(pa[k], pb[k], atol=1e-5), k


def test_resume_at_an_epoch_boundary_is_exact(step2_env, tmp_path):
    """The last checkpoint sits exactly at the end of epoch 1 (step 10 of 20)."""
    assert step2.main(_train_args(step2_env, tmp_path / "full")) == 0
    assert step2.main(_train_args(step2_env, tmp_path / "cut", max_steps=12)) == 0
    for f in ("model_12.pth", "state_12.pt"):
        (tmp_path / "cut" / f).unlink()
    assert (tmp_path / "cut/state_10.pt").is_file()
    assert step2.main(_train_args(step2_env, tmp_path / "cut")) == 0
    assert json.loads((tmp_path / "cut/train_summary.json").read_text())["resumed_from"] == 10
    a = [json.loads(x) for x in (tmp_path / "full/train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "cut/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 21))
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-5
    pa = torch.load(tmp_path / "full/model_20.pth", weights_only=True)["model"]
    pb = torch.load(tmp_path / "cut/model_20.pth", weights_only=True)["model"]
    assert all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in pa)


class _Planted:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/omgm_planted_state",))


def test_a_planted_training_state_is_not_unpickled(step2_env, tmp_path, capsys):
    import os

    assert step2.main(_train_args(step2_env, tmp_path / "run", max_steps=5)) == 0
    if os.path.exists("/tmp/omgm_planted_state"):
        os.unlink("/tmp/omgm_planted_state")
    torch.save({"step": 5, "x": _Planted()}, tmp_path / "run/state_5.pt")
    assert step2.main(_train_args(step2_env, tmp_path / "run") + ["--trust_checkpoint"]) == 2
    assert "cannot resume from" in capsys.readouterr().err
    assert not os.path.exists("/tmp/omgm_planted_state")


@pytest.mark.parametrize("flag", [["--learning-rate", "3e-5"], ["--batch-size", "4"], ["--num-epochs", "3"]])
def test_resuming_with_other_training_settings_is_refused(step2_env, tmp_path, flag, capsys):
    assert step2.main(_train_args(step2_env, tmp_path / "run", max_steps=2)) == 0
    assert step2.main(_train_args(step2_env, tmp_path / "run") + flag) == 2
    assert "holds a run made with other settings" in capsys.readouterr().err
