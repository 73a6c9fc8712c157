"""The submitit job: one sweep run = ``benchmark.run.run_one(cfg)``, preemption-safe.

submitit's own handler for the requeue signal (USR2) checkpoints the callable and requeues the job
from inside the signal handler, i.e. in the middle of whatever training step is running. Here the
handler only sets a flag: the training loop finishes its step, writes the checkpoint at that step
(atomically) and returns, and only then is submitit's handler called to requeue. The requeued job is
a fresh :class:`RunJob` for the same config; all progress lives in the run directory, so ``run_one``
resumes from the checkpoint (and skips a run that has meanwhile finished).

A flag raised while the probes run (after training) is not acted on: evaluation writes nothing until
result.json, so if the job is killed first, the next launch re-runs the probes from the final checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
import types
from typing import Any

import submitit
import torch

from benchmark.config import RunConfig, run_dir
from benchmark.run import run_one


def _requeue_signal() -> signal.Signals:
    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]  # USR2 unless $SUBMITIT_PREEMPT_SIGNAL


class RunJob(submitit.helpers.Checkpointable):
    """``RunJob(cfg)()`` trains and evaluates ``cfg`` (or resumes it, or skips it if finished)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._stop = False

    def __call__(self) -> dict[str, Any]:
        self._stop = False
        if "SLURM_CPUS_PER_TASK" in os.environ:  # without cgroups torch would spin a thread on every core
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        env = _job_environment()
        if env is not None and env.num_tasks > 1:
            # One task per GPU: torch.distributed reads these (benchmark/distributed.py).
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        sig = _requeue_signal()
        submitit_handler = signal.getsignal(sig)
        signal.signal(sig, self._request_stop)
        try:
            tag = f"[job {env.job_id}] " if env is not None else ""
            outcome = run_one(self.cfg, stop_requested=lambda: self._stop, log=lambda m: print(tag + m, flush=True))
        finally:
            signal.signal(sig, submitit_handler)
        if outcome.status == "interrupted" and env is not None and callable(submitit_handler):
            # Checkpoint (= a fresh RunJob) and requeue; rank 0 then exits, the other ranks return at once
            # and wait for the requeue to end the job step.
            submitit_handler(sig, None)
            _wait_for_requeue()
        return {"run_dir": str(outcome.run_dir), "status": outcome.status,
                "metrics": (outcome.result or {}).get("metrics")}

    def _request_stop(self, signum: int, frame: types.FrameType | None) -> None:
        self._stop = True  # polled by the training loop after each step

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """A fresh job for the same config: the state to resume from is the run directory's checkpoint."""
        return submitit.helpers.DelayedSubmission(RunJob(self.cfg))

    def __repr__(self) -> str:
        return f"RunJob({run_dir(self.cfg)})"


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
