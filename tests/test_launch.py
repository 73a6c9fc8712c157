"""The launcher: dry-run table, --only, skipping finished and queued runs, errors before any submission,
and the local/debug executors end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.config import run_dir
from benchmark.core import sweeps
from benchmark.core.results import write_result
from slurm import launch
from slurm.launch import ClusterPreset, executor_parameters, load_preset, main, parse_only

# Two tiny runs on top of the smoke sweep (one training epoch), written under the test's folder.
FAST = ["--set", "train.epochs=1"]


def dirs(out: Path, *extra: str) -> list[Path]:
    args = launch.build_parser().parse_args(["--sweep", "smoke", "--out", str(out), *extra])
    sweep = sweeps.load("smoke")
    return [run_dir(sweep.config(i, launch.run_overrides(args))) for i in range(len(sweep))]


def configs(out: Path, *extra: str) -> list:
    args = launch.build_parser().parse_args(["--sweep", "smoke", "--out", str(out), *extra])
    sweep = sweeps.load("smoke")
    return [sweep.config(i, launch.run_overrides(args)) for i in range(len(sweep))]


def test_dry_run_table_shows_status_of_every_run(tmp_path, capsys):
    out = tmp_path / "runs"
    d0, d1 = dirs(out)
    write_result(d0, configs(out)[0], {"top1": 50.0}, {})
    d1.mkdir(parents=True)
    (d1 / "log.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln[:1].isdigit()]
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["0", "done"] and "model.act_cond=true" in lines[0] and str(d0) in lines[0]
    assert lines[1].split()[:4] == ["1", "partial", "(step", "7)"] and str(d1) in lines[1]
    assert "dry run: 1 done, 1 partial; 1 would be submitted" in text
    assert sorted(p.name for p in d1.iterdir()) == ["log.jsonl"]  # a dry run writes nothing

    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out), "--only", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln[:1].isdigit()]
    assert [ln.split()[0] for ln in lines] == ["1"]

    # a diverged run is finished (not resubmitted); a result of another schema is not
    write_result(d1, configs(out)[1], {}, {}, "diverged", {"step": 3, "what": "loss", "detail": "nan"})
    (d0 / "result.json").write_text('{"schema_version": 0}')
    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln[:1].isdigit()]
    assert lines[0].split()[:2] == ["0", "pending"] and "schema_version 0" in lines[0]
    assert lines[1].split()[:2] == ["1", "diverged"]


def test_only_parsing():
    assert parse_only("0,3,5-7", 10) == [0, 3, 5, 6, 7]
    assert parse_only("2, 2, 1-2", 3) == [2, 1]
    for bad in ("10", "a", "3-1", "1,,2"):
        with pytest.raises(Exception, match="--only"):
            parse_only(bad, 10)


def test_presets_and_executor_parameters(tmp_path):
    local = load_preset("local", {})
    assert local.partition is None and local.gpus_per_node == 0 and local.cpus_per_task <= 2
    params = executor_parameters(local, "x")
    # a GPU-less node rejects any GPU request and an unknown partition: send neither
    assert "gpus_per_node" not in params and "slurm_partition" not in params and params["tasks_per_node"] == 1
    gpu = load_preset("example-gpu", {"gpus_per_node": 4, "partition": "big"})
    params = executor_parameters(gpu, "x")
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4 and params["slurm_partition"] == "big"
    assert ClusterPreset(None, 2, 1, 1, 10, tasks_per_node=1).tasks == 1


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "nosuch"], "unknown sweep 'nosuch'"),
    (["--sweep", "smoke", "--set", "method=nosuch"], "unknown method 'nosuch'"),
    (["--sweep", "smoke", "--set", "model.act_cond=true"], "resolve to the same run directory"),
    (["--sweep", "smoke", "--only", "2"], "not within the sweep's runs 0-1"),
    (["--sweep", "smoke", "--cluster", "nosuch"], "unknown cluster preset 'nosuch'; presets: example-gpu, local"),
    (["--sweep", "smoke", "--cluster", "{preset}"], "lacks the required key(s) timeout_min"),
    (["--sweep", "smoke", "--cluster", "local", "--cpus", "0"], "cpus_per_task must be >= 1"),
    (["--sweep", "smoke", "--executor", "slurm"], "sbatch and srun not found on PATH"),
])
def test_bad_input_fails_before_anything_is_submitted(tmp_path, monkeypatch, capsys, argv, message):
    preset = tmp_path / "incomplete.yaml"
    preset.write_text("partition: null\ngpus_per_node: 0\ncpus_per_task: 1\nmem_gb: 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch/srun/squeue
    out = tmp_path / "runs"
    argv = [a.replace("{preset}", str(preset)) for a in argv]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "submitit").exists()


def test_queued_runs_are_not_submitted_twice(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    d0, _ = dirs(out)
    d0.mkdir(parents=True)
    (d0 / launch.SUBMISSION_FILE).write_text(json.dumps({"job_id": "41_0"}))
    monkeypatch.setattr(launch, "live_slurm_jobs", lambda: {"41_0": "RUNNING", "41_1": "PENDING"})
    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0    running (41_0)" in text and "1 running, 1 pending; 1 would be submitted" in text
    monkeypatch.setattr(launch, "live_slurm_jobs", lambda: {"41_0": "PENDING"})  # e.g. requeued
    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out)]) == 0
    assert "0    queued (41_0)" in capsys.readouterr().out
    monkeypatch.setattr(launch, "live_slurm_jobs", lambda: {})  # the job ended without a result: resubmit
    assert main(["--sweep", "smoke", "--dry-run", "--out", str(out)]) == 0
    assert "2 pending; 2 would be submitted" in capsys.readouterr().out


def test_debug_and_local_executors_run_the_sweep_then_skip_it(tmp_path, capsys):
    out = tmp_path / "runs"
    common = ["--sweep", "smoke", "--out", str(out), *FAST]
    assert main([*common, "--executor", "debug", "--only", "0"]) == 0
    assert main([*common, "--executor", "local", "--only", "1"]) == 0
    text = capsys.readouterr().out
    assert "run 0: complete" in text and "run 1: complete" in text
    for d in dirs(out, *FAST):
        r = json.loads((d / "result.json").read_text())
        assert r["status"] == "complete" and r["config"]["sweep"] == "smoke"
        assert r["provenance"]["train_steps"] == 3
    assert len(list((tmp_path / "submitit" / "smoke").glob("*/*"))) >= 2  # submitit logs beside the runs
    assert main([*common, "--executor", "local"]) == 0
    assert "nothing to submit: every selected run is done or already queued (2 done)" in capsys.readouterr().out
