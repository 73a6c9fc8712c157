"""Fault injection on the tiny mini (CPU): each fault a user or a cluster produces, and what it leaves.

Every fault must end with a one-paragraph message (no traceback), lose no finished step and duplicate
nothing: a pickle payload in checkpoint.pt, two concurrent runs, SIGTERM mid-run, kill -9 then resume,
divergence (at the last step and mid-run), a kill during the probes, corrupt / old-schema result.json,
an squeue that fails, a full disk (``ulimit -f``), a data error on one DDP rank, hand-edited
config.yaml, a checkpoint of another config or data, path escapes and control characters, and the
file modes under umask 022.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import resource
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.config import run_dir, to_dict
from benchmark.core.registry import METHODS, build_method, dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.runner import EXIT_CODES, build_parser, config_from_args, main, run_one
from benchmark.core.train import build_optimizer
from benchmark.infra import fileio
from benchmark.reporting.aggregate import aggregate
from benchmark.tools.export import main as export_main
from slurm import launch
from slurm.job import RunJob
from tests.conftest import tiny_args
from tests.test_resume import stop_after, tiny_cfg

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- helpers
def cfg_of(args: list[str]):
    return config_from_args(build_parser().parse_args(args))


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_paragraph(err: str) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("seqbench: SIG")]
    assert len(lines) == 1 and lines[0].startswith(("error: ", "interrupted: ")), err


def steps(d: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (d / "log.jsonl").read_text().splitlines()]


def ck_step(d: Path) -> int:
    return torch.load(d / "checkpoint.pt", weights_only=True)["step"]


def _child_main(args: list[str], err: str, fsize: int | None) -> None:
    """A forked ``python -m benchmark.run ARGS`` (no second interpreter start-up: torch is imported)."""
    if fsize is not None:  # what `ulimit -f` does
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.stdout, sys.stderr = open(os.devnull, "w"), os.fdopen(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    code = main(args)
    sys.stderr.flush()
    os._exit(code)


def spawn(args: list[str], tmp_path: Path, name: str, fsize: int | None = None) -> tuple[Child, Path]:
    err = tmp_path / f"{name}.err"
    proc = mp.get_context("fork").Process(target=_child_main, args=(args, str(err), fsize), daemon=True)
    proc.start()
    return Child(proc), err


class Child:
    """The few Popen-like calls the tests need, on a forked process."""

    def __init__(self, proc) -> None:
        self.proc, self.pid = proc, proc.pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)


def wait_for(cond, proc: Child, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"the child exited ({proc.poll()}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def logged(d: Path) -> list[int]:
    try:
        return [json.loads(ln)["step"] for ln in (d / "log.jsonl").read_text().splitlines() if ln.endswith("}")]
    except (OSError, ValueError):
        return []


class Payload:
    """What an attacker pickles into checkpoint.pt: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------------------------------- checkpoints
def test_pickle_payload_and_missing_keys_are_refused_without_running_anything(tmp_path, capsys):
    args = tiny_args(tmp_path / "runs")
    d = run_dir(cfg_of(args))
    d.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker), "optimizer": {}, "step": 1, "rng": [], "config": {}}, d / "checkpoint.pt")
    code, _, err = cli(args, capsys)
    assert code == 2 and not marker.exists()
    one_paragraph(err)
    assert "pickled Python objects" in err and "nothing in it was run" in err and "posix.system" in err
    assert (d / "checkpoint.pt").is_file() and not (d / "result.json").exists()  # refused, not deleted

    torch.save({"model": {}, "step": 3, "rng": [], "config": to_dict(cfg_of(args))}, d / "checkpoint.pt")
    code, _, err = cli(args, capsys)
    assert code == 2 and "lacks 'optimizer'" in err and "--force" in err
    one_paragraph(err)


