"""Supervised fine-tuning of a step-3 generator (llava-hf LLaVA-1.5 or a chat LLM), full or LoRA, on accelerate.

Defaults follow LLaVA-1.5's published fine-tuning recipe (the OMGM paper does not give its own): one epoch,
global batch 128, AdamW without weight decay, cosine schedule with 3 % warm-up, lr 2e-5 for full fine-tuning
(language model + projector; the vision tower frozen) or 2e-4 for LoRA (r 128, alpha 256, dropout 0.05, on the
language model's attention and MLP projections), bf16 and gradient checkpointing on GPU, 2,048 tokens.

Every ``save_steps`` optimiser steps the trainable weights (``trainable_{step}.safetensors``) and the optimiser,
scheduler, RNG and position (``state_{step}.pt``, weights-only loadable) are saved; a run started again in the
same output folder resumes from the last pair and reaches the state of an uninterrupted run. The output folder
loads in ``omgm step3 --llm_checkpoint OUT`` (full fine-tuning: the model itself; LoRA: the adapter folder, or
``OUT/merged`` with ``merge_lora``).
"""
from __future__ import annotations

import json
import logging
import math
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from omgm.config import fraction, nonnegative_float, nonnegative_int, positive_float, positive_int, zero_one
from omgm.errors import OmgmError
from omgm.finetune.tokens import Collate, encode, image_pixels
from omgm.io import atomic_write, write_json_atomic
from omgm.settings import setting
from omgm.train_state import check_run_settings, latest_checkpoint, load_state, rng_state, set_rng_state, trim_log

log = logging.getLogger(__name__)


class SftError(OmgmError, ValueError):
    """A fine-tuning run that cannot start or resume; the message says why."""

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SftConfig:
    """The fine-tuning settings of ``omgm step3 train`` (its flags are made from these fields)."""

    output_dir: str | None = setting(help="where the model, checkpoints and log go")
    tuning: str = setting("full", choices=("full", "lora"), help="full: every language-model weight; lora: "
                                                                 "low-rank adapters")
    learning_rate: float | None = setting(type=positive_float, help="peak learning rate (default: 2e-5 full, "
                                                                    "2e-4 LoRA)")
    num_epochs: int = setting(1, type=positive_int, help="passes over the training set")
    batch_size: int = setting(4, type=positive_int, help="examples per step (per process)")
    global_batch_size: int = setting(128, type=positive_int, help="examples per optimiser step, all processes and "
                                                                  "accumulation together")
    warmup_ratio: float = setting(0.03, type=fraction, help="fraction of the steps with a linear warm-up")
    weight_decay: float = setting(0.0, type=nonnegative_float, help="AdamW weight decay")
    max_length: int = setting(2048, type=positive_int, help="tokens per training example (longer ones are skipped "
                                                            "and counted)")
    lora_r: int = setting(128, type=positive_int, help="LoRA rank")
    lora_alpha: int = setting(256, type=positive_int, help="LoRA scaling")
    lora_dropout: float = setting(0.05, type=fraction, help="LoRA dropout")
    merge_lora: bool = setting(False, type=zero_one, help="1: also write the adapter merged into the base model "
                                                          "(OUT/merged)")
    gradient_checkpointing: bool = setting(True, type=zero_one, help="1: recompute activations in the backward "
                                                                     "pass (less memory)")
    save_steps: int = setting(100, type=positive_int, help="a resumable checkpoint every N optimiser steps")
    max_steps: int | None = setting(type=positive_int, help="stop after N steps")
    seed: int = setting(0, type=nonnegative_int, help="random seed (shuffling)")
    log_every: int = setting(10, type=positive_int, help="log the loss every N steps")
    wandb: bool = setting(False, type=zero_one, help="1: log to Weights & Biases")
    cpu: bool = False
    progress: bool = True

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-4 if self.tuning == "lora" else 2e-5)


def prepare_model(model, cfg: SftConfig):
    """Freeze what the recipe keeps fixed, or wrap in LoRA adapters; gradient checkpointing when asked."""
    if cfg.tuning == "lora":
        from peft import LoraConfig, get_peft_model

        targets = r".*language_model.*\.(" + "|".join(LORA_TARGETS) + ")" if hasattr(model, "vision_tower") or \
            hasattr(getattr(model, "model", None), "vision_tower") else LORA_TARGETS
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    else:
        for name, p in model.named_parameters():
            p.requires_grad = "vision_tower" not in name
    if cfg.gradient_checkpointing and not cfg.cpu and torch.cuda.is_available():
        model.gradient_checkpointing_enable()
        if cfg.tuning == "lora":
            model.enable_input_require_grads()
    return model


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


