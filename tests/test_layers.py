"""The architecture's layering (docs/architecture.md) holds: import-linter's contracts in pyproject.toml.

The contracts count every import, including those inside functions, so a layer that reaches up at call
time fails here as surely as one that imports at module level. A second check proves the checker bites.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail("lint-imports is not installed: `make venv` installs import-linter (pyproject.toml, dev extra)")
    return subprocess.run([str(exe), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(exe.parent), "PYTHONPATH": str(root)})


def test_layer_contracts_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_an_upward_import_inside_a_function_breaks_a_contract(tmp_path):
    copy = tmp_path / "repo"
    for name in ("methods", "baselines", "benchmark", "slurm"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    infra = copy / "benchmark" / "infra" / "fileio.py"
    climb = "\n\ndef _climb():\n    from benchmark.core import registry\n    return registry\n"
    infra.write_text(infra.read_text() + climb)
    r = _lint(copy)
    assert r.returncode != 0
    assert "benchmark.infra.fileio -> benchmark.core.registry" in r.stdout