def test_every_method_checkpoint_loads_with_weights_only(tmp_path):
    """What the training loop saves (model, optimiser state after a step, RNG, config, provenance) is
    plain tensors and containers: every method's state_dict holds tensors only (no extra pickled state),
    and a full checkpoint round-trips through torch.load(weights_only=True)."""
    for name in METHODS:
        cfg = tiny_cfg(tmp_path, method=name, **{"data.seq_len": 2 if "tx" in name or name == "seqjepa" else 1})
        method, _ = build_method(cfg)
        bad = [k for k, v in method.state_dict().items() if not isinstance(v, torch.Tensor)]
        assert not bad, (name, bad)
    cfg = tiny_cfg(tmp_path)
    method, _ = build_method(cfg)
    opt, _ = build_optimizer(method, cfg)
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    ck = {"model": method.state_dict(), "optimizer": opt.state_dict(), "step": 1,
          "rng": [{"cpu": torch.get_rng_state(), "cuda": None}], "config": to_dict(cfg),
          "data": {"split:train": "sha256:0"}, "train_loss": 1.0, "timing": {"steps": 1, "seconds": 0.1},
          "segments": [{"start_step": 0, "end_step": 1, "git_commit": None, "git_dirty": None}]}
    buf = io.BytesIO()
    torch.save(ck, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert back["config"] == to_dict(cfg) and back["optimizer"]["param_groups"] == ck["optimizer"]["param_groups"]


# ---------------------------------------------------------------------------------------- concurrency, signals
def test_concurrent_run_is_refused_and_sigterm_checkpoints_at_the_step(tmp_path, capsys):
    args = tiny_args(tmp_path / "runs", **{"train.epochs": 3, "train.log_every": 1, "train.checkpoint_every": 100})
    d = run_dir(cfg_of(args))
    first, err_file = spawn(args, tmp_path, "first")
    try:
        wait_for(lambda: len(logged(d)) >= 1, first, "the first logged step")
        first.send_signal(signal.SIGSTOP)  # frozen mid-run (holding its lock) while the second one starts
        code, _, err = cli(args, capsys)  # the same command, started while the first one trains
        assert code == EXIT_CODES["locked"] == 4
        one_paragraph(err)
        assert "is running elsewhere" in err and f"pid {first.pid}" in err and socket.gethostname() in err
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == EXIT_CODES["interrupted"] == 75
    finally:
        first.kill()
    err = err_file.read_text()
    assert "SIGTERM received" in err
    one_paragraph(err)
    assert "stopped by SIGTERM at step" in err and "the same command resumes" in err
    stopped = ck_step(d)
    assert 1 <= stopped < 9 and steps(d) == list(range(1, stopped + 1))  # nothing after the checkpoint
    assert not (d / "result.json").exists() and not (d / ".lock").exists()

    code, _, err = cli(args, capsys)
    assert code == 0 and err == ""
    assert steps(d) == list(range(1, 10))  # every step once
    prov = json.loads((d / "result.json").read_text())["provenance"]
    assert prov["resumes"] == 1 and [s["start_step"] for s in prov["segments"]] == [0, stopped]
    assert [s["end_step"] for s in prov["segments"]] == [stopped, 9]
    assert all("git_commit" in s for s in prov["segments"])


def test_kill_9_then_resume_logs_every_step_once(tmp_path, capsys):
    args = tiny_args(tmp_path / "runs", **{"train.epochs": 3, "train.log_every": 1, "train.checkpoint_every": 2})
    d = run_dir(cfg_of(args))
    proc, _ = spawn(args, tmp_path, "victim")
    try:
        # kill when the log is ahead of the checkpoint (steps that will be trained again)
        wait_for(lambda: (d / "checkpoint.pt").is_file() and len(logged(d)) % 2 == 1, proc,
                 "a logged step past the checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    killed_at = logged(d)[-1]
    saved = ck_step(d)
    assert saved < killed_at < 9, "the run was killed before it logged past its checkpoint"
    assert (d / ".lock").exists()  # a stale lock file from the killed process does not block the resume
    code, out, err = cli(args, capsys)
    assert code == 0 and err == ""
    assert f"log.jsonl cut back to step {saved}" in out
    assert steps(d) == list(range(1, 10))
    assert json.loads((d / "result.json").read_text())["provenance"]["resumes"] == 1


# ---------------------------------------------------------------------------------------- divergence
def test_divergence_at_the_last_step_is_recorded_not_reported_as_a_result(tmp_path, capsys):
    out = tmp_path / "runs"
    args = tiny_args(out, **{"train.lr": "1.0e+30", "train.max_steps": 1})
    code, _, err = cli(args, capsys)
    assert code == EXIT_CODES["diverged"] == 3
    one_paragraph(err)
    assert "diverged at step 1" in err and "Lower the learning rate" in err
    d = run_dir(cfg_of(args))
    r = json.loads((d / "result.json").read_text())
    assert r["status"] == "diverged" and r["metrics"] == {} and r["divergence"]["step"] == 1
    assert r["divergence"]["what"] in ("parameters", "probe features")
    code, printed, _ = cli(args, capsys)  # finished (as diverged): not run again
    assert code == 0 and "already finished: diverged at step 1" in printed

    assert main(tiny_args(out, **{"model.act_cond": "false"}) + ["--epochs", "0"]) == 0  # one valid run
    capsys.readouterr()
    aggregate(out, tmp_path / "agg", plots=False)
    coverage = (tmp_path / "agg" / "coverage.md").read_text()
    section = coverage.split("## Diverged runs")[1].split("##")[0]
    assert str(d) in section and "diverged at step 1" in section
    runs = (tmp_path / "agg" / "runs.csv").read_text()
    assert str(d) not in runs and runs.count("\n") == 2  # header + the valid run


def test_nan_loss_mid_run_ends_as_diverged_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    from methods.seqjepa import SeqJEPA

    real = SeqJEPA.training_step
    calls = []

    def nan_at_step_3(self, batch):
        out = real(self, batch)
        calls.append(1)
        if len(calls) == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SeqJEPA, "training_step", nan_at_step_3)
    cfg = tiny_cfg(tmp_path)
    res = run_one(cfg, log=lambda m: None)
    d = run_dir(cfg)
    assert res.status == "diverged" and "diverged at step 3 (loss" in res.message
    r = json.loads((d / "result.json").read_text())
    assert r["divergence"]["step"] == 3 and r["divergence"]["what"] == "loss" and r["metrics"] == {}
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 2 and all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point())
    assert steps(d) == [1, 2]


