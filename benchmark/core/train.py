"""The training loop: plain and visible, the same for every method.

    for step, batch in batches:                        # benchmark/core/batches.py: data order, stop requests
        lr = set_lr(opt, lr_at(step))                  # warm-up, then cosine (or constant)
        out = method.training_step(batch)              # under bf16 autocast on a GPU
        loss = watch.check_loss(step, out.loss)        # benchmark/core/divergence.py: NaN/inf ends the run
        backward, optimiser step, method.on_step_end   # (EMA targets)
        log.step(step + 1, ...)                        # benchmark/core/steplog.py: log.jsonl, monitor, progress
        ckpt.maybe_save(step + 1, loss)                # benchmark/core/trainstate.py: checkpoint.pt

The data order and every view sampled are functions of (seed, epoch, index), and a checkpoint holds
model, optimiser, step and RNG state, so a run resumed from its run directory continues exactly where
it stopped (each step is logged once). A stop request (SIGTERM, SIGUSR2, SIGINT via ``benchmark.core.runner``,
the requeue signal in a SLURM job) ends the loop after the running step; the checkpoint is then written
at that step and the summary says ``interrupted``. A NaN/inf loss ends it before its update is applied,
NaN/inf weights before they would be saved; the summary carries ``diverged`` = {step, what, detail} and
``benchmark.core.runner`` records the run as diverged.

Under data parallelism (``benchmark/infra/distributed.py``) every rank runs this loop on its slice of every
global batch; the collaborators above make the ranks agree (stop, data errors, loss) so that all stop at
the same step, and rank 0 alone writes the checkpoint and the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark.config import RunConfig
from benchmark.core.batches import EpochSampler as EpochSampler  # noqa: F401 - its home before batches.py
from benchmark.core.batches import StepBatches
from benchmark.core.batches import ignore_scheduler_signals as ignore_scheduler_signals  # noqa: F401 - idem
from benchmark.core.divergence import DivergenceWatch
from benchmark.core.fastpath import FastPaths, keep_host_memory
from benchmark.core.rundir import RunDir
from benchmark.core.steplog import StepLog, TrainClock
from benchmark.core.trainstate import Checkpointer
from benchmark.data.base import SequenceDataset
from benchmark.infra import distributed
from benchmark.infra.errors import SeqbenchError
from methods.components import warmup_cosine
from methods.contract import Method

PRESETS = {  # docs/protocol.md, Decision 3
    "paper": {"optimizer": "adamw", "lr": 4e-4, "weight_decay": 1e-3, "cosine": True},
    # What hafezgh/seq-jepa main_transformed_views.py runs in training: Adam(lr=1e-3, wd=0) (line 237; the
    # AdamW branch is only built for evaluation), but every epoch its warm-up code sets the lr to --lr 4e-4
    # after the warm-up (lines 300-308), overwriting both the constructor's 1e-3 and the cosine scheduler's
    # step: linear warm-up to 4e-4, then constant.
    "upstream-code": {"optimizer": "adam", "lr": 4e-4, "weight_decay": 0.0, "cosine": False},
}


@dataclass
class TrainSummary:
    steps: int
    total_steps: int
    epochs_done: int
    final_loss: float  # loss of the last step (from the checkpoint when this start trained no step)
    images_per_s: float  # over every segment's training time up to the last checkpoint and this start
    interrupted: bool = False
    diverged: dict | None = None  # {"step", "what", "detail"} when NaN/inf ended the run
    segments: list[dict] = field(default_factory=list)  # one per start: start/end step, git commit, host


def build_optimizer(method: Method, cfg: RunConfig) -> tuple[torch.optim.Optimizer, dict]:
    preset = dict(PRESETS[cfg.train.optimizer_preset])
    if cfg.train.lr is not None:
        preset["lr"] = cfg.train.lr
    if cfg.train.weight_decay is not None:
        preset["weight_decay"] = cfg.train.weight_decay
    groups = method.param_groups(preset["weight_decay"])
    opt_cls = torch.optim.AdamW if preset["optimizer"] == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=preset["lr"]), preset


def lr_schedule(cfg: RunConfig, preset: dict, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    """step -> learning rate: linear warm-up from ``train.init_lr`` over ``train.warmup_epochs``, then cosine
    to ``train.final_lr`` (or constant, for presets without cosine)."""
    tc = cfg.train
    warmup = min(total, tc.warmup_epochs * steps_per_epoch)
    final = tc.final_lr if preset["cosine"] else preset["lr"]
    return lambda step: warmup_cosine(step, total, warmup, preset["lr"], tc.init_lr, final)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def total_steps(cfg: RunConfig, n: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of pre-training on ``n`` samples."""
    tc = cfg.train
    steps_per_epoch = n // tc.batch_size
    if steps_per_epoch == 0:
        raise SeqbenchError(f"train.batch_size {tc.batch_size} is larger than the {n} training samples of "
                            f"{cfg.dataset}; use --batch-size {max(1, n // 4)} or smaller")
    total = tc.epochs * steps_per_epoch
    return steps_per_epoch, total if tc.max_steps is None else min(total, tc.max_steps)


