"""Step 2a: contrastive training of the IT2IT reranker: CE over [s(q,pos), s(q,neg_1..15)] / temp.

AdamW (betas 0.9/0.98, eps 1e-7, wd 0.05) on the trainable parameters (Q-Former, query tokens, temp,
ln_vision; the ViT is frozen), OneCycleLR (max lr, pct_start 0.3, div_factor 100), fp16 autocast with a
GradScaler on GPU, through ``accelerate`` (one CPU, one GPU, or ``accelerate launch`` on several).

Every ``save_frequency`` of an epoch: ``model_{step}.pth`` (omgm format, trainable parameters) and
``state_{step}.pt`` (optimiser, scheduler, scaler, RNG, position). A run started again in the same
``save_dir`` resumes from the last pair and reaches the same state as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omgm.config import nonnegative_int, positive_float, positive_int, zero_one
from omgm.data.kb import KB_HELP
from omgm.io import atomic_write, write_json_atomic
from omgm.rerank.convert import read_checkpoint, save_ours
from omgm.rerank.dataset import Collate, RerankTrainSet
from omgm.rerank.model import IT2ITReranker, normalise_tokens, paired_late_interaction
from omgm.settings import setting
from omgm.train_state import (
    ResumeStateError,
    check_run_settings,
    final_weights,
    latest_checkpoint,
    load_state,
    rng_state,
    set_rng_state,
    trim_log,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The training settings of step 2a (its flags are made from these fields; the official spellings kept)."""

    knowledge_base: str | None = setting(help=KB_HELP, flags=("--knowledge_base_file",))   # the script's spelling
    num_epochs: int = setting(1, type=positive_int, flags=("--num-epochs", "--num_epochs"),
                              help="passes over the training set")
    learning_rate: float = setting(1e-5, type=positive_float, flags=("--learning-rate", "--learning_rate"),
                                   help="peak learning rate")
    batch_size: int = setting(8, type=positive_int, flags=("--batch-size", "--batch_size"),
                              help="examples per step (per process)")
    neg_num: int = setting(15, type=positive_int, flags=("--neg-num", "--neg_num"),
                           help="hard negatives per training example")
    save_frequency: float = setting(0.5, type=positive_float, help="checkpoint every this fraction of an epoch")
    save_dir: str = setting("outputs/reranker", help="where checkpoints (model_N.pth, state_N.pt) and the training "
                                                     "log go")
    num_workers: int = setting(4, type=nonnegative_int, help="DataLoader worker processes")
    seed: int = setting(0, type=int, help="random seed (shuffling, sampling of negatives)")
    max_steps: int | None = setting(None, type=positive_int, help="stop early (smoke tests); the schedule still "
                                                                  "spans all epochs")
    log_every: int = setting(10, type=positive_int, help="log the loss every N steps")
    wandb: bool = setting(False, type=zero_one, help="1: log to Weights & Biases")
    wandb_project: str = "omgm-reranker"
    mixed_precision: str = "auto"       # auto: fp16 on GPU, none on CPU
    cpu: bool = False
    progress: bool = True


def contrastive_loss(model: IT2ITReranker, batch: dict) -> torch.Tensor:
    """CE over each query's [positive, negatives] late-interaction scores divided by the learnable temp."""
    q = normalise_tokens(model.encode(model.vision_features(batch["qpix"]), batch["q_ids"], batch["q_mask"]))
    cfeat = model.vision_features(batch["cpix"])
    idx = batch["cand_img"]
    c = normalise_tokens(model.encode(cfeat[idx.flatten()], batch["c_ids"], batch["c_mask"]))
    c = c.view(idx.shape[0], idx.shape[1], *c.shape[1:])
    logits = paired_late_interaction(q, c) / model.temp
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


class ContrastiveObjective(torch.nn.Module):
    """The reranker with the loss as ``forward``, so that DDP's gradient hooks run under ``accelerate launch``."""

    def __init__(self, model: IT2ITReranker) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch) -> torch.Tensor:
        return contrastive_loss(self.model, batch)


def make_optimizer(model: IT2ITReranker, lr: float, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total_steps), pct_start=0.3,
                                                div_factor=100)
    return opt, sched


