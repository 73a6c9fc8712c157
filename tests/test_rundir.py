"""benchmark/core/rundir.py: a run directory's states, its lock, the records written when a run starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.config import run_dir, to_dict
from benchmark.core.resolve import resolve
from benchmark.core.results import write_result
from benchmark.core.rundir import INVALID_SUFFIX, RunDir
from benchmark.infra import yamlio
from benchmark.infra.errors import SeqbenchError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg(tmp_path):
    return resolve({"out": str(tmp_path), "train": {"epochs": 2}})


def test_states_from_new_to_finished_and_diverged(cfg):
    rd = RunDir.of(cfg)
    assert rd.path == run_dir(cfg) and rd.state() == "new"
    rd.write_config(cfg)
    assert rd.state() == "new" and yamlio.load(rd.config.read_text()) == json.loads(json.dumps(to_dict(cfg)))
    rd.log.write_text('{"step": 1}\n{"step": 2}\n')
    assert rd.state() == "interrupted" and rd.last_logged_step() == "2"
    rd.result.write_text('{"schema_version": 1, "status": "compl')  # a kill mid-copy, a hand edit
    assert rd.state() == "interrupted" and "corrupt result.json" in rd.check_result()[1]
    rd.log.unlink()
    assert rd.state() == "invalid"
    write_result(rd.path, cfg, {"top1": 1.0}, {})
    assert rd.state() == "finished" and rd.read_result()["metrics"] == {"top1": 1.0}
    rd.write_divergence(cfg, {}, {"step": 3, "what": "loss", "detail": "nan"})
    assert rd.state() == "diverged" and rd.read_result()["divergence"]["step"] == 3


def test_running_while_another_holds_the_lock_and_a_stale_lock_file_is_not(cfg, tmp_path):
    rd = RunDir.of(cfg)
    with rd.lock(f"run {rd.path}"):  # flock: a second open file description conflicts, even in this process
        assert rd.state() == "running"
        holder = rd.lock_holder()
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in holder
    assert rd.lock_holder() is None and not rd.path.exists()  # a lock that wrote nothing leaves nothing
    rd.path.mkdir(parents=True)
    rd.lock_file.write_text("host elsewhere, pid 1\n")  # left by kill -9: nobody holds it
    assert rd.lock_holder() is None and rd.state() == "new"
    assert rd.lock_file.read_text() == "host elsewhere, pid 1\n"  # the probe changes nothing


def test_start_writes_config_keeps_a_bad_result_and_refuses_a_hand_edit(cfg):
    rd, said = RunDir.of(cfg), []
    rd.path.mkdir(parents=True)
    rd.result.write_text("{}")
    assert rd.start(cfg, False, said.append) is None
    assert not rd.result.exists() and (rd.path / f"result.json{INVALID_SUFFIX}").read_text() == "{}"
    assert rd.config.is_file()
    edited = replace(cfg, train=replace(cfg.train, lr=0.5))
    with pytest.raises(SeqbenchError, match=r"config.yaml differs from this command's config in train.lr"):
        rd.start(edited, False, said.append)
    quiet = replace(cfg, train=replace(cfg.train, progress=False))  # not part of the run's identity
    assert rd.start(quiet, False, said.append) is None and "train.progress" in said[-1]
    write_result(rd.path, cfg, {"top1": 2.0}, {})
    assert rd.start(cfg, False, said.append)["metrics"] == {"top1": 2.0}  # finished by another process
    rd.checkpoint.write_bytes(b"x")
    rd.log.write_text("{}\n")
    assert rd.start(edited, True, said.append) is None  # --force: starts over, with the new config
    assert not (rd.result.exists() or rd.checkpoint.exists() or rd.log.exists())
    assert yamlio.load(rd.config.read_text())["train"]["lr"] == 0.5


def test_submission_records_and_no_torch(cfg):
    rd = RunDir.of(cfg)
    assert rd.read_submission() == {}
    rd.write_submission({"state": "submitted", "job_id": "7_1"})
    assert rd.read_submission()["job_id"] == "7_1" and "written" in rd.read_submission()
    rd.submission.write_text("[1, 2")
    assert rd.read_submission() == {}
    code = "import sys, benchmark.core.rundir; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr
