"""Data parallelism for the training loop: one process per GPU (or per CPU slot with gloo).

The process group is set up from the environment the launcher leaves, so training code never needs
to know who started it:

* torchrun, and ``slurm/job.py`` (which exports submitit's ``JobEnvironment`` the same way):
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
* a plain ``srun python -m benchmark.run ...``: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``,
  ``SLURM_LOCALID`` (the master address is the first host of the job, the port derived from its id).

With one process (the default) no process group exists and every helper below is a no-op, so the
training loop calls them unconditionally. The helpers are collectives: every rank must call them at
the same point, which is why the loop agrees on "stop" (:func:`any_rank`) instead of letting each
rank decide.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from benchmark.infra.errors import ConfigError, SeqbenchError, user_message
from methods.contract import Batch, Method, StepOutput

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and results."""
        return self.rank == 0


def from_environ(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Read rank and world size from torchrun-style or srun variables (world size 1 if neither)."""
    if "WORLD_SIZE" in environ:
        return DistEnv(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))
    # SLURM_STEP_NUM_TASKS is set by srun only: a batch script's own process is never a rank.
    if "SLURM_STEP_NUM_TASKS" in environ and "SLURM_PROCID" in environ:
        return DistEnv(int(environ["SLURM_PROCID"]), int(environ["SLURM_STEP_NUM_TASKS"]),
                       int(environ.get("SLURM_LOCALID", 0)))
    return DistEnv()


def current() -> DistEnv:
    """This process's place in the initialised process group (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv()
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local)


def _rendezvous_from_slurm() -> None:
    """MASTER_ADDR/PORT for a plain ``srun``: the job's first host, a port fixed by the job id."""
    if "MASTER_ADDR" not in os.environ:
        try:
            hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                                   capture_output=True, text=True, check=True, timeout=30).stdout.split()
        except (KeyError, OSError, subprocess.SubprocessError) as e:
            raise SeqbenchError(f"cannot find the master host of this SLURM job ({e}); set MASTER_ADDR and "
                                f"MASTER_PORT, or launch with torchrun or python -m slurm.launch") from None
        os.environ["MASTER_ADDR"] = hosts[0]
    # Same on every rank, different between concurrent jobs on one node.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000))


@contextmanager
def session(device_name: str) -> Iterator[tuple[DistEnv, torch.device]]:
    """Join the process group the environment describes (if any) for the duration of one run.

    Yields this process's :class:`DistEnv` and its device (``cuda:<local rank>`` under CUDA). A group
    that already exists (torchrun user code, tests) is used as is and left open; one created here is
    destroyed on exit so the next run in the same process starts clean.
    """
    if dist.is_available() and dist.is_initialized():
        env = current()
        yield env, device_for(device_name, env)
        return
    env = from_environ()
    if env.world_size == 1:
        yield env, device_for(device_name, env)
        return
    if not dist.is_available():
        raise SeqbenchError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = device_for(device_name, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        _rendezvous_from_slurm()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank,
                            world_size=env.world_size)
    try:
        yield env, device
    finally:
        dist.destroy_process_group()


