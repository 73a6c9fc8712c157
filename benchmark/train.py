"""The training loop: plain and visible, the same for every method.

schedule -> autocast -> method.training_step -> backward -> optimiser step -> method.on_step_end (EMA)
-> JSON-lines log -> checkpoint. The data order and every view sampled are functions of
(seed, epoch, index), and a checkpoint holds model, optimiser, step, RNG state, so a run resumed from
its run directory continues exactly where it stopped.

Stopping: ``stop_requested()`` is polled after every step (a launcher sets it from a signal handler);
the loop then checkpoints at that step and returns ``interrupted``. Under data parallelism
(``benchmark/distributed.py``) the ranks agree on it, so all stop at the same step; each rank trains
on its slice of every global batch, and rank 0 alone writes the checkpoint and the log.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark import distributed
from benchmark.config import RunConfig, to_dict
from benchmark.data.base import SequenceDataset, collate, loader_workers, to_batch
from benchmark.errors import SeqbenchError
from benchmark.fastpath import FastPaths, keep_host_memory
from methods.components import warmup_cosine
from methods.contract import Method

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
PRESETS = {  # docs/protocol.md, Decision 3
    "paper": {"optimizer": "adamw", "lr": 4e-4, "weight_decay": 1e-3, "cosine": True},
    # What hafezgh/seq-jepa main_transformed_views.py runs in training: Adam(lr=1e-3, wd=0) (line 237; the
    # AdamW branch is only built for evaluation), but every epoch its warm-up code sets the lr to --lr 4e-4
    # after the warm-up (lines 300-308), overwriting both the constructor's 1e-3 and the cosine scheduler's
    # step: linear warm-up to 4e-4, then constant.
    "upstream-code": {"optimizer": "adam", "lr": 4e-4, "weight_decay": 0.0, "cosine": False},
}


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch); can start mid-epoch at a batch offset.

    With ``world_size`` ranks, every rank draws the same permutation and keeps its contiguous slice of
    each global batch of ``batch_size``, so step s trains on exactly the samples one process would.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.local = batch_size // world_size
        self.rank = rank
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: (self.n // self.batch_size) * self.batch_size]
        batches = perm[self.start_batch * self.batch_size:].view(-1, self.batch_size)
        return iter(batches[:, self.rank * self.local:(self.rank + 1) * self.local].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.n // self.batch_size - self.start_batch) * self.local


def ignore_scheduler_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: scheduler signals are the main process's business.

    SLURM signals every process of a job step, data workers included: the requeue signal (USR2) and,
    on preemption, SIGTERM. A worker that died of it would make the main process fail ("DataLoader
    worker is killed") before it can finish its step and checkpoint. So workers ignore USR1/USR2,
    and obey a SIGTERM only when their own main process sends it (PyTorch and multiprocessing stop
    stuck workers that way): SIGTERM is blocked and a watcher thread reads who sent it.
    """
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # Linux (SLURM); elsewhere SIGTERM keeps its default
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the watcher
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass  # from the scheduler: the main process decides when to stop
    os._exit(0)


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
    """torch.save to a temporary file, fsync, then rename: a kill mid-write never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file: say so instead of a pickle traceback
        raise SeqbenchError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to restart "
                            f"the run from scratch, or re-run with --force") from None


def train(cfg: RunConfig, method: Method, dataset: SequenceDataset, run_dir: Path, device: torch.device,
          stop_requested: Callable[[], bool] | None = None,
          online_probes: Callable[[], dict[str, float]] | None = None) -> TrainSummary:
    """Pre-train ``method`` on ``dataset``; resumes from ``run_dir/checkpoint.pt`` if present.

    Under data parallelism every rank calls this with the same arguments (``device`` = its own).
    ``online_probes`` (rank 0; benchmark/probes/online.py) runs before the first step and every
    ``train.online_probe_every`` steps; its metrics join that step's log line.
    """
    tc = cfg.train
    env = distributed.current()
    n = len(dataset)
    steps_per_epoch = n // tc.batch_size
    if steps_per_epoch == 0:
        raise SeqbenchError(f"train.batch_size {tc.batch_size} is larger than the {n} training samples of "
                            f"{cfg.dataset}; use --batch-size {max(1, n // 4)} or smaller")
    local_batch = distributed.local_batch_size(tc.batch_size, env)
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
        rngs = ck.get("rng") or [{"cpu": ck["rng_cpu"], "cuda": ck.get("rng_cuda")}]  # one per rank
        set_rng_state(rngs[env.rank % len(rngs)], device)
    elif env.rank > 0:
        torch.manual_seed(cfg.seed + 7919 * env.rank)  # same weights (built before), own dropout masks
    if device.type == "cpu":
        keep_host_memory()  # no page faults per step for the activations (benchmark/fastpath.py)
    fast = FastPaths.from_config(cfg, device)  # channels_last, fused optimiser, compile (after the checkpoint)
    fast.module(method)
    fast.optimizer(opt)
    step_fn = fast.compile_step(distributed.wrap(method, device))
    sampler = EpochSampler(n, tc.batch_size, cfg.seed, env.rank, env.world_size)
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler,
                        num_workers=loader_workers(cfg.data.num_workers),
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False, worker_init_fn=ignore_scheduler_signals,
                        # its own generator: drawing worker seeds from the global one would shift the
                        # dropout stream of a run resumed mid-epoch
                        generator=torch.Generator().manual_seed(cfg.seed))
    use_amp = tc.amp and device.type == "cuda"
    views_per_sample = method.views_needed(cfg.data.seq_len)

    saved_at = step

    def save() -> None:  # a collective: every rank calls it, rank 0 writes
        nonlocal saved_at
        saved_at = step
        rngs = distributed.gather(rng_state(device))
        if env.is_main:
            atomic_save({"model": method.state_dict(), "optimizer": opt.state_dict(), "step": step, "rng": rngs,
                         "config": to_dict(cfg)}, ckpt_path)

    log = (run_dir / LOG).open("a") if env.is_main else None
    every = tc.online_probe_every if online_probes is not None and env.is_main else 0
    if every and step == 0 and log is not None:  # the random-init reference of the online curves
        log.write(json.dumps({"step": 0, "epoch": 0, **online_probes()}) + "\n")
        log.flush()
    bar = tqdm(total=total, initial=step, desc=f"train {cfg.method}", unit="step",
               disable=not (tc.progress and env.is_main))
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
                batch = fast.prepare(to_batch(d).to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = step_fn(batch)
                last_loss = distributed.mean(out.loss)  # the same on every rank, so all ranks raise together
                if not math.isfinite(last_loss):
                    raise SeqbenchError(f"{cfg.method}: loss became {last_loss} at step {step + 1}; lower "
                                        f"the learning rate (--set train.lr=...) or check the data")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                step += 1
                method.on_step_end(step, total)
                bar.update(1)
                online = every and (step % every == 0 or step == total)
                if log is not None and (step % tc.log_every == 0 or step == total or online):
                    now = time.perf_counter()
                    ips = (step - step_window) * tc.batch_size * views_per_sample / max(now - t_window, 1e-9)
                    line = {"step": step, "epoch": epoch, "loss": last_loss, "lr": lr, "img_per_s": round(ips, 1),
                            **out.logs}
                    if online:
                        line.update(online_probes())
                        bar.set_postfix({k.removeprefix("online_"): v for k, v in line.items()
                                         if k.startswith("online_")} | {"loss": f"{last_loss:.4f}"})
                    else:
                        bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.0f}")
                    t_window, step_window = time.perf_counter(), step  # images/s leaves the probes out
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                if distributed.any_rank(stop_requested is not None and stop_requested()):
                    interrupted = True  # finish this step, checkpoint at it (below), return
                    break
                if step % tc.checkpoint_every == 0 or step == total:
                    save()
                if step >= total:
                    break
        if saved_at != step:
            save()
    finally:
        bar.close()
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - t_start
    ips = (step - step_start) * tc.batch_size * views_per_sample / elapsed if step > step_start else math.nan
    return TrainSummary(step, total, step // steps_per_epoch, last_loss, ips, interrupted)
