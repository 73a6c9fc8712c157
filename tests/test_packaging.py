"""Packaging: pyproject, environment.yml and the lock file agree; .ci/run runs the README's test command;
the repository is self-contained (licence, citation, no references outside the clone)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    assert "-c constraints.txt" in pip_block, "environment.yml must install with the lock file"


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _locked() -> dict[str, str]:
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    specs = [ln for ln in lines if ln and not ln.startswith("#")]
    locked = {canonicalize_name(k): v for k, v in _pins(specs).items()}
    assert len(locked) == len(specs), "every line of constraints.txt must be a name==version pin"
    return locked


def test_lock_file_pins_every_dependency_at_pyproject_versions():
    locked = _locked()
    for req in _project_requirements():
        (spec,) = req.specifier
        assert locked.get(canonicalize_name(req.name)) == spec.version, f"constraints.txt disagrees on {req}"
    assert "seqbench" not in locked, "the project itself must not be in its lock file"


def test_lock_file_covers_the_installed_dependency_closure():
    """Every package the project pulls in, transitively, as installed here, is pinned (no floating versions)."""
    locked = _locked()
    todo, seen, missing = [(r, ()) for r in _project_requirements()], set(), []
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # not installed on this platform (e.g. a CUDA wheel); nothing to compare
        if name not in locked:
            missing.append(f"{name}=={dist.version}")
        todo += [(Requirement(r), tuple(req.extras)) for r in dist.requires or []]
    assert not missing, f"run `make lock`: constraints.txt lacks {', '.join(sorted(missing))}"
    assert len(seen) > 30  # torch, lightly, pandas, ... really were walked


def test_make_installs_visibly_with_the_lock_file():
    make = (ROOT / "Makefile").read_text()
    installs = [ln for ln in make.splitlines() if "pip install" in ln]
    assert installs and not any(re.search(r"\s-q\b|--quiet", ln) for ln in installs), "pip must show progress"
    assert any("-c constraints.txt" in ln and '-e ".[dev]"' in ln for ln in installs)


def test_licence_and_citation():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    licence = (ROOT / "LICENSE").read_text()
    assert project["license"] == "MIT" and licence.startswith("MIT License") and "seqbench contributors" in licence
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["version"] == project["version"]
    assert cff["title"].startswith("seqbench") and cff["authors"]
    refs = {r["identifiers"][0]["value"]: r for r in cff["references"]}
    assert refs["10.48550/arXiv.2505.03176"]["authors"][0]["family-names"] == "Ghaemi"  # seq-JEPA
    assert refs["10.48550/arXiv.2302.10283"]["authors"][0]["family-names"] == "Garrido"  # SIE / 3DIEBench


def test_no_tracked_file_points_outside_the_repository():
    """Docs, comments and scripts cite files inside the clone (docs/, slurm/local/), never a sibling folder."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the tracked files")
    outside = re.compile(r"\.\./" + "shared|/work/" + "shared|shared/(docs|slurm)/")
    bad = []
    for name in files.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_bytes().decode("utf-8", "replace")
            bad += [f"{name}:{i}" for i, ln in enumerate(text.splitlines(), 1) if outside.search(ln)]
    assert not bad, f"references outside the repository: {bad}"
    for name in ("docs/protocol.md", "docs/3diebench.md", "docs/baselines.md", "slurm/local/start-local-slurm.sh",
                 "slurm/local/stop-local-slurm.sh"):
        assert (ROOT / name).is_file(), name
    assert "## Decisions" in (ROOT / "docs" / "protocol.md").read_text()


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
