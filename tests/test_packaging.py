"""Packaging: environment.yml mirrors pyproject's pins; .ci/run runs the README's test command."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(specs: list[str]) -> dict[str, str]:
    out = {}
    for s in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", s.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    pinned = _pins(specs)
    assert len(pinned) == len(specs), "every dependency in pyproject.toml must be pinned with =="
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] and "python=3.11" in env["dependencies"]
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip_block) == pinned


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    commands = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[:2] == ["make run", "make test"], "README must open with the two set-up commands"
    assert "make test" in [ln.strip() for ln in ci.splitlines()]


def test_dependency_direction():
    """methods <- baselines <- benchmark <- slurm: a package never imports a later one."""
    order = ["methods", "baselines", "benchmark", "slurm"]
    for i, pkg in enumerate(order):
        forbidden = set(order[i + 1:])
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for n in names:
                    assert n.split(".")[0] not in forbidden, f"{path.relative_to(ROOT)} imports {n}"