# ---------------------------------------------------------------------------------------- probes
def test_a_stop_or_kill_during_the_probes_resumes_with_the_training_numbers(tmp_path, monkeypatch):
    import benchmark.probes.suite as run_mod  # run.py imports evaluate from here when the probes start

    cfg = tiny_cfg(tmp_path)
    real = run_mod.evaluate

    def killed(*a, **k):
        raise SystemExit("killed during the probes")  # what a kill leaves: nothing after the training

    monkeypatch.setattr(run_mod, "evaluate", killed)
    with pytest.raises(SystemExit):
        run_one(cfg, log=lambda m: None)
    d = run_dir(cfg)
    assert ck_step(d) == 6 and not (d / "result.json").exists()

    def signalled(*a, **k):  # the requeue signal arrives while the probes run
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(30)
        raise AssertionError("the stop did not interrupt the probes")

    monkeypatch.setattr(run_mod, "evaluate", signalled)
    res = RunJob(cfg)()  # the SLURM job's hook: under submitit it would requeue at once
    assert res["status"] == "interrupted" and "during the probes" in res["message"]
    assert not (d / "result.json").exists()

    monkeypatch.setattr(run_mod, "evaluate", real)
    res = run_one(cfg, log=lambda m: None)
    assert res.status == "complete"
    m, prov = res.result["metrics"], res.result["provenance"]
    last = json.loads((d / "log.jsonl").read_text().splitlines()[-1])
    assert m["train_loss_final"] == pytest.approx(last["loss"], rel=1e-5)
    assert math.isfinite(m["images_per_s"]) and m["images_per_s"] > 0
    # segments that left a checkpoint, and this one (the stopped attempt trained nothing and saved nothing)
    assert prov["resumes"] == 1 and [(s["start_step"], s["end_step"]) for s in prov["segments"]] == [(0, 6), (6, 6)]
    assert steps(d) == list(range(1, 7))


