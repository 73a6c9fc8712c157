"""Interrupt and resume: the stop hook and the real requeue signal stop a run at a step boundary, the
checkpoint is written at that step atomically, and the resumed run ends like an uninterrupted one."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from benchmark.config import run_dir
from benchmark.core import train as train_mod
from benchmark.core.resolve import resolve
from benchmark.core.runner import run_one
from benchmark.core.sweeps import flatten, nest
from benchmark.infra import fileio
from slurm.job import RunJob
from tests.conftest import TINY_SETS

SETTINGS = {**TINY_SETS, "dataset": "3diebench-mini", "data.image_size": 32, "train.batch_size": 4,
            "train.epochs": 2, "train.log_every": 1, "train.checkpoint_every": 100, "train.progress": False}


def tiny_cfg(out: Path, **extra):
    def value(v):  # TINY_SETS holds CLI strings
        return {"false": False, "true": True}.get(v, v) if isinstance(v, str) else v
    return resolve(nest({k: value(v) for k, v in {**SETTINGS, **extra, "out": str(out)}.items()}))


def stop_after(n: int):
    """A stop hook that asks to stop after ``n`` training steps (it is polled once per step)."""
    calls = []

    def hook() -> bool:
        calls.append(1)
        return len(calls) >= n
    return hook


def logged_steps(d: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (d / "log.jsonl").read_text().splitlines()]


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    ref = run_one(tiny_cfg(tmp_path / "a"), log=lambda m: None)
    assert ref.status == "complete"
    total = ref.result["provenance"]["train_total_steps"]
    assert total == 6  # 12 training objects / batch 4 x 2 epochs

    cfg = tiny_cfg(tmp_path / "b")
    first = run_one(cfg, stop_requested=stop_after(2), log=lambda m: None)
    d = run_dir(cfg)
    assert first.status == "interrupted" and first.result is None and not (d / "result.json").exists()
    # checkpointed at the stop step (mid-epoch), not at a checkpoint_every multiple
    assert torch.load(d / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not list(d.glob(".*tmp*"))

    second = run_one(cfg, log=lambda m: None)
    assert second.status == "complete"
    assert logged_steps(d) == list(range(1, total + 1))  # each step exactly once
    a, b = ref.result, second.result
    strip = lambda c: {**c, "out": None}
    assert strip(a["config"]) == strip(b["config"])
    assert a["provenance"]["train_steps"] == b["provenance"]["train_steps"] == total
    # same data order, RNG, optimiser and EMA state -> the same trajectory and the same probe results
    assert logged_losses(run_dir(cfg)) == pytest.approx(logged_losses(ref.run_dir), rel=1e-5)
    ma, mb = flatten(a["metrics"]), flatten(b["metrics"])
    assert ma.keys() == mb.keys()
    for k in ma.keys() - {"images_per_s"}:
        assert mb[k] == (pytest.approx(ma[k], rel=1e-4) if isinstance(ma[k], float) else ma[k]), k


def logged_losses(d: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (d / "log.jsonl").read_text().splitlines()]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    fileio.atomic_torch_save({"step": 1}, path)

    def dies_mid_write(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # e.g. SIGINT/SIGKILL-like interruption during the write

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_requeue_signal_stops_at_a_step_and_the_job_resumes(tmp_path):
    """The real signal path of slurm/job.py outside submitit: USR2 -> flag -> checkpoint -> return."""
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 3})
    d = run_dir(cfg)
    stray = []  # a late signal must not kill pytest
    before = signal.signal(signal.SIGUSR2, lambda *a: stray.append(1))
    before, own = signal.getsignal(signal.SIGUSR2), before

    def send_when_training() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not ((d / "log.jsonl").is_file() and (d / "log.jsonl").read_text()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)

    t = threading.Thread(target=send_when_training, daemon=True)
    t.start()
    out = RunJob(cfg)()
    t.join()
    assert out["status"] == "interrupted"
    step = torch.load(d / "checkpoint.pt", weights_only=True)["step"]
    assert 1 <= step < 9 and logged_steps(d) == list(range(1, step + 1))
    assert signal.getsignal(signal.SIGUSR2) == before and not stray  # the job restores the handler it replaced
    signal.signal(signal.SIGUSR2, own)

    job = RunJob(cfg).checkpoint().function  # what submitit requeues: a fresh job for the same config
    assert isinstance(job, RunJob) and job.cfg == cfg
    done = job()
    assert done["status"] == "complete" and done["metrics"]["top1"] is not None
    assert logged_steps(d) == list(range(1, 10))
    assert RunJob(cfg)()["status"] == "skipped"  # a requeued job of a finished run does nothing


class _HandlerState(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> bool:
        return all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGUSR1, signal.SIGUSR2))


def test_dataloader_workers_ignore_the_requeue_signal():
    previous = signal.signal(signal.SIGUSR2, lambda *a: None)  # a handler the workers would inherit
    try:
        loader = DataLoader(_HandlerState(), batch_size=2, num_workers=1,
                            worker_init_fn=train_mod.ignore_scheduler_signals)
        (batch,) = list(loader)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert batch.tolist() == [True, True]


def _worker_like() -> None:
    train_mod.ignore_scheduler_signals(0)
    time.sleep(60)


def test_workers_obey_sigterm_from_their_main_process_only():
    """SLURM's SIGTERM (any other sender) is ignored; the main process's terminate() still stops them."""
    worker = mp.get_context("fork").Process(target=_worker_like, daemon=True)
    worker.start()
    time.sleep(1.0)  # let it block SIGTERM
    for sig in ("-TERM", "-USR2"):
        subprocess.run(["kill", sig, str(worker.pid)], check=True)  # sent by another process
    worker.join(timeout=1.5)
    assert worker.is_alive()
    worker.terminate()  # SIGTERM from the main process, as PyTorch and multiprocessing send it
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_a_process_with_live_workers_still_exits():
    """multiprocessing's exit handler terminates daemonic workers and joins them without a timeout."""
    code = ("import torch\nfrom torch.utils.data import DataLoader\nfrom benchmark.core.train import "
            "ignore_scheduler_signals\nit = iter(DataLoader(list(range(8)), num_workers=1, "
            "worker_init_fn=ignore_scheduler_signals))\nprint(next(it))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_stop_hook_defers_to_the_step_raises_where_there_is_none_and_restores_handlers():
    from benchmark.core.runner import StopHook, StopRequested

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}
    with StopHook() as hook:
        assert not hook()
        os.kill(os.getpid(), signal.SIGTERM)  # in training: only a flag, polled after the step
        assert hook() and hook.reason == "SIGTERM"
        with pytest.raises(StopRequested, match="SIGTERM"):  # a pending stop ends a step-less section at once
            with hook.immediate():
                pass
    with StopHook() as hook:
        with pytest.raises(StopRequested, match="SIGUSR2"):
            with hook.immediate():  # e.g. the probes
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(5)
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C twice: stop now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert {s: signal.getsignal(s) for s in before} == before
