"""The step log of a training run: ``log.jsonl``, the ``train.logger`` monitor, the progress bar, images/s.

One JSON line per logged step (every ``train.log_every`` steps, the last step, and every step the online
probes run): ``{"step", "epoch", "loss", "lr", "img_per_s", **the method's logs, **online probe metrics}``.
The same values go to the monitor (benchmark/infra/monitor.py: csv, tensorboard, wandb). A run resumed from its
checkpoint re-trains the steps after it, so :func:`cut_log` (and the monitor, as it opens) first drops the
lines of those steps: every step is logged once.

The online probes (``benchmark/probes/online.py``) run before the first step (the random-init reference of
the online curves) and every ``train.online_probe_every`` steps; their time is left out of images/s
(:class:`TrainClock`). Rank 0 alone writes; on the other ranks a :class:`StepLog` writes nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.config import RunConfig, to_dict
from benchmark.core.rundir import RunDir
from benchmark.infra import distributed
from benchmark.infra.fileio import atomic_write_text, disk_full_error, is_disk_full
from benchmark.infra.monitor import NullMonitor, open_monitor, scalars
from benchmark.infra.progress import Progress


def cut_log(path: Path, step: int) -> int:
    """Keep the lines of ``log.jsonl`` up to ``step`` (the checkpoint's); return how many were dropped.

    A resumed run re-trains every step after its checkpoint and logs it again; lines written after the
    checkpoint (and a half-written last line after ``kill -9``) would otherwise appear twice.
    """
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines(keepends=True):
        try:  # a fresh start (step 0) keeps nothing: it logs step 0 (the online probes' reference) again
            ok = step > 0 and line.endswith("\n") and json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(keep), "training log")
    return dropped


class TrainClock:
    """Training time of a run over all its starts: what the checkpoint carries and images/s is computed from.

    Counts from :meth:`start` (this start's first step) plus what earlier starts recorded up to their last
    checkpoint (:meth:`carry`); the time inside :meth:`paused` (the online probes) is not training time.
    """

    def __init__(self) -> None:
        self.before = {"steps": 0, "seconds": 0.0}
        self.start_step, self.t0, self.paused_s = 0, time.perf_counter(), 0.0

    def carry(self, timing: dict | None) -> None:
        self.before = {**self.before, **(timing or {})}

    def start(self, step: int) -> None:
        self.start_step, self.t0, self.paused_s = step, time.perf_counter(), 0.0

    @contextmanager
    def paused(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - t

    def total(self, step: int) -> dict:
        """{"steps", "seconds"} trained up to ``step``, this start and the earlier ones."""
        return {"steps": self.before["steps"] + step - self.start_step,
                "seconds": self.before["seconds"] + time.perf_counter() - self.t0 - self.paused_s}

    def images_per_s(self, step: int, images_per_step: int) -> float:
        t = self.total(step)
        return t["steps"] * images_per_step / t["seconds"] if t["steps"] and t["seconds"] > 0 else math.nan


class StepLog:
    """Writes the step log of one start of a run (a context manager: closes the files on exit).

    Opening it cuts log.jsonl (and the monitor) back to ``start``, the step the run resumes at, and says so.
    ``images_per_step``: views per global batch (batch size x views per sample).
    """

    def __init__(self, cfg: RunConfig, rd: RunDir, start: int, total: int, steps_per_epoch: int,
                 images_per_step: int, clock: TrainClock, online_probes: Callable[[], dict[str, float]] | None = None,
                 say: Callable[[str], None] = lambda msg: None) -> None:
        tc, main = cfg.train, distributed.current().is_main
        self.rd, self.total, self.images_per_step, self.clock = rd, total, images_per_step, clock
        self.log_every, self.steps_per_epoch = tc.log_every, steps_per_epoch
        self.online_probes = online_probes if main else None
        self.every = tc.online_probe_every if self.online_probes is not None else 0
        if main:
            dropped = cut_log(rd.log, start)
            if start or dropped:
                say(f"resuming at step {start}/{total} from {rd.checkpoint}" if start else
                    "starting at step 0 (no checkpoint)")
            if dropped:
                say(f"log.jsonl cut back to step {start}: {dropped} line(s) of steps after the checkpoint removed "
                    f"(they are trained again)")
        # the values of log.jsonl, live, cut back to this step as log.jsonl was
        self.monitor = open_monitor(tc.logger, rd.path, start, to_dict(cfg)) if main else NullMonitor()
        self.file = rd.log.open("a") if main else None
        self.bar = Progress(total, f"train {cfg.method}", "step", initial=start, enabled=tc.progress and main)
        self.window = (time.perf_counter(), start)  # images/s of log.jsonl: since the last logged step
        if self.every and start == 0:  # the random-init reference of the online curves
            self._write({"step": 0, "epoch": 0, **self._probe()})

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, step: int, loss: float, lr: float, logs: dict) -> None:
        """Step ``step`` (counted from 1: the steps finished) is done: count it, log it if due."""
        self.bar.update(1)
        online = self.every and (step % self.every == 0 or step == self.total)
        if self.file is None or not (step % self.log_every == 0 or step == self.total or online):
            return
        t, since = self.window
        ips = (step - since) * self.images_per_step / max(time.perf_counter() - t, 1e-9)
        epoch = (step - 1) // self.steps_per_epoch  # the epoch the step trained in
        line = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "img_per_s": round(ips, 1), **logs}
        if online:
            line.update(self._probe())
            self.bar.set_postfix(**{k.removeprefix("online_"): v for k, v in line.items()
                                    if k.startswith("online_")}, loss=f"{loss:.4f}")
        else:
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.0f}")
        self.window = (time.perf_counter(), step)  # images/s leaves the probes out
        self._write(line)

    def _probe(self) -> dict[str, float]:
        with self.clock.paused():  # not training time
            return self.online_probes()

    def _write(self, line: dict) -> None:
        try:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()
            self.monitor.log(line["step"], scalars(line))
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(self.rd.log, "training log", e) from None
            raise

    def close(self) -> None:
        self.bar.close()
        for f in ([self.file] if self.file is not None else []) + [self.monitor]:
            try:
                f.close()
            except OSError:  # a full disk again: the error that got us here says so
                pass
