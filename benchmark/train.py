"""The training loop: plain and visible, the same for every method.

schedule -> autocast -> method.training_step -> backward -> optimiser step -> method.on_step_end (EMA)
-> JSON-lines log -> checkpoint. The data order and every view sampled are functions of
(seed, epoch, index), and a checkpoint holds model, optimiser, step, RNG state, so a run resumed from
its run directory continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark.config import RunConfig, to_dict
from benchmark.data.base import SequenceDataset, collate, to_batch
from benchmark.errors import SeqbenchError
from methods.components import warmup_cosine
from methods.contract import Method

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
PRESETS = {  # seqjepa.md Decision 3
    "paper": {"optimizer": "adamw", "lr": 4e-4, "weight_decay": 1e-3, "cosine": True},
    "upstream-code": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "cosine": False},
}


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch); can start mid-epoch at a batch offset."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: (self.n // self.batch_size) * self.batch_size]
        return iter(perm[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.n // self.batch_size - self.start_batch) * self.batch_size


@dataclass
class TrainSummary:
    steps: int
    total_steps: int
    epochs_done: int
    final_loss: float
    images_per_s: float
    interrupted: bool = False


def build_optimizer(method: Method, cfg: RunConfig) -> tuple[torch.optim.Optimizer, dict]:
    preset = dict(PRESETS[cfg.train.optimizer_preset])
    if cfg.train.lr is not None:
        preset["lr"] = cfg.train.lr
    if cfg.train.weight_decay is not None:
        preset["weight_decay"] = cfg.train.weight_decay
    groups = method.param_groups(preset["weight_decay"])
    opt_cls = torch.optim.AdamW if preset["optimizer"] == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=preset["lr"]), preset


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file then rename, so a kill mid-write never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file: say so instead of a pickle traceback
        raise SeqbenchError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to restart "
                            f"the run from scratch, or re-run with --force") from None


def train(cfg: RunConfig, method: Method, dataset: SequenceDataset, run_dir: Path, device: torch.device,
          stop_requested: Callable[[], bool] | None = None) -> TrainSummary:
    """Pre-train ``method`` on ``dataset``; resumes from ``run_dir/checkpoint.pt`` if present."""
    tc = cfg.train
    n = len(dataset)
    steps_per_epoch = n // tc.batch_size
    if steps_per_epoch == 0:
        raise SeqbenchError(f"train.batch_size {tc.batch_size} is larger than the {n} training samples of "
                            f"{cfg.dataset}; use --batch-size {max(1, n // 4)} or smaller")
    total = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total = min(total, tc.max_steps)
    warmup = min(total, tc.warmup_epochs * steps_per_epoch)
    opt, preset = build_optimizer(method, cfg)
    method.to(device)
    step, ckpt_path = 0, run_dir / CHECKPOINT
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        method.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step = ck["step"]
        torch.set_rng_state(ck["rng_cpu"])
        if device.type == "cuda" and ck.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ck["rng_cuda"], device)
    sampler = EpochSampler(n, tc.batch_size, cfg.seed)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False)
    use_amp = tc.amp and device.type == "cuda"
    views_per_sample = method.views_needed(cfg.data.seq_len)

    saved_at = step

    def save() -> None:
        nonlocal saved_at
        saved_at = step
        atomic_save({"model": method.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "rng_cpu": torch.get_rng_state(),
                     "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                     "config": to_dict(cfg)}, ckpt_path)

    log = (run_dir / LOG).open("a")
    bar = tqdm(total=total, initial=step, desc=f"train {cfg.method}", unit="step", disable=not tc.progress)
    last_loss, interrupted = float("nan"), False
    t_start, step_start = time.perf_counter(), step
    t_window, step_window = t_start, step
    method.train()
    try:
        while step < total and not interrupted:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, in_epoch)
            for d in loader:
                lr = warmup_cosine(step, total, warmup, preset["lr"], tc.init_lr,
                                   tc.final_lr if preset["cosine"] else preset["lr"])
                for g in opt.param_groups:
                    g["lr"] = lr
                batch = to_batch(d).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = method.training_step(batch)
                if not torch.isfinite(out.loss):
                    raise SeqbenchError(f"{cfg.method}: loss became {float(out.loss)} at step {step + 1}; lower "
                                        f"the learning rate (--set train.lr=...) or check the data")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                step += 1
                method.on_step_end(step, total)
                last_loss = float(out.loss.detach())
                bar.update(1)
                if step % tc.log_every == 0 or step == total:
                    now = time.perf_counter()
                    ips = (step - step_window) * tc.batch_size * views_per_sample / max(now - t_window, 1e-9)
                    t_window, step_window = now, step
                    bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.0f}")
                    log.write(json.dumps({"step": step, "epoch": epoch, "loss": last_loss, "lr": lr,
                                          "img_per_s": round(ips, 1), **out.logs}) + "\n")
                    log.flush()
                if stop_requested is not None and stop_requested():
                    interrupted = True  # finish this step, checkpoint at it, return
                    break
                if step % tc.checkpoint_every == 0 or step == total:
                    save()
                if step >= total:
                    break
        if saved_at != step:
            save()
    finally:
        bar.close()
        log.close()
    elapsed = time.perf_counter() - t_start
    ips = (step - step_start) * tc.batch_size * views_per_sample / elapsed if step > step_start else math.nan
    return TrainSummary(step, total, step // steps_per_epoch, last_loss, ips, interrupted)