def device_for(name: str, env: DistEnv) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` / ``auto``; under data parallelism each rank takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SeqbenchError(f"--device {name} requested but CUDA is not available here; use --device cpu or auto")
    if name == "cuda" and env.world_size > 1:
        # One task per GPU; with per-task GPU binding each task sees a single device.
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device(name)


def local_batch_size(batch_size: int, env: DistEnv) -> int:
    """Each rank's share of the global batch ``train.batch_size`` (which must divide evenly)."""
    if batch_size % env.world_size:
        raise ConfigError(f"train.batch_size {batch_size} does not split over {env.world_size} processes; use a "
                          f"multiple of {env.world_size} so the global batch stays what the config says")
    return batch_size // env.world_size


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop at the same step)."""
    if current().world_size == 1:
        return flag
    t = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def agree(stop: bool, failed: bool) -> tuple[bool, bool]:
    """(any rank wants to stop, any rank failed): one all-reduce per training step for both questions.

    A rank whose data loading failed says so here instead of raising, so the others do not wait for
    it in the next gradient all-reduce until the NCCL timeout; see :func:`failure`.
    """
    if current().world_size == 1:
        return stop, failed
    t = torch.tensor([float(stop), float(failed)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0].item()), bool(t[1].item())


def failure(error: BaseException | None) -> SeqbenchError:
    """After :func:`agree` reported a failure: every rank's error message, as one error to raise on all.

    Collective (called by every rank, only on this error path, so it costs nothing per step).
    """
    own = None if error is None else (user_message(error) or type(error).__name__)
    env = current()
    messages = [own]
    if env.world_size > 1:
        messages = [None] * env.world_size
        dist.all_gather_object(messages, own)
    said = [f"rank {r}: {m}" if env.world_size > 1 else m for r, m in enumerate(messages) if m is not None]
    cls = type(error) if isinstance(error, SeqbenchError) else SeqbenchError
    text = "; ".join(said) + ("; every rank stopped" if env.world_size > 1 else "")
    try:
        return cls(text)
    except TypeError:  # an error class with another constructor
        return SeqbenchError(text)


def from_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its return value (or its SeqbenchError) to every rank.

    For the steps rank 0 does alone before training (lock, run-directory checks): a rank-0 error is
    raised on every rank instead of leaving the others in the next collective until the timeout.
    """
    env = current()
    if env.world_size == 1:
        return fn()
    box: list = [None]
    raised: BaseException | None = None
    if env.is_main:
        try:
            box[0] = ("ok", fn())
        except BaseException as e:  # re-raised below, once the other ranks were told
            raised = e
            box[0] = ("error", user_message(e) if isinstance(e, SeqbenchError) else f"rank 0 failed: {e!r}")
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if raised is not None:
        raise raised
    if kind == "error":
        raise SeqbenchError(value)
    return value


def mean(value: torch.Tensor) -> float:
    """Mean of a scalar over ranks, as a Python float on every rank."""
    if current().world_size == 1:
        return float(value.detach())
    t = value.detach().reshape(1).to(_collective_device(), torch.float32)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def gather(obj: object) -> list | None:
    """Every rank's ``obj`` as a list on rank 0 (``None`` on the others)."""
    env = current()
    if env.world_size == 1:
        return [obj]
    out: list | None = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


class _TrainingStep(nn.Module):
    """``forward`` = ``method.training_step``, so DDP's hooks see the step and average the gradients."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch) -> StepOutput:
        return self.method.training_step(batch)


def sync_bn_applies(sync_bn: bool, device: torch.device) -> bool:
    """Whether ``train.sync_bn`` takes effect: several ranks on GPUs (PyTorch's SyncBatchNorm is GPU-only)."""
    return sync_bn and current().world_size > 1 and device.type == "cuda"


def wrap(method: Method, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """A module whose call is one training step of ``method``; DDP-wrapped when there are several ranks.

    ``on_step_end`` (EMA) is still called on ``method`` itself: DDP keeps the online weights identical
    on all ranks, so every rank's target network moves identically. Losses over the whole batch gather
    it from every rank (contrastive negatives, variance/covariance terms: ``baselines/common.py``
    ``gather_rows`` and lightly's ``gather_distributed``), and with ``sync_bn`` every BatchNorm of the
    method (EMA targets included) is converted in place to ``nn.SyncBatchNorm``, so N GPUs compute what one
    GPU computes on the global batch (SIE's main.py 172 does the same; seq-JEPA's runs used one GPU).
    SyncBatchNorm runs on GPUs only: CPU processes (gloo) keep per-rank BatchNorm statistics and the run
    records ``batchnorm_statistics = "per-rank"`` (:func:`provenance`).
    """
    if sync_bn_applies(sync_bn, device):
        nn.SyncBatchNorm.convert_sync_batchnorm(method)  # in place: the method is not itself a BatchNorm
    step = _TrainingStep(method)
    if current().world_size == 1:
        return step
    # device_ids=None: the batch is already on this rank's device and Batch needs no scattering.
    # find_unused_parameters: a method may leave a parameter out of some steps' loss (e.g. a head used
    # in one sampled environment only); without it DDP would fail at the next step. Costs one graph walk.
    return nn.parallel.DistributedDataParallel(step, device_ids=None, find_unused_parameters=True)


def provenance(sync_bn: bool, device: torch.device) -> dict:
    """What result.json records about data parallelism: the world size and where BatchNorm takes its
    statistics ("global" on one process or with SyncBatchNorm, "per-rank" otherwise)."""
    env = current()
    stats = "global" if env.world_size == 1 or sync_bn_applies(sync_bn, device) else "per-rank"
    return {"world_size": env.world_size, "batchnorm_statistics": stats}