VOLATILE = ("output_dir", "max_steps", "save_steps", "log_every", "wandb", "progress", "merge_lora")


def run_settings(cfg: SftConfig, examples: list[dict], model_name: str) -> dict:
    """What a resumed run must share with the run it continues."""
    import hashlib

    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.get("id"), e["prompt"], e["answer"], e.get("image")]).encode("utf-8"))
    return {**{k: v for k, v in asdict(cfg).items() if k not in VOLATILE}, "examples_sha256": digest.hexdigest(),
            "model": model_name}


def check_settings(path: Path, wanted: dict, resuming: bool) -> None:
    check_run_settings(path, wanted, resuming, SftError)


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


class SftTrainer:
    """``run(examples)`` -> summary (see the module docstring)."""

    def __init__(self, generator, cfg: SftConfig) -> None:
        from accelerate import Accelerator

        use_cuda = torch.cuda.is_available() and not cfg.cpu
        self.cfg, self.generator, self.out = cfg, generator, Path(cfg.output_dir)
        self.acc = Accelerator(mixed_precision="bf16" if use_cuda else "no", cpu=not use_cuda)
        self.accum = max(1, cfg.global_batch_size // (cfg.batch_size * self.acc.num_processes))
        self.acc.gradient_accumulation_steps = self.accum      # DeepSpeed's "auto" accumulation reads it
        self.out.mkdir(parents=True, exist_ok=True)

    def _items(self, examples: list[dict]) -> tuple[list[dict], int]:
        items = [encode(self.generator, e, self.cfg.max_length) for e in examples]
        return [x for x in items if x is not None], sum(x is None for x in items)

    def run(self, examples: list[dict]) -> dict:
        cfg, acc = self.cfg, self.acc
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        items, too_long = self._items(examples)
        self.settings = run_settings(cfg, examples, self.generator.name)
        if not items:
            raise SftError("no training example fits --max_length")
        model = prepare_model(self.generator.model, cfg)
        steps_per_epoch = math.ceil(len(items) / (cfg.batch_size * self.accum * self.acc.num_processes))
        total = steps_per_epoch * cfg.num_epochs
        stop = min(total, cfg.max_steps) if cfg.max_steps else total
        from transformers import get_cosine_schedule_with_warmup

        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total), total)
        model, opt = acc.prepare(model, opt)
        step, rng = self._resume(model, opt, sched)
        tok = self.generator.tokenizer
        collate = Collate(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                          lambda paths: image_pixels(self.generator, paths))
        losses = self._loop(model, opt, sched, items, collate, step, stop, steps_per_epoch, rng)
        self._final_state = acc.get_state_dict(model) if self.deepspeed else None   # gathered on every rank
        self._finish(acc.unwrap_model(model))
        summary = {"steps": stop, "total_steps": total, "examples": len(items), "skipped_too_long": too_long,
                   "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                   "accumulation": self.accum, "config": asdict(cfg)}
        if acc.is_main_process:
            write_json_atomic(self.out / "train_summary.json", summary, indent=2)
        return summary

    def _loop(self, model, opt, sched, items, collate, step, stop, spe, rng) -> list[float]:
        from tqdm import tqdm

        cfg, acc = self.cfg, self.acc
        per_step = cfg.batch_size * self.accum * acc.num_processes
        losses, bar = [], tqdm(total=stop, initial=step, desc="fine-tune", disable=not cfg.progress)
        run = _wandb(cfg) if cfg.wandb and acc.is_main_process else None
        model.train()
        with (self.out / "train_log.jsonl").open("a", encoding="utf-8") as log_file:
            while step < stop:
                epoch, pos = divmod(step, spe)
                order = epoch_order(len(items), epoch, cfg.seed)
                if rng is not None:
                    set_rng_state(rng)
                    rng = None
                mine = order[pos * per_step:(pos + 1) * per_step][acc.process_index::acc.num_processes]
                chunk = [items[i] for i in mine]
                loss, parts = 0.0, max(1, math.ceil(len(chunk) / cfg.batch_size))
                for i in range(0, len(chunk), cfg.batch_size):
                    batch = {k: v.to(acc.device) for k, v in collate(chunk[i:i + cfg.batch_size]).items()}
                    last = i + cfg.batch_size >= len(chunk)
                    acc.sync_gradients = last                   # DeepSpeed steps its engine on the last part only
                    with (nullcontext() if last else acc.no_sync(model)), acc.autocast():
                        out = model(**batch)
                        acc.backward(out.loss * (self.accum / parts))   # backward divides by the accumulation
                    loss += out.loss.item() / parts
                loss = float(acc.reduce(torch.tensor(loss, device=acc.device), "mean"))   # the global batch's
                opt.step()
                lr = sched.get_last_lr()[0]
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                losses.append(loss)
                record = {"step": step, "epoch": step / spe, "loss": loss, "lr": lr}
                if acc.is_main_process:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if run is not None:
                    run.log(record, step=step)
                bar.update(1)
                if step % cfg.save_steps == 0 or step == stop:
                    self._save(model, opt, sched, step)
        bar.close()
        if run is not None:
            run.finish()
        return losses

    def _save(self, model, opt, sched, step: int) -> None:
        from safetensors.torch import save_file

        self.acc.wait_for_everyone()
        weights = self._trainable_weights(model)          # a collective under DeepSpeed: every rank calls it
        if not self.acc.is_main_process:
            return
        with atomic_write(self.out / f"trainable_{step}.safetensors") as tmp:
            save_file(weights, str(tmp))
        if self.deepspeed:                               # ZeRO shards the optimiser: weights only
            return
        with atomic_write(self.out / f"state_{step}.pt") as tmp:
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "rng": rng_state()},
                       tmp)

    @property
    def deepspeed(self) -> bool:
        return self.acc.distributed_type.name == "DEEPSPEED"

    def _trainable_weights(self, model) -> dict[str, torch.Tensor]:
        inner = self.acc.unwrap_model(model)
        if not self.deepspeed:
            return trainable_state(inner)
        names = trainable_names(inner)
        return {n: t.detach().cpu().contiguous() for n, t in self.acc.get_state_dict(model).items() if n in names}

    def _resume(self, model, opt, sched) -> tuple[int, dict | None]:
        from safetensors.torch import load_file

        step = latest_checkpoint(self.out, "trainable_{}.safetensors")
        if self.deepspeed and list(self.out.glob("trainable_*.safetensors")):
            raise SftError(f"{self.out}: resuming under DeepSpeed is not supported (ZeRO shards the optimiser); "
                           f"use a new --output_dir, or resume without DeepSpeed")
        if self.acc.is_main_process:
            check_settings(self.out / "run_settings.json", self.settings, step is not None)
        self.acc.wait_for_everyone()
        if step is None:
            return 0, None
        state = load_state(self.out / f"state_{step}.pt")
        path = self.out / f"trainable_{step}.safetensors"
        weights, inner = load_file(str(path)), self.acc.unwrap_model(model)
        missing, unexpected = trainable_names(inner) - set(weights), set(weights) - trainable_names(inner)
        if missing or unexpected:
            raise SftError(f"{path} does not fit this model (missing {sorted(missing)[:3]}, unexpected "
                           f"{sorted(unexpected)[:3]}): another model or --tuning?")
        inner.load_state_dict(weights, strict=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if self.acc.is_main_process:
            trim_log(self.out / "train_log.jsonl", step)
        self.acc.wait_for_everyone()
        log.info("resumed fine-tuning from step %d", step)
        return step, state["rng"]

    def _finish(self, model) -> None:
        if not self.acc.is_main_process:
            return
        saver = getattr(self.generator, "processor", None) or self.generator.tokenizer
        model.save_pretrained(self.out, state_dict=self._final_state)
        saver.save_pretrained(self.out)
        if self.cfg.tuning == "lora" and self.cfg.merge_lora:
            merged = model.merge_and_unload()
            merged.save_pretrained(self.out / "merged")
            saver.save_pretrained(self.out / "merged")


def _wandb(cfg: SftConfig):
    import wandb

    return wandb.init(project="omgm-step3-sft", config=asdict(cfg))