@dataclass
class _Run:
    """What a (possibly resumed) run starts from."""

    step: int = 0
    resumed: int | None = None
    rng: dict | None = None


def _resume(save_dir: Path, model, opt, sched, acc) -> _Run:
    resumed = latest_checkpoint(save_dir)
    if resumed is None:
        return _Run()
    state = load_state(save_dir / f"state_{resumed}.pt")
    path = save_dir / f"model_{resumed}.pth"
    ck = read_checkpoint(path)
    if not isinstance(ck.get("model"), dict):
        raise ResumeStateError(f"{path}: not a checkpoint of omgm step2 train (no 'model' state dict); delete it "
                               f"and its state_{resumed}.pt to resume from the previous one")
    try:
        bad = model.load_state_dict(ck["model"], strict=False).unexpected_keys
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ResumeStateError(f"{path} does not fit this model: {str(exc).splitlines()[0][:200]}") from None
    if bad:
        raise ResumeStateError(f"{save_dir / f'model_{resumed}.pth'} does not fit this model: {bad[:5]}")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if acc.scaler is not None and state.get("scaler"):
        acc.scaler.load_state_dict(state["scaler"])
    trim_log(save_dir / "train_log.jsonl", state["step"])
    log.info("resumed from %s at step %d", save_dir / f"model_{resumed}.pth", state["step"])
    return _Run(state["step"], resumed, state["rng"])


VOLATILE = ("knowledge_base", "save_dir", "max_steps", "log_every", "wandb", "wandb_project", "progress", "num_workers", "cpu")


def run_settings(cfg: TrainConfig, dataset, extra_meta: dict | None) -> dict:
    """What a resumed run must share with the run it continues: every setting that changes the weights."""
    import hashlib
    import json

    examples = json.dumps(getattr(dataset, "examples", []), default=str, sort_keys=True)
    return {**{k: v for k, v in asdict(cfg).items() if k not in VOLATILE}, "examples": len(dataset),
            "examples_sha256": hashlib.sha256(examples.encode()).hexdigest()[:16],
            **{k: v for k, v in (extra_meta or {}).items() if isinstance(v, (str, int, float, bool, type(None)))}}


def train(model: IT2ITReranker, dataset: RerankTrainSet, tokenizer, cfg: TrainConfig, *, extra_meta: dict | None = None,
          trainable_only: bool = True) -> dict:
    """Train (or resume) and return a summary; checkpoints land in ``cfg.save_dir``. ``trainable_only``: leave
    the frozen ViT out of checkpoints (it is re-read from its own file, named in ``extra_meta['vit_ckpt']``)."""
    from accelerate import Accelerator

    use_cuda = torch.cuda.is_available() and not cfg.cpu
    mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("fp16" if use_cuda else "no")
    acc = Accelerator(mixed_precision=mp, cpu=not use_cuda)
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    for seed_fn in (torch.manual_seed, random.seed, np.random.seed):
        seed_fn(cfg.seed)
    model.freeze_vision()
    if use_cuda:
        model.half_vit()
    loader = acc.prepare(DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                                    collate_fn=Collate(tokenizer, model.config.max_text_length)))
    spe = len(loader)
    total = spe * cfg.num_epochs
    # accelerate steps a prepared scheduler once per process for each optimiser step
    opt, sched = make_optimizer(model, cfg.learning_rate, total * acc.num_processes)
    objective, opt, sched = acc.prepare(ContrastiveObjective(model), opt, sched)
    model = acc.unwrap_model(objective).model
    check_run_settings(save_dir / "run_settings.json", run_settings(cfg, dataset, extra_meta),
                       latest_checkpoint(save_dir) is not None)
    start = _resume(save_dir, model, opt, sched, acc)
    stop = min(total, cfg.max_steps) if cfg.max_steps else total
    loop = _Loop(acc, objective, model, opt, sched, cfg, save_dir, extra_meta, trainable_only, total, stop, spe)
    with (save_dir / "train_log.jsonl").open("a", encoding="utf-8") as log_file:
        loop.run(loader, dataset, start, log_file)
    final = final_weights(save_dir)
    summary = {"steps": loop.step, "final_checkpoint": str(final) if final else None, "total_steps": total,
               "steps_per_epoch": spe, "last_loss": loop.last_loss,
               "examples": len(dataset), "dropped": dict(dataset.drops), "skipped_unreadable_images": loop.skipped,
               "resumed_from": start.resumed, "config": asdict(cfg)}
    write_json_atomic(save_dir / "train_summary.json", summary, indent=2)
    return summary


