"""The submitit job: one sweep run = ``benchmark.core.runner.run_one(cfg)``, preemption-safe.

submitit's own handler for the requeue signal (USR2) checkpoints the callable and requeues the job
from inside the signal handler, i.e. in the middle of whatever training step is running. Here the
signal goes to ``benchmark.core.runner.StopHook`` (the same hook as the plain CLI, for this one signal): the
training loop finishes its step, writes the checkpoint at that step (atomically) and returns, and only
then is submitit's handler called to requeue. During the probes (and the data setup) the signal stops
the job at once, since evaluation writes nothing until result.json: the job requeues straight away
and the next attempt re-runs the probes from the final checkpoint. The requeued job is a fresh
:class:`RunJob` for the same config; all progress lives in the run directory, so ``run_one`` resumes
from the checkpoint (and skips a run that has meanwhile finished).

SIGTERM stays submitit's (it ignores it): on preemption SLURM sends SIGTERM first and the requeue
signal after it, and the job must stop on the latter to requeue. The run-directory lock is taken
with a short wait (``LOCK_WAIT_S``), so a requeued attempt that starts while the previous one is
still exiting waits for it instead of giving up.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import submitit
import torch

from benchmark.config import RunConfig
from benchmark.core.rundir import RunDir
from benchmark.core.runner import StopHook, run_one

LOCK_WAIT_S = 60.0


def _requeue_signal() -> signal.Signals:
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]  # USR2 unless $SUBMITIT_PREEMPT_SIGNAL


class RunJob(submitit.helpers.Checkpointable):
    """``RunJob(cfg)()`` trains and evaluates ``cfg`` (or resumes it, or skips it if finished)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(self) -> dict[str, Any]:
        if "SLURM_CPUS_PER_TASK" in os.environ:  # without cgroups torch would spin a thread on every core
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        env = _job_environment()
        if env is not None and env.num_tasks > 1:
            # One task per GPU: torch.distributed reads these (benchmark/infra/distributed.py).
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        sig = _requeue_signal()
        submitit_handler = signal.getsignal(sig)
        tag = f"[job {env.job_id}] " if env is not None else ""
        with StopHook([sig]) as hook:  # restores submitit's handler on exit
            outcome = run_one(self.cfg, stop_requested=hook, log=lambda m: print(tag + m, flush=True),
                              lock_wait_s=LOCK_WAIT_S if env is not None else 0.0)
        if outcome.status in ("locked", "diverged"):
            print(tag + outcome.message, flush=True)
        if outcome.status == "interrupted" and hook() and env is not None and callable(submitit_handler):
            # Checkpoint (= a fresh RunJob) and requeue; rank 0 then exits, the other ranks return at once
            # and wait for the requeue to end the job step.
            submitit_handler(sig, None)
            _wait_for_requeue()
        return {"run_dir": str(outcome.run_dir), "status": outcome.status,
                "metrics": (outcome.result or {}).get("metrics"), "message": outcome.message}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """A fresh job for the same config: the state to resume from is the run directory's checkpoint."""
        return submitit.helpers.DelayedSubmission(RunJob(self.cfg))

    def __repr__(self) -> str:
        return f"RunJob({RunDir.of(self.cfg).path})"


def _job_environment() -> submitit.JobEnvironment | None:
    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (a test, the debug executor)
        return None


def _wait_for_requeue(limit_s: float = 300.0) -> None:
    """A non-zero rank waits for rank 0's requeue to stop the job step instead of reporting a result."""
    env = _job_environment()
    if env is None or env.global_rank == 0:
        return
    time.sleep(limit_s)
    raise RuntimeError(f"rank {env.global_rank}: the job was not requeued within {limit_s:.0f} s of the stop")
