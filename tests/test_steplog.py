"""benchmark/core/steplog.py: which steps log.jsonl logs, the cut back on resume, online probes, a full disk."""

from __future__ import annotations

import errno
import json
import time

import pytest

from benchmark.core.resolve import resolve
from benchmark.core.rundir import RunDir
from benchmark.core.steplog import StepLog, TrainClock, cut_log
from benchmark.infra.fileio import DiskFull


def lines(rd: RunDir) -> list[dict]:
    return [json.loads(ln) for ln in rd.log.read_text().splitlines()]


def cfg_of(tmp_path, **train):
    return resolve({"out": str(tmp_path), "train": {"log_every": 2, "progress": False, **train}})


def test_cut_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')  # kill -9
    assert cut_log(log, 3) == 3 and [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    assert cut_log(log, 3) == 0
    assert cut_log(log, 0) == 3 and log.read_text() == ""  # a fresh start logs everything again
    assert cut_log(tmp_path / "none.jsonl", 4) == 0


def test_logged_steps_epochs_and_online_probes_with_their_time_left_out(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    cfg, clock = cfg_of(tmp_path, online_probe_every=3), TrainClock()

    def probes() -> dict:
        time.sleep(0.3)
        return {"online_top1": 50.0}

    clock.start(0)
    with StepLog(cfg, rd, 0, 7, 3, 8, clock, probes) as log:
        for step in range(1, 8):
            log.step(step, 1.0 / step, 0.1, {"extra": step})
    got = lines(rd)
    assert [x["step"] for x in got] == [0, 2, 3, 4, 6, 7]  # log_every 2, the probes every 3, the last step
    assert [x.get("epoch") for x in got] == [0, 0, 0, 1, 1, 2]  # 3 steps per epoch
    assert [x["step"] for x in got if "online_top1" in x] == [0, 3, 6, 7]
    assert got[1]["loss"] == 0.5 and got[1]["extra"] == 2 and got[1]["img_per_s"] > 0
    assert clock.paused_s >= 1.2 and clock.total(7)["seconds"] < 1.0  # 4 probes (1.2 s) are not training time


def test_a_resumed_log_is_cut_to_the_checkpoint_and_a_full_disk_is_one_message(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 5)))
    said = []
    with StepLog(cfg_of(tmp_path), rd, 2, 6, 3, 8, TrainClock(), None, said.append) as log:
        assert [x["step"] for x in lines(rd)] == [1, 2]
        assert said[0].startswith("resuming at step 2/6") and "cut back to step 2: 2 line(s)" in said[1]
        log.step(3, 0.1, 0.1, {})
        log.step(4, 0.1, 0.1, {})

        class Full:
            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self):
                pass

        log.file = Full()
        with pytest.raises(DiskFull, match="could not write training log"):
            log.step(6, 0.1, 0.1, {})
    assert [x["step"] for x in lines(rd)] == [1, 2, 4]