def train(cfg: RunConfig, method: Method, dataset: SequenceDataset, run_dir: Path, device: torch.device,
          stop_requested: Callable[[], bool] | None = None,
          online_probes: Callable[[], dict[str, float]] | None = None, data: dict | None = None,
          log: Callable[[str], None] | None = None) -> TrainSummary:
    """Pre-train ``method`` on ``dataset``; resumes from ``run_dir/checkpoint.pt`` if present.

    ``data``: digests of the split/saliency files (stored in the checkpoint, compared on resume).
    Under data parallelism every rank calls this with the same arguments (``device`` = its own).
    ``online_probes`` (rank 0; benchmark/probes/online.py) runs before the first step and every
    ``train.online_probe_every`` steps; its metrics join that step's log line.
    """
    tc, rd = cfg.train, RunDir(run_dir)
    steps_per_epoch, total = total_steps(cfg, len(dataset))
    opt, preset = build_optimizer(method, cfg)
    lr_at = lr_schedule(cfg, preset, total, steps_per_epoch)
    method.to(device)
    watch, clock = DivergenceWatch(), TrainClock()
    ckpt = Checkpointer(rd, cfg, method, opt, device, total, watch, clock, data)
    start = ckpt.resume()
    if device.type == "cpu":
        keep_host_memory()  # no page faults per step for the activations (benchmark/core/fastpath.py)
    fast = FastPaths.from_config(cfg, device)  # channels_last, fused optimiser, compile (after the checkpoint)
    fast.module(method)
    fast.optimizer(opt)
    step_fn = fast.compile_step(distributed.wrap(method, device, tc.sync_bn))
    batches = StepBatches(dataset, tc.batch_size, cfg.seed, cfg.data.num_workers, device, fast, start, total,
                          stop_requested)
    images_per_step = tc.batch_size * method.views_needed(cfg.data.seq_len)
    clock.start(start)
    say = log if log is not None else (lambda msg: None)
    with StepLog(cfg, rd, start, total, steps_per_epoch, images_per_step, clock, online_probes, say) as steplog:
        method.train()
        for step, batch in batches:  # ends at the total or at a stop request (then interrupted)
            lr = set_lr(opt, lr_at(step))
            with fast.autocast(device):
                out = step_fn(batch)
            loss = watch.check_loss(step, out.loss)  # the mean over ranks: all ranks stop together
            if loss is None:
                break  # NaN/inf: this update is not applied; the checkpoint keeps the last finite step
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            method.on_step_end(step + 1, total)
            steplog.step(step + 1, loss, lr, out.logs)
            if not ckpt.maybe_save(step + 1, loss):
                break  # NaN/inf weights: not saved
        ckpt.finish()  # the stop step, or the last finite step before a NaN/inf loss
    return TrainSummary(ckpt.step, total, ckpt.step // steps_per_epoch, ckpt.loss,
                        clock.images_per_s(ckpt.step, images_per_step), batches.interrupted, watch.record,
                        ckpt.segments)
