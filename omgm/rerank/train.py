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

from omgm.io import write_json_atomic
from omgm.rerank.convert import save_ours
from omgm.rerank.dataset import Collate, RerankTrainSet
from omgm.rerank.model import IT2ITReranker, normalise_tokens, paired_late_interaction

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    num_epochs: int = 1
    learning_rate: float = 1e-5
    batch_size: int = 8
    save_frequency: float = 0.5
    save_dir: str = "outputs/reranker"
    num_workers: int = 4
    seed: int = 0
    max_steps: int | None = None        # stop early (tests, smoke runs); the schedule still spans all epochs
    log_every: int = 10
    wandb: bool = False
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


def latest_checkpoint(save_dir: Path) -> int | None:
    steps = [int(p.stem.split("_")[1]) for p in save_dir.glob("state_*.pt")
             if (save_dir / f"model_{p.stem.split('_')[1]}.pth").is_file()]
    return max(steps) if steps else None


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def train(model: IT2ITReranker, dataset: RerankTrainSet, tokenizer, cfg: TrainConfig, extra_meta: dict | None = None,
          trainable_only: bool = True) -> dict:
    """Train (or resume) and return a summary; checkpoints land in ``cfg.save_dir``. ``trainable_only``: leave
    the frozen ViT out of checkpoints (it is re-read from its own file, named in ``extra_meta['vit_ckpt']``)."""
    from accelerate import Accelerator

    use_cuda = torch.cuda.is_available() and not cfg.cpu
    mp = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("fp16" if use_cuda else "no")
    acc = Accelerator(mixed_precision=mp, cpu=not use_cuda)
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    model.freeze_vision()
    if use_cuda:
        model.half_vit()
    loader = acc.prepare(DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                                    collate_fn=Collate(tokenizer, model.config.max_text_length)))
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.num_epochs
    # accelerate steps a prepared scheduler once per process for each optimiser step
    opt, sched = make_optimizer(model, cfg.learning_rate, total * acc.num_processes)
    objective, opt, sched = acc.prepare(ContrastiveObjective(model), opt, sched)
    model = acc.unwrap_model(objective).model
    save_every = max(1, round(cfg.save_frequency * steps_per_epoch))

    step, resumed, rng_state = 0, latest_checkpoint(save_dir), None
    if resumed is not None:
        state = torch.load(save_dir / f"state_{resumed}.pt", map_location="cpu", weights_only=False)
        ck = torch.load(save_dir / f"model_{resumed}.pth", map_location="cpu", weights_only=True)
        bad = model.load_state_dict(ck["model"], strict=False).unexpected_keys
        if bad:
            raise RuntimeError(f"{save_dir / f'model_{resumed}.pth'} does not fit this model: {bad[:5]}")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        rng_state = state["rng"]
        step = state["step"]
        log.info("resumed from %s at step %d of %d", save_dir / f"model_{resumed}.pth", step, total)

    stop = min(total, cfg.max_steps) if cfg.max_steps else total
    run = _wandb(cfg, extra_meta) if cfg.wandb and acc.is_main_process else None
    log_file = (save_dir / "train_log.jsonl").open("a", encoding="utf-8")
    skipped, t0, last_loss = 0, time.time(), float("nan")
    bar = tqdm(total=stop, initial=step, desc="train reranker", disable=not (cfg.progress and acc.is_main_process))
    objective.train()
    model.vision.eval()
    while step < stop:
        epoch, skip = divmod(step, steps_per_epoch)
        dataset.shuffle_for_epoch(epoch)
        for batch in acc.skip_first_batches(loader, skip) if skip else loader:
            if rng_state is not None:  # only now: starting the loader's iterator draws from the global RNG
                _set_rng_state(rng_state)
                rng_state = None
            skipped += len(batch["errors"])
            if batch["size"] == 0:
                step += 1
                continue
            with acc.autocast():
                loss = objective(**{k: v for k, v in batch.items() if k not in ("errors", "size")})
            acc.backward(loss)
            opt.step()
            lr = sched.get_last_lr()[0]
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            last_loss = loss.item()
            rec = {"step": step, "epoch": step / steps_per_epoch, "loss": last_loss, "lr": lr,
                   "temp": model.temp.item(), "seconds": round(time.time() - t0, 2)}
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            if run is not None:
                run.log(rec, step=step)
            if step % cfg.log_every == 0:
                log.info("step %d/%d loss %.4f lr %.2e", step, total, last_loss, rec["lr"])
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if step % save_every == 0 or step in (total, stop):
                _save(acc, model, opt, sched, step, save_dir, extra_meta, trainable_only)
            if step >= stop:
                break
    bar.close()
    log_file.close()
    if run is not None:
        run.finish()
    summary = {"steps": step, "total_steps": total, "steps_per_epoch": steps_per_epoch, "last_loss": last_loss,
               "examples": len(dataset), "dropped": dict(dataset.drops), "skipped_unreadable_images": skipped,
               "resumed_from": resumed, "config": asdict(cfg)}
    write_json_atomic(save_dir / "train_summary.json", summary, indent=2)
    return summary


def _save(acc, model, opt, sched, step: int, save_dir: Path, meta: dict | None, trainable_only: bool) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_ours(model, save_dir / f"model_{step}.pth", trainable_only=trainable_only,
                  extra={"step": step, "init": meta or {}})
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "rng": _rng_state(),
                 "scaler": acc.scaler.state_dict() if acc.scaler is not None else None}
        tmp = save_dir / f".state_{step}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(save_dir / f"state_{step}.pt")
        log.info("saved %s", save_dir / f"model_{step}.pth")


def _wandb(cfg: TrainConfig, meta: dict | None):
    import wandb

    return wandb.init(project=cfg.wandb_project, config={**asdict(cfg), **(meta or {})})
