"""Start-up cost of the command lines: ``--help`` imports no torch (registries load entries lazily), and
DataLoader workers default to what the machine has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.runner import main as run_main
from benchmark.data import base
from tests.conftest import tiny_args

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "lightly", "matplotlib", "pandas", "scipy", "sklearn")

# Runs a module's command line as `python -m` would, then reports the heavy modules it imported.
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print("\\n@@" + json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(module: str, *args: str) -> tuple[dict, str]:
    code = PROBE.replace("json.loads(HEAVY)", repr(list(HEAVY)))
    res = subprocess.run([sys.executable, "-c", code, module, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, _, report = res.stdout.rpartition("\n@@")
    assert report, f"{module} {args} crashed:\n{res.stderr[-2000:]}"
    return json.loads(report), out


@pytest.mark.parametrize("module, expect", [
    ("benchmark.core.runner", ["seqjepa", "contextssl", "3diebench-mini", "stl10-saccades"]),
    ("slurm.launch", ["paper-3diebench", "--dry-run", "--executor"]),
    ("benchmark.reporting.aggregate", ["--runs"]),
])
def test_help_imports_no_torch(module, expect):
    report, out = _probe(module, "--help")
    assert report["code"] == 0
    for word in expect:
        assert word in out
    bad = set(report["heavy"]) - ({"pandas"} if module == "benchmark.reporting.aggregate" else set())
    assert not bad, f"`python -m {module} --help` imported {sorted(bad)}"


def test_registries_list_names_without_importing_and_load_on_lookup():
    code = ("import sys; from benchmark.core.registry import DATASETS, METHODS\n"
            "names = list(METHODS) + list(DATASETS); assert 'sie' in METHODS and 'nosuch' not in METHODS\n"
            "assert DATASETS['cifar100'].defaults['data']['num_workers'] == 8\n"
            "before = 'torch' in sys.modules\n"
            "cls = METHODS['sie']; print(before, cls.__module__, len(names))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "baselines.sie", "24"]


def test_loader_workers_are_capped_at_the_available_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert base.available_cpus() == 2
    assert [base.loader_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]


def test_run_logs_the_workers_it_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert run_main(tiny_args(tmp_path, **{"data.num_workers": 3})) == 0
    out = capsys.readouterr().out
    assert "DataLoader workers: 1 (data.num_workers=3, 1 CPU cores available to this process)" in out
    (result,) = tmp_path.rglob("result.json")
    r = json.loads(result.read_text())
    assert r["provenance"]["dataloader_workers"] == 1 and r["config"]["data"]["num_workers"] == 3