# ---------------------------------------------------------------------------------------- "done"
def test_corrupt_and_old_schema_results_are_not_done_anywhere(tmp_path, capsys):
    out = tmp_path / "runs"
    args = tiny_args(out) + ["--epochs", "0"]
    assert main(args) == 0
    d = run_dir(cfg_of(args))
    good = (d / "result.json").read_text()
    for bad, why in ((good[: len(good) // 2], "corrupt result.json"),
                     (json.dumps({**json.loads(good), "schema_version": 0}), "schema_version 0")):
        (d / "result.json").write_text(bad)
        aggregate_out = tmp_path / "agg"
        with pytest.raises(SystemExit, match="no valid result.json"):
            aggregate(out, aggregate_out, plots=False)
        assert why in (aggregate_out / "coverage.md").read_text()
        code, printed, err = cli(args, capsys)
        assert code == 0 and err == "" and "note: " in printed and why in printed and "not done" in printed
        assert json.loads((d / "result.json").read_text())["schema_version"] == 1
        assert (d / "result.json.invalid").read_text() == bad  # kept, not lost

    # the launcher: a bad result.json is not "done"
    sweep_out = tmp_path / "sweep"
    args = launch.build_parser().parse_args(["--sweep", "smoke", "--out", str(sweep_out)])
    d0 = run_dir(launch.sweeps.load("smoke").config(0, launch.run_overrides(args)))
    d0.mkdir(parents=True)
    (d0 / "result.json").write_text('{"schema_version": 0}')
    assert launch.main(["--sweep", "smoke", "--dry-run", "--out", str(sweep_out)]) == 0
    text = capsys.readouterr().out
    row = next(ln for ln in text.splitlines() if ln.startswith("0 "))
    assert "pending (result.json has schema_version 0, not 1, not done)" in row
    assert "2 would be submitted" in text


def test_hand_edited_config_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    args = tiny_args(tmp_path / "runs", **{"train.epochs": 2, "train.log_every": 1})
    cfg = cfg_of(args)
    d = run_dir(cfg)
    assert run_one(cfg, stop_requested=stop_after(1), log=lambda m: None).status == "interrupted"
    config = d / "config.yaml"
    edited = config.read_text().replace("lr: null", "lr: 0.5")
    config.write_text(edited)
    code, _, err = cli(args, capsys)
    assert code == 2 and "config.yaml differs" in err and "train.lr: 0.5 (config.yaml) vs null (this command)" in err
    one_paragraph(err)
    assert config.read_text() == edited  # not overwritten
    config.write_text(edited.replace("lr: 0.5", "lr: null").replace("device: auto", "device: cpu"))
    assert run_one(cfg, stop_requested=stop_after(1), log=lambda m: None).status == "interrupted"  # not identity

    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    torch.save({**ck, "config": {**ck["config"], "train": {**ck["config"]["train"], "lr": 0.5}}}, d / "checkpoint.pt")
    code, _, err = cli(args, capsys)
    assert code == 2 and "was trained with another config: train.lr: 0.5 (checkpoint) vs null (now)" in err
    one_paragraph(err)
    torch.save({**ck, "data": {**ck["data"], "split:train": "sha256:other"}}, d / "checkpoint.pt")
    code, _, err = cli(args, capsys)
    assert code == 2 and "was trained on other data: split:train" in err
    torch.save(ck, d / "checkpoint.pt")
    code, _, err = cli(args, capsys)
    assert code == 0 and err == "" and steps(d) == list(range(1, 7))
    assert set(json.loads((d / "result.json").read_text())["provenance"]["data_digests"]) == {"split:train",
                                                                                               "split:val"}


# ---------------------------------------------------------------------------------------- launcher
def fake_slurm(tmp_path: Path, squeue_exit: int = 0) -> Path:
    """squeue / sbatch / srun stand-ins on PATH; sbatch records each call and the run markers it saw."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch-calls"
    scripts = {
        "squeue": f"#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\n"
                  f"exit {squeue_exit}\n" if squeue_exit else "#!/bin/sh\nexit 0\n",
        "sbatch": f"#!/bin/sh\ncat $(find {tmp_path / 'runs'} -name submission.json) >> {calls}\n"
                  f"echo 'Submitted batch job 77'\n",
        "srun": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return calls


def test_launcher_fails_closed_when_squeue_fails(tmp_path, monkeypatch, capsys):
    calls = fake_slurm(tmp_path, squeue_exit=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "runs"
    args = launch.build_parser().parse_args(["--sweep", "smoke", "--out", str(out)])
    d0 = run_dir(launch.sweeps.load("smoke").config(0, launch.run_overrides(args)))
    d0.mkdir(parents=True)
    record = json.dumps({"state": "submitted", "job_id": "41_0"}) + "\n"
    (d0 / "submission.json").write_text(record)
    argv = ["--sweep", "smoke", "--out", str(out), "--executor", "slurm"]
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: squeue failed (exit 1: slurm_load_jobs error") and "nothing was submitted" in err
    assert err.count("\n") == 1 and not calls.exists() and (d0 / "submission.json").read_text() == record
    assert launch.main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "warning: squeue failed" in text and "unknown (squeue failed)" in text and "1 would be submitted" in text


def test_launch_holds_the_sweep_lock_and_marks_runs_before_sbatch(tmp_path, monkeypatch, capsys):
    calls = fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "runs"
    argv = ["--sweep", "smoke", "--out", str(out), "--executor", "slurm"]
    with fileio.exclusive_lock(out / "smoke" / launch.LAUNCH_LOCK, "a launch"):
        assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert "is running elsewhere" in err and f"pid {os.getpid()}" in err and not calls.exists()

    assert launch.main(argv) == 0
    assert capsys.readouterr().out.count("-> job 77_") == 2
    seen = calls.read_text()  # what sbatch saw: both runs marked "submitting" before it ran
    assert seen.count('"state": "submitting"') == 2
    args = launch.build_parser().parse_args(argv)
    for i in range(2):
        d = run_dir(launch.sweeps.load("smoke").config(i, launch.run_overrides(args)))
        rec = json.loads((d / "submission.json").read_text())
        assert rec["state"] == "submitted" and rec["job_id"] == f"77_{i}"
        assert stat.S_IMODE((d / "submission.json").stat().st_mode) & 0o044 == 0o044
    assert not (out / "smoke" / launch.LAUNCH_LOCK).exists()


def test_sweep_escapes_and_control_characters_are_rejected(tmp_path, capsys):
    for bad in ("../../escaped", "/abs/olute", "a/b", ".hidden"):
        code, _, err = cli(tiny_args(tmp_path / "runs") + ["--set", f"sweep={bad}"], capsys)
        assert code == 2 and f"sweep {bad!r}" in err and "cannot hold '/'" in err
    assert not (tmp_path / "escaped").exists() and not Path("/abs").exists()
    preset = tmp_path / "evil.yaml"
    preset.write_text((REPO / "slurm" / "clusters" / "local.yaml").read_text()
                      + 'constraint: "a100\\n#SBATCH --wrap=rm"\n')
    assert launch.main(["--sweep", "smoke", "--dry-run", "--cluster", str(preset), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "constraint = 'a100\\n#SBATCH --wrap=rm' contains a control character" in err
    assert launch.main(["--sweep", "smoke", "--dry-run", "--partition", "gpu\nsleep 1", "--out", str(tmp_path)]) == 2
    assert "partition" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- disk, modes
def test_full_disk_during_a_checkpoint_is_one_message_and_loses_nothing(tmp_path, capsys):
    args = tiny_args(tmp_path / "runs", **{"train.epochs": 2, "train.log_every": 1, "train.checkpoint_every": 2})
    d = run_dir(cfg_of(args))
    dataset_entry("3diebench-mini").build(cfg_of(args), "train", 4, False)  # generated before the limit applies
    proc, err_file = spawn(args, tmp_path, "full", fsize=512 * 1024)  # ulimit -f 512: 512 KiB per file
    assert proc.wait(timeout=300) == 74
    err = err_file.read_text()
    one_paragraph(err)
    assert "could not write checkpoint" in err and "ulimit -f" in err and "no finished step is lost" in err
    assert not (d / "checkpoint.pt").exists() and not list(d.glob(".*.tmp")) and not (d / "result.json").exists()
    code, _, err = cli(args, capsys)
    assert code == 0 and err == "" and steps(d) == list(range(1, 7))


def test_files_are_readable_by_others_under_umask_022(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "runs"
        args = tiny_args(out, **{"train.max_steps": 2})
        assert main(args) == 0
        d = run_dir(cfg_of(args))
        assert export_main(["--run", str(d), "--format", "torchvision"]) == 0
        aggregate(out, tmp_path / "agg", plots=True)
        capsys.readouterr()
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert {"checkpoint.pt", "config.yaml", "log.jsonl", "result.json", "encoder_torchvision.pth",
                "coverage.md", "runs.csv"} <= {p.name for p in files}
        assert any(p.suffix == ".png" for p in files)
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        os.umask(0o027)  # the umask is respected, not replaced by a fixed mode
        fileio.atomic_write_text(tmp_path / "private.txt", "x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_with_bad_data(rank: int, port: int, cfg_dict: dict, report: str, cache: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", SEQBENCH_CACHE=cache)
    torch.set_num_threads(1)
    from benchmark.data.threedie import ThreeDIEBench
    from benchmark.infra.errors import DataError, SeqbenchError, user_message

    calls = []
    item = ThreeDIEBench.item

    def corrupt_on_rank1(self, index, rng):
        calls.append(1)
        if rank == 1 and not self.fixed and len(calls) > 4:  # rank 1's 3rd batch of 2
            raise DataError("image_3.jpg of object X is corrupt (injected)")
        return item(self, index, rng)

    ThreeDIEBench.item = corrupt_on_rank1
    t0 = time.time()
    try:
        run_one(resolve(cfg_dict), log=lambda m: None)
        said = "no error"
    except SeqbenchError as e:
        said = user_message(e)
    Path(report, f"rank{rank}.json").write_text(json.dumps({"error": said, "seconds": time.time() - t0}))


def test_a_data_error_on_one_rank_stops_every_rank_at_once(tmp_path):
    cfg = tiny_cfg(tmp_path / "runs", **{"train.epochs": 2, "train.checkpoint_every": 100})
    report = tmp_path / "report"
    report.mkdir()
    ctx = mp.get_context("fork")  # torch is imported already: no interpreter start-up per rank
    port = _free_port()
    procs = [ctx.Process(target=_rank_with_bad_data, args=(r, port, to_dict(cfg), str(report),
                                                            os.environ["SEQBENCH_CACHE"])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)  # the gloo/NCCL timeout would be 30 min
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((report / f"rank{r}.json").read_text()) for r in range(2))
    # rank 1 raises its own error; rank 0 stops at the same step with rank 1's message
    assert r1["error"] == "image_3.jpg of object X is corrupt (injected)"
    assert r0["error"] == "rank 1: image_3.jpg of object X is corrupt (injected); every rank stopped"
    d = run_dir(cfg)
    assert steps(d) == [1, 2] and not (d / "result.json").exists()  # the finished steps are logged once
