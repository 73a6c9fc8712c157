"""The training batches, step by step: data order, stop requests and data-parallel agreement.

``for step, batch in StepBatches(...)`` yields the batch of every step from the run's start step (0, or
the checkpoint's) to its total, crossing epochs. The data order and every view sampled are functions of
(seed, epoch, index) (:class:`EpochSampler`), so a run resumed mid-epoch sees the batches it would have.

The iteration ends early, between two steps, when

* a stop was requested: ``stop_requested()`` (``benchmark.core.runner.StopHook``: SIGTERM, SIGUSR2, SIGINT) is
  polled once per finished step; ``interrupted`` is then True and the caller checkpoints at the last
  finished step;
* a rank could not load its batch: the error is raised on every rank at once;
* the caller breaks out (a divergence).

Under data parallelism (``benchmark/infra/distributed.py``) the ranks agree on both questions with one
all-reduce per step, so all stop at the same step and a rank whose data failed stops the others at once
instead of leaving them in the next gradient all-reduce until the NCCL timeout. Each rank loads its slice
of every global batch.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from benchmark.core.fastpath import FastPaths
from benchmark.data.base import SequenceDataset, collate, loader_workers, to_batch
from benchmark.infra import distributed
from methods.contract import Batch


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
    on preemption, SIGTERM; Ctrl-C sends SIGINT to the whole foreground process group. A worker that
    died of it would make the main process fail ("DataLoader worker is killed") before it can finish
    its step and checkpoint. So workers ignore USR1/USR2/INT, and obey a SIGTERM only when their own
    main process sends it (PyTorch and multiprocessing stop stuck workers that way): SIGTERM is
    blocked and a watcher thread reads who sent it.
    """
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # Linux (SLURM); elsewhere SIGTERM keeps its default
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the watcher
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass  # from the scheduler: the main process decides when to stop
    os._exit(0)


def _fetch(batches: Iterator) -> tuple[dict | None, Exception | None]:
    """Next batch, (None, None) at the end of the epoch, or (None, error) if loading failed."""
    try:
        return next(batches), None
    except StopIteration:
        return None, None
    except Exception as e:  # reported to every rank by the caller (distributed.agree)
        return None, e


class StepBatches:
    """The batches of steps ``start`` .. ``total - 1`` of a run (see the module docstring).

    Iterating yields ``(step, batch)``: ``step`` is the number of steps finished before this one (its
    0-based index), ``batch`` the rank's slice on ``device``, laid out for ``fast``.
    """

    def __init__(self, dataset: SequenceDataset, batch_size: int, seed: int, num_workers: int,
                 device: torch.device, fast: FastPaths, start: int, total: int,
                 stop_requested: Callable[[], bool] | None = None) -> None:
        env = distributed.current()
        self.dataset, self.device, self.fast = dataset, device, fast
        self.start, self.total, self.stop_requested = start, total, stop_requested
        self.steps_per_epoch = len(dataset) // batch_size
        self.sampler = EpochSampler(len(dataset), batch_size, seed, env.rank, env.world_size)
        self.loader = DataLoader(dataset, batch_size=distributed.local_batch_size(batch_size, env),
                                 sampler=self.sampler, num_workers=loader_workers(num_workers),
                                 collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                                 persistent_workers=False, worker_init_fn=ignore_scheduler_signals,
                                 # its own generator: drawing worker seeds from the global one would shift
                                 # the dropout stream of a run resumed mid-epoch
                                 generator=torch.Generator().manual_seed(seed))
        self.interrupted = False  # True when a stop request ended the iteration

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        step = polled = self.start
        while step < self.total:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            self.dataset.set_epoch(epoch)
            self.sampler.set_epoch(epoch, in_epoch)
            batches = iter(self.loader)
            while step < self.total:
                d, error = _fetch(batches)
                # polled once per finished step (the fetch of the next batch is "after the step")
                wants_stop = self.stop_requested is not None and step > polled and self.stop_requested()
                polled = step
                stop, failed = distributed.agree(wants_stop, error is not None)
                if failed:  # a data error on any rank stops every rank now, not at the NCCL timeout
                    err = distributed.failure(error)
                    raise error if error is not None else err
                if stop:
                    self.interrupted = True  # the last step is finished; the caller checkpoints at it
                    return
                if d is None:
                    break  # end of the epoch
                yield step, self.fast.prepare(to_batch(d).to(self.device, non_blocking=True))
                step += 1
