"""The smoke sweep on a real (local, single-node) SLURM cluster, with one job forced to requeue.

The cluster comes from the project's slurm/local/start-local-slurm.sh (root + apt; see slurm/README.md,
"A local single-node cluster"). Where it cannot be started the test is skipped with the reason; it never
passes silently.
A cluster that was already up is reused and left running; one started here is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from benchmark.config import run_dir
from slurm import launch

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "local"


def _cluster_answers() -> bool:
    if shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def slurm_cluster():
    start = SCRIPTS / "start-local-slurm.sh"
    if not start.is_file():
        pytest.skip(f"local SLURM cluster script not found at {start} (incomplete checkout?)")
    if os.geteuid() != 0:
        pytest.skip("starting the local SLURM cluster needs root (it installs packages and runs the daemons)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM installed and no apt-get to install it")
    was_up = _cluster_answers()
    try:
        res = subprocess.run(["bash", str(start)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{start} did not finish within 600 s")
    if res.returncode != 0:
        pytest.skip(f"the local SLURM cluster could not be started ({start} exited {res.returncode}):\n"
                    f"{res.stderr[-2000:]}")
    yield res.stdout.strip()
    if not was_up and os.environ.get("SEQBENCH_KEEP_SLURM") != "1":
        subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh")], capture_output=True, timeout=300)


def _wait_until(cond, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _logged_steps(d: Path) -> list[int]:
    log = d / "log.jsonl"
    return [json.loads(ln)["step"] for ln in log.read_text().splitlines()] if log.is_file() else []


def _sacct_states(job_id: str) -> list[str]:
    res = subprocess.run(["sacct", "-j", job_id, "--duplicates", "-X", "-n", "-P", "-o", "State"],
                         capture_output=True, text=True, timeout=60)
    return res.stdout.split()


def test_smoke_sweep_on_slurm_survives_a_requeue(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "runs"
    args = launch.build_parser().parse_args(
        ["--sweep", "smoke", "--executor", "slurm", "--cluster", "local", "--out", str(out)])
    first = launch.launch(args)
    jobs = first.jobs
    try:
        assert sorted(jobs) == [0, 1]
        assert len({j.job_id.split("_")[0] for j in jobs.values()}) == 1  # one job array
        victim = jobs[0]
        d = run_dir(launch.sweeps.load("smoke").config(0, launch.run_overrides(args)))
        # Interrupt mid-training: as soon as its first step is logged (SIGTERM, then the requeue signal USR2).
        _wait_until(lambda: _logged_steps(d) or victim.done(), 300, "the first training step of run 0")
        assert not victim.done(), "run 0 ended before it could be interrupted"
        victim._interrupt()
        deadline = time.time() + 420
        for job in jobs.values():
            _wait_until(lambda j=job: j.done(force_check=True), max(1, deadline - time.time()), f"job {job.job_id}",
                        poll=2)
        outcomes = {i: job.result() for i, job in jobs.items()}
    finally:
        for job in jobs.values():
            if not job.done():
                job.cancel(check=False)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "submitit").rglob("*_log.*")))

    assert {o["status"] for o in outcomes.values()} == {"complete"}
    assert "REQUEUED" in _sacct_states(victim.job_id), _sacct_states(victim.job_id)
    assert "interrupted at step" in logs and "this job is preempted" in logs and "Requeued job" in logs
    for i in (0, 1):
        rd = Path(outcomes[i]["run_dir"])
        r = json.loads((rd / "result.json").read_text())
        assert r["status"] == "complete" and r["config"]["sweep"] == "smoke"
        total = r["provenance"]["train_total_steps"]
        assert r["provenance"]["train_steps"] == total == 24
        # every step trained exactly once (run 0 resumed at the step it stopped at), one result written
        assert _logged_steps(rd) == list(range(1, total + 1))
        assert logs.count(f"wrote {rd}/result.json") == 1
    capsys.readouterr()

    # A second launch finds everything done and submits nothing.
    again = launch.launch(args)
    assert again.jobs == {} and set(again.skipped.values()) == {"done"}
    assert "nothing to submit" in capsys.readouterr().out