class _Loop:
    """The optimisation loop over epochs, with logging and checkpoints."""

    def __init__(self, acc, objective, model, opt, sched, cfg: TrainConfig, save_dir: Path, meta, trainable_only,
                 total: int, stop: int, spe: int) -> None:
        self.acc, self.objective, self.model, self.opt, self.sched = acc, objective, model, opt, sched
        self.cfg, self.save_dir, self.meta, self.trainable_only = cfg, save_dir, meta, trainable_only
        self.total, self.stop, self.spe = total, stop, spe
        self.step, self.skipped, self.last_loss, self.t0 = 0, 0, float("nan"), time.time()
        self.save_every = max(1, round(cfg.save_frequency * spe))
        self.wandb = _wandb(cfg, meta) if cfg.wandb and acc.is_main_process else None

    def run(self, loader, dataset, start: _Run, log_file) -> None:
        self.step, rng = start.step, start.rng
        bar = tqdm(total=self.stop, initial=self.step, desc="train reranker",
                   disable=not (self.cfg.progress and self.acc.is_main_process))
        self.objective.train()
        self.model.vision.eval()
        while self.step < self.stop:
            epoch, skip = divmod(self.step, self.spe)
            dataset.shuffle_for_epoch(epoch)
            if rng is not None and skip == 0:     # at an epoch boundary the saved RNG predates the new iterator
                set_rng_state(rng)
                rng = None
            for batch in self.acc.skip_first_batches(loader, skip) if skip else loader:
                if rng is not None:               # mid-epoch: only now, starting the iterator draws from the RNG
                    set_rng_state(rng)
                    rng = None
                self._one(batch, log_file, bar)
                if self.step >= self.stop:
                    break
        bar.close()
        if self.wandb is not None:
            self.wandb.finish()

    def _one(self, batch: dict, log_file, bar) -> None:
        self.skipped += len(batch["errors"])
        if batch["size"] == 0:
            self.step += 1
            return
        with self.acc.autocast():
            loss = self.objective(**{k: v for k, v in batch.items() if k not in ("errors", "size")})
        self.acc.backward(loss)
        self.opt.step()
        lr = self.sched.get_last_lr()[0]
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.last_loss = loss.item()
        rec = {"step": self.step, "epoch": self.step / self.spe, "loss": self.last_loss, "lr": lr,
               "temp": self.model.temp.item(), "seconds": round(time.time() - self.t0, 2)}
        log_file.write(json.dumps(rec) + "\n")
        log_file.flush()
        if self.wandb is not None:
            self.wandb.log(rec, step=self.step)
        if self.step % self.cfg.log_every == 0:
            log.info("step %d/%d loss %.4f lr %.2e", self.step, self.total, self.last_loss, lr)
        bar.update(1)
        bar.set_postfix(loss=f"{self.last_loss:.4f}")
        if self.step % self.save_every == 0 or self.step in (self.total, self.stop):
            _save(self.acc, self.model, self.opt, self.sched, self.step, self.save_dir, self.meta, self.trainable_only)


def _save(acc, model, opt, sched, step: int, save_dir: Path, meta: dict | None, trainable_only: bool) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_ours(model, save_dir / f"model_{step}.pth", trainable_only=trainable_only,
                  extra={"step": step, "init": meta or {}})
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "rng": rng_state(),
                 "scaler": acc.scaler.state_dict() if acc.scaler is not None else None}
        with atomic_write(save_dir / f"state_{step}.pt") as tmp:
            torch.save(state, tmp)
        log.info("saved %s", save_dir / f"model_{step}.pth")


def _wandb(cfg: TrainConfig, meta: dict | None):
    import wandb

    return wandb.init(project=cfg.wandb_project, config={**asdict(cfg), **(meta or {})})
