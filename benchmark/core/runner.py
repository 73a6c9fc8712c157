"""Train and evaluate one method on one dataset: ``python -m benchmark.run --method seqjepa --dataset 3diebench``.

``run_one(cfg)`` is the whole job (the SLURM launcher calls it too): validate -> lock the run directory
-> pre-train (resuming if a checkpoint exists; skipped with ``--epochs 0``) -> divergence check ->
probes -> result.json. A finished run is a no-op unless ``force``. Started as several processes
(torchrun, srun, the launcher's multi-GPU jobs) it trains data-parallel and rank 0 alone locks,
evaluates and writes.

Statuses (``RunOutcome.status``) and exit codes of ``python -m benchmark.run``:

===========  ====  =====================================================================================
complete     0     trained, probed, result.json written
skipped      0     a valid result.json exists (``--force`` re-runs)
bad input    2     a config, data or checkpoint problem (one-paragraph message)
diverged     3     NaN/inf in the loss, the weights or the probe features: result.json with status
                   "diverged", the step and no metrics; the last finite checkpoint is kept
locked       4     the same run is running elsewhere (host, pid): nothing was done
disk full    74    no space (or quota, or ``ulimit -f``) while writing: nothing half-written
interrupted  75    SIGTERM / SIGUSR2 / SIGINT: the step finished, checkpoint at it; the same command
                   resumes (a stop during the probes exits at once; the probes re-run on resume)
aborted      130   a second Ctrl-C: stopped at once, the last checkpoint is kept
===========  ====  =====================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.config import RunConfig, layered_overrides, to_dict
from benchmark.core.registry import DATASETS, METHODS, build_method, dataset_entry
from benchmark.core.resolve import check_fit, resolve_with_sources
from benchmark.core.rundir import INVALID_SUFFIX, RESULT_FILE, RunDir
from benchmark.infra import yamlio
from benchmark.infra.errors import SeqbenchError, user_message
from benchmark.infra.fileio import DiskFull, LockHeld, disk_full_error, file_digest, is_disk_full

if TYPE_CHECKING:
    import torch

    from benchmark.core.train import TrainSummary
    from benchmark.data.base import SequenceDataset
    from benchmark.infra import distributed
    from methods.contract import Method

# torch and everything that imports it are imported inside the functions that train, so that
# `--help` and errors in the command line answer at once (tests/test_cli_startup.py checks it).
# benchmark.core.rundir (the run directory: files, lock, records) imports no torch.
EXIT_CODES = {"complete": 0, "skipped": 0, "diverged": 3, "locked": 4, "interrupted": 75}
EXIT_BAD_INPUT, EXIT_DISK_FULL, EXIT_ABORTED = 2, 74, 130


@dataclass
class RunOutcome:
    run_dir: Path
    status: str  # complete | skipped | diverged | locked | interrupted (see the module docstring)
    result: dict | None
    message: str = ""  # why it is not "complete", in one paragraph


# ---------------------------------------------------------------------------------------- stopping
class StopRequested(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """Raised by :class:`StopHook` where a stop cannot wait for a step boundary (data setup, probes)."""


class StopHook:
    """The stop signal handler of ``benchmark.core.runner`` (SIGTERM, SIGUSR2, SIGINT) and of the SLURM job.

    Calling the hook says whether a stop was requested: the training loop polls it once per step,
    then checkpoints at that step and returns. Inside :meth:`immediate` (dataset setup, the probes:
    no step to finish, nothing written before result.json) a signal raises :class:`StopRequested` at
    once, as does a stop already pending when the section starts. A second SIGINT (Ctrl-C twice) raises
    KeyboardInterrupt. Installed for the ``with`` block; the previous handlers are restored after it.
    """

    SIGNALS = ("SIGTERM", "SIGUSR2", "SIGINT")

    def __init__(self, signals: Sequence[str | signal.Signals] = SIGNALS) -> None:
        self.signals = [signal.Signals[s] if isinstance(s, str) else signal.Signals(s) for s in signals]
        self.received: list[str] = []
        self._immediate = False
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> StopHook:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __call__(self) -> bool:
        return bool(self.received)

    @property
    def reason(self) -> str:
        return self.received[0] if self.received else "a stop request"

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and "SIGINT" in self.received:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now
        self.received.append(name)
        when = "at once" if self._immediate else "after the current training step, checkpointing at it"
        os.write(2, f"\nseqbench: {name} received: stopping {when}\n".encode())  # print() is not signal-safe
        if self._immediate:
            self._immediate = False
            raise StopRequested(name)

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        if self.received:
            raise StopRequested(self.received[0])
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False


def _immediate(stop_requested: Callable[[], bool] | None, poll: bool = True):
    """``stop_requested.immediate()`` for a StopHook; for a plain callable, one poll if ``poll``."""
    section = getattr(stop_requested, "immediate", None)
    if section is not None:
        return section()
    if poll and stop_requested is not None and stop_requested():
        raise StopRequested(_reason(stop_requested))
    return contextlib.nullcontext()


def _reason(stop_requested: Callable[[], bool] | None) -> str:
    return getattr(stop_requested, "reason", "a stop request")


# ---------------------------------------------------------------------------------------- run
def pick_device(name: str) -> torch.device:
    from benchmark.infra import distributed

    return distributed.device_for(name, distributed.DistEnv())


def run_one(cfg: RunConfig, force: bool = False, stop_requested: Callable[[], bool] | None = None,
            log: Callable[[str], None] = print, lock_wait_s: float = 0.0,
            source_of: Callable[[str], str] | None = None) -> RunOutcome:
    """Run (or resume, or skip) the run ``cfg`` identifies. Raises SeqbenchError on bad input.

    ``stop_requested`` is polled after every training step; when it returns True the run checkpoints
    and returns status "interrupted" (the same call resumes it). A :class:`StopHook` also stops the
    data setup and the probes at once. ``lock_wait_s``: how long to wait for the run-directory lock
    if another process holds it (status "locked" after that). ``source_of`` (dotted key -> where it was
    set; ``registry.resolve_with_sources``) lets the data-fit errors name the file or flag to change.
    """
    from benchmark.infra import distributed

    rd = RunDir.of(cfg)
    if not force:
        record, why = rd.check_result()
        if record is not None:
            return _finished(cfg, rd, record, log)
        if why:
            log(f"note: {why} in {rd.path}: the run is not done and runs again (from its checkpoint, if any); "
                f"the unreadable file is kept as {RESULT_FILE}{INVALID_SUFFIX}")
    with distributed.session(cfg.device) as (env, device):
        run = _Attempt(cfg, rd, env, device, stop_requested, log if env.is_main else _silent)
        try:
            data = run.prepare_data(source_of)  # before the run directory exists: a failure leaves nothing
        except StopRequested as e:
            return run.stopped(f"stopped by {e} while preparing the data, before the run started; nothing was "
                               f"written")
        with contextlib.ExitStack() as held:
            early = distributed.from_main(lambda: run.claim(held, force, lock_wait_s))  # the others wait for it
            if early is not None:
                return early
            summary = run.pretrain(data)
            if summary.diverged is not None:
                return run.diverged(summary.diverged)
            if summary.interrupted:
                return run.interrupted(summary)
            if not env.is_main:
                return RunOutcome(rd.path, "complete", None)  # rank 0 evaluates and writes the result
            try:
                with _immediate(stop_requested):  # a stop here exits at once: nothing is written before the end
                    return run.probe(data, summary)
            except StopRequested as e:
                msg = (f"stopped by {e} during the probes; training is finished (checkpoint at step "
                       f"{summary.steps}), so the same command only re-runs the probes")
                return run.stopped(msg, f"interrupted during the probes; {msg}")


def _silent(msg: str) -> None:
    """The log of ranks > 0: rank 0 speaks for the run."""


@dataclass
class _Data:
    """What a run trains and probes on: the method, the three splits and their digests."""

    method: Method
    train: SequenceDataset
    probe_train: SequenceDataset
    probe_val: SequenceDataset
    digests: dict[str, str]


def _build(cfg: RunConfig, built: tuple | None = None) -> tuple:
    """(method, pre-training split, probe splits); ``built``: the (method, spec) of ``build_method`` if made."""
    method, spec = built or build_method(cfg)
    entry = dataset_entry(cfg.dataset)
    n_views = method.views_needed(cfg.data.seq_len)
    train_ds = entry.build(cfg, "train", n_views, False)  # validates the data root before anything is written
    probe_views = max(2, cfg.eval_seq_len, *cfg.probe.eval_seq_lens)
    probe_train = entry.build(cfg, "train", probe_views, True)
    probe_val = entry.build(cfg, "val", probe_views, True)
    if method.uses_actions and train_ds.action_dim != spec.action_dim:
        raise SeqbenchError(f"{cfg.method} expects {spec.action_dim}-d actions but {cfg.dataset} gives "
                            f"{train_ds.action_dim}-d ones")
    return method, train_ds, probe_train, probe_val


def data_digests(*datasets: SequenceDataset) -> dict[str, str]:
    """What identifies the data beyond the config: every split as resolved (object list and labels,
    wherever its split files came from: data.root or data.split_dir) and every saliency file.

    Recorded in the checkpoint and in result.json's provenance; a resume on other data is refused and
    a finished run whose data changed is reported (README, "Run identity and data").
    """
    out: dict[str, str] = {}
    for ds in datasets:
        objects, labels, split = (getattr(ds, k, None) for k in ("objects", "labels", "split"))
        if isinstance(objects, list) and labels is not None and split:
            blob = json.dumps([objects, [int(x) for x in labels]]).encode()
            out[f"split:{split}"] = f"sha256:{hashlib.sha256(blob).hexdigest()}"
        path = getattr(getattr(ds, "saliency", None), "path", None)
        if path is not None:
            out[f"saliency:{Path(path).name}"] = file_digest(path)
    return out


def _digest_diff(old: dict, new: dict) -> list[str]:
    return [f"{k}: {str(old.get(k, '(absent)'))[:19]} (result) vs {str(v)[:19]} (now)"
            for k, v in sorted(new.items()) if old.get(k) != v]


def _finished(cfg: RunConfig, rd: RunDir, record: dict, log: Callable[[str], None]) -> RunOutcome:
    what = "already finished"
    if record["status"] == "diverged":
        d = record["divergence"]
        what = f"already finished: diverged at step {d.get('step')} ({d.get('what')})"
    log(f"{what}: {rd.path} (use --force to re-run)")
    recorded = (record.get("provenance") or {}).get("data_digests")
    if isinstance(recorded, dict) and recorded:
        try:
            _, *datasets = _build(cfg)
            diff = _digest_diff(recorded, data_digests(*datasets))
        except SeqbenchError as e:
            log(f"note: could not check that the data is still the one this result was computed on ({e})")
            diff = []
        if diff:
            log(f"WARNING: this result was computed on other data: {'; '.join(diff)}. It does not describe "
                f"the current split/saliency files; re-run with --force to replace it, or use another --out")
    return RunOutcome(rd.path, "skipped", record, what)


class _Attempt:
    """One start of a run in this process (one rank of it under data parallelism): the steps of
    :func:`run_one`, sharing the config, the run directory, the device and the provenance collected."""

    def __init__(self, cfg: RunConfig, rd: RunDir, env: distributed.DistEnv, device: torch.device,
                 stop_requested: Callable[[], bool] | None, log: Callable[[str], None]) -> None:
        self.cfg, self.rd, self.env, self.device, self.log = cfg, rd, env, device, log
        self.stop_requested = stop_requested
        self.start, self.t0 = "", 0.0  # set when training starts (provenance: start time, wall time)
        self.extra: dict = {}  # provenance entries of result.json beyond benchmark.core.results.provenance

    def prepare_data(self, source_of: Callable[[str], str] | None) -> _Data:
        """Build the method and the data, after checking what the config and the dataset's metadata can tell
        (before any data is rendered or decoded). A stop request raises StopRequested at once (one process)."""
        import torch

        from benchmark.data.base import available_cpus, loader_workers

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        # Under DDP every rank must reach the same collectives: no stop before training starts.
        single = self.env.world_size == 1
        with _immediate(self.stop_requested, poll=False) if single else contextlib.nullcontext():
            check_fit(cfg, self.env.world_size, source_of)
            built = build_method(cfg)
            self.log(f"DataLoader workers: {loader_workers(cfg.data.num_workers)} (data.num_workers="
                     f"{cfg.data.num_workers}, {available_cpus()} CPU cores available to this process) for "
                     f"training, the probes and cache builds")
            method, train_ds, probe_train, probe_val = _build(cfg, built)
            return _Data(method, train_ds, probe_train, probe_val, data_digests(train_ds, probe_train, probe_val))

    def claim(self, held: contextlib.ExitStack, force: bool, lock_wait_s: float) -> RunOutcome | None:
        """Rank 0: lock the run directory (held until ``held`` closes) and start it there
        (:meth:`RunDir.start`); an outcome if the run is locked or was finished meanwhile."""
        try:
            held.enter_context(self.rd.lock(f"run {self.rd.path}", lock_wait_s, self.log))
        except LockHeld as e:
            return RunOutcome(self.rd.path, "locked", None, str(e))
        record = self.rd.start(self.cfg, force, self.log)
        if record is None:
            return None
        self.log(f"already finished: {self.rd.path} (finished by another process meanwhile)")
        return RunOutcome(self.rd.path, "skipped", record, "finished by another process meanwhile")

    def pretrain(self, data: _Data) -> TrainSummary:
        """Pre-train (resuming from the checkpoint, if any); ``train.epochs = 0`` trains nothing."""
        from benchmark.core import fastpath
        from benchmark.core.results import now
        from benchmark.core.train import TrainSummary, train
        from benchmark.data.base import loader_workers
        from benchmark.infra import distributed
        from benchmark.probes.online import OnlineProbes

        cfg, device = self.cfg, self.device
        self.start, self.t0 = now(), time.perf_counter()
        self.log(f"run directory: {self.rd.path}")
        self.extra = {"dataset_note": data.train.label_note or None,
                      "amp_bf16": cfg.train.amp and device.type == "cuda",
                      "dataloader_workers": loader_workers(cfg.data.num_workers), "data_digests": data.digests,
                      **fastpath.provenance(cfg, device), **distributed.provenance(cfg.train.sync_bn, device)}
        if cfg.train.epochs == 0:
            self.log("train.epochs = 0: evaluating the randomly initialised encoder (no pre-training)")
            self.extra.update(train_steps=0, train_total_steps=0, resumes=0, segments=[])
            return TrainSummary(0, 0, 0, None, None)  # type: ignore[arg-type] - no loss, no images/s
        online = (OnlineProbes(data.method, cfg, data.probe_train, data.probe_val, device)
                  if cfg.train.online_probe_every and self.env.is_main else None)
        summary = train(cfg, data.method, data.train, self.rd.path, device, self.stop_requested, online,
                        data=data.digests, log=self.log)
        self.extra.update(train_steps=summary.steps, train_total_steps=summary.total_steps,
                          resumes=max(0, len(summary.segments) - 1), segments=summary.segments)
        return summary

    def probe(self, data: _Data, summary: TrainSummary) -> RunOutcome:
        """Rank 0: check the probe features for NaN/inf, run the probes, write result.json."""
        from benchmark.core.divergence import check_probe_features
        from benchmark.probes.suite import evaluate

        cfg, method = self.cfg, data.method.to(self.device)
        lens = sorted({cfg.eval_seq_len, *cfg.probe.eval_seq_lens})
        bad = check_probe_features(method, data.probe_val, lens, self.device)
        if bad is not None:
            return self.diverged({**bad, "step": summary.steps})
        metrics = evaluate(method, cfg, data.probe_train, data.probe_val, self.device)
        metrics.update(train_loss_final=summary.final_loss, images_per_s=summary.images_per_s)
        path = self.rd.write_result(cfg, metrics, self._provenance())
        self.log(f"wrote {path}")
        return RunOutcome(self.rd.path, "complete", self.rd.read_result())

    def diverged(self, div: dict) -> RunOutcome:
        """result.json with status "diverged" (rank 0) and the outcome that explains it."""
        kept = ("the checkpoint keeps the last finite step" if div["what"] != "probe features" else
                "the checkpoint holds the final (finite but useless) weights")
        msg = (f"{self.cfg.method} diverged at step {div['step']} ({div['what']}: {div['detail']}). result.json "
               f"records status \"diverged\" with no metrics, and the aggregator lists the run in coverage.md, not "
               f"in the tables; {kept}. Lower the learning rate (--set train.lr=...) or check the data; --force "
               f"re-runs this config")
        if not self.env.is_main:
            return RunOutcome(self.rd.path, "diverged", None, msg)
        path = self.rd.write_divergence(self.cfg, self._provenance(), div)
        self.log(f"wrote {path} (status diverged)")
        return RunOutcome(self.rd.path, "diverged", self.rd.read_result(), msg)

    def interrupted(self, summary: TrainSummary) -> RunOutcome:
        """A stop request ended training; the checkpoint is at the step it ended at."""
        at = f"step {summary.steps}/{summary.total_steps}"
        return self.stopped(f"stopped by {_reason(self.stop_requested)} at {at}; checkpoint saved at that step in "
                            f"{self.rd.path}; the same command resumes the run",
                            f"interrupted at {at}; checkpoint saved in {self.rd.path}")

    def stopped(self, msg: str, said: str | None = None) -> RunOutcome:
        """The outcome of a stop request; ``said`` (default ``msg``) goes to the log."""
        self.log(said or msg)
        return RunOutcome(self.rd.path, "interrupted", None, msg)

    def _provenance(self) -> dict:
        from benchmark.core.results import provenance

        return provenance(self.device, self.start, time.perf_counter() - self.t0, self.extra)


# ---------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.run", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"methods: {', '.join(METHODS)}; datasets: {', '.join(DATASETS)}. Any config field: --set KEY=VALUE "
               "(e.g. --set model.act_cond=false --set probe.eval_seq_lens=[1,3,5]).\n"
               "exit status: 0 complete or already finished, 2 bad input, 3 diverged, 4 running elsewhere, "
               "74 disk full, 75 interrupted (resumable: run the same command), 130 aborted (Ctrl-C twice).")
    p.add_argument("--method", help="method name (default seqjepa)")
    p.add_argument("--dataset", help="dataset name (default 3diebench-mini)")
    p.add_argument("--data-root", help="dataset root (3diebench: the extracted 3DIEBench/ folder)")
    p.add_argument("--seq-len", type=int, help="training sequence length M_tr")
    p.add_argument("--eval-seq-len", type=int, help="inference length M_val of the headline top-1")
    p.add_argument("--epochs", type=int, help="pre-training epochs; 0 = evaluate at random initialisation")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int)
    add_config_flags(p, force_help="re-run even if the run already finished")
    return p


def add_config_flags(p: argparse.ArgumentParser, force_help: str) -> None:
    """The flags every command that resolves a run config shares (``benchmark.run``, ``benchmark.evaluate``)."""
    p.add_argument("--device", help="cpu | cuda | auto (default auto)")
    p.add_argument("--out", help="parent folder of run directories (default results/runs)")
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable; later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


# The flag that sets each dotted key, named by the config errors.
FLAG_NAMES = {"method": "--method", "dataset": "--dataset", "seed": "--seed", "device": "--device", "out": "--out",
              "data.root": "--data-root", "data.seq_len": "--seq-len", "data.image_size": "--image-size",
              "train.epochs": "--epochs", "train.batch_size": "--batch-size", "probe.eval_seq_len": "--eval-seq-len"}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return config_and_sources(args)[0]


def config_and_sources(args: argparse.Namespace) -> tuple[RunConfig, Callable[[str], str]]:
    """The resolved config and ``source_of`` (dotted key -> the file, flag or --set that set it)."""
    flags = {"method": args.method, "dataset": args.dataset, "seed": args.seed, "device": args.device,
             "out": args.out, "data": {"root": args.data_root, "seq_len": args.seq_len,
                                       "image_size": args.image_size},
             "train": {"epochs": args.epochs, "batch_size": args.batch_size},
             "probe": {"eval_seq_len": args.eval_seq_len}}
    return resolve_with_sources(layered_overrides(args.config, flags, args.set, FLAG_NAMES))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, source_of = config_and_sources(args)
        if args.print_config:  # the same data-fit check as a run, so that a printed config is one that runs
            check_fit(cfg, source_of=source_of)
            print(yamlio.dump(to_dict(cfg)), end="")
            return 0
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit (ulimit -f) then fails the write: reported as disk full
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        with StopHook() as hook:
            outcome = run_one(cfg, force=args.force, stop_requested=hook, source_of=source_of)
    except DiskFull as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return EXIT_DISK_FULL
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        if not is_disk_full(e):
            raise
        print(f"error: {disk_full_error(Path(e.filename or '.'), 'a file', e)}", file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print("\naborted (Ctrl-C twice); the last checkpoint is kept and the same command resumes the run",
              file=sys.stderr)
        return EXIT_ABORTED
    if outcome.result and outcome.status in ("complete", "skipped") and outcome.result["status"] == "complete":
        m = outcome.result["metrics"]
        keys = [k for k in ("top1", "knn_top1", "rotation_r2", "color_r2", "indiv_rotation_r2") if k in m]
        print("  ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m[k], int | float)))
    from benchmark.infra import distributed

    if outcome.status in ("diverged", "locked", "interrupted") and distributed.from_environ().is_main:
        print(f"{'error' if outcome.status != 'interrupted' else 'interrupted'}: {outcome.message}", file=sys.stderr)
    print(outcome.run_dir)
    return EXIT_CODES[outcome.status]


if __name__ == "__main__":
    sys.exit(main())

