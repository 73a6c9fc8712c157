"""Per-method settings chosen on the selection split: a grid's result.json files -> a ``per_method`` block.

    python -m slurm.launch --sweep pattern-select --executor local        # the grid (results/runs/pattern-select)
    python -m benchmark.studies.selection --runs results/runs/pattern-select   # -> selection.yaml, selection.md

Every finished run under ``--runs`` must have been probed with ``probe.validation_objects > 0``
(benchmark/probes/validation.py), so that it carries ``val_*`` numbers: probes fitted on part of the
*training* objects and scored on the rest. The held-out objects, whose numbers a benchmark reports, are never
read here.

Runs are grouped by method (the ablation arms of seq-JEPA, ``model.act_cond: false`` and ``train.epochs: 0``,
are not candidates: they take their method's choice). Inside a group, every config key whose value differs
between its runs is part of that method's grid, and one *setting* is one combination of their values. A
setting's score is the mean over its seeds of the score named by ``--score`` (:data:`SCORES`); the setting
with the highest score wins, ties going to the first in sorted order. The winners are written as a
``per_method`` YAML block, ready to be pasted into (or stacked after) a config file, and as a Markdown table
of every setting's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmark.config import NON_SEMANTIC
from benchmark.core.results import check_result
from benchmark.core.sweeps import flatten, nest
from benchmark.infra.errors import ConfigError, SeqbenchError, user_message
from benchmark.infra.fileio import atomic_write_text

# --score: a number from a run's metrics (higher is better). Default: class identity and pose with equal weight.
SCORES: dict[str, tuple[str, Callable[[dict], float]]] = {
    "top1+rotation": ("val_top1 / 100 + val_rotation_r2",
                      lambda m: m["val_top1"] / 100 + m["val_rotation_r2"]),
    "top1": ("val_top1", lambda m: m["val_top1"]),
    "rotation": ("val_rotation_r2", lambda m: m["val_rotation_r2"]),
}
DEFAULT_SCORE = "top1+rotation"
IGNORED = {"seed", "sweep", *(".".join(p) for p in NON_SEMANTIC)}  # never a grid axis


@dataclass(frozen=True)
class Candidate:
    """One setting of one method: its grid values, the runs (seeds) that trained it and their mean numbers."""

    method: str
    setting: tuple[tuple[str, Any], ...]  # (dotted key, value) for each grid key of the method
    seeds: tuple[int, ...]
    score: float
    val_top1: float
    val_rotation_r2: float


def load(runs_dir: Path) -> list[dict]:
    """Every valid, complete result.json under ``runs_dir`` (a run that is not done is skipped, as elsewhere)."""
    out = []
    for path in sorted(Path(runs_dir).rglob("result.json")):
        record, _ = check_result(path.parent)
        if record is not None and record["status"] == "complete":
            out.append(record)
    if not out:
        raise ConfigError(f"no finished runs under {runs_dir}; run the grid first: python -m slurm.launch --sweep "
                          f"pattern-select --executor local")
    return out


def candidates(records: list[dict], score: str = DEFAULT_SCORE) -> dict[str, list[Candidate]]:
    """method -> its settings, best first (score, then sorted order)."""
    if score not in SCORES:
        raise ConfigError(f"unknown --score {score!r}; valid: {', '.join(SCORES)}")
    formula, fn = SCORES[score]
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for r in records:
        flat = flatten(r["config"])
        if flat.get("model.act_cond") is False or flat.get("train.epochs") == 0:
            continue  # ablation arms and random-init references take their method's choice
        groups.setdefault(r["method"], []).append((flat, r))
    out: dict[str, list[Candidate]] = {}
    for method, runs in sorted(groups.items()):
        keys = sorted({k for flat, _ in runs for k in flat if k not in IGNORED
                       and len({json.dumps(f.get(k), sort_keys=True) for f, _ in runs}) > 1})
        by_setting: dict[str, list[dict]] = {}
        for flat, r in runs:
            missing = [k for k in ("val_top1", "val_rotation_r2") if k not in r["metrics"]]
            if missing:
                raise ConfigError(f"{r['run_dir']} has no {', '.join(missing)}: the grid's runs need "
                                  f"probe.validation_objects > 0 (benchmark/probes/validation.py)")
            setting = tuple((k, flat.get(k)) for k in keys)
            by_setting.setdefault(json.dumps(setting), []).append(r)
        cands = []
        for setting_json, rs in sorted(by_setting.items()):
            metrics = [r["metrics"] for r in rs]
            mean = lambda f, ms=metrics: sum(f(m) for m in ms) / len(ms)  # noqa: E731
            cands.append(Candidate(method, tuple((k, v) for k, v in json.loads(setting_json)),
                                   tuple(sorted(r["seed"] for r in rs)), mean(fn),
                                   mean(lambda m: m["val_top1"]), mean(lambda m: m["val_rotation_r2"])))
        # best first; NaN scores last; equal scores keep the sorted order (stable sort)
        out[method] = sorted(cands, key=lambda c: -c.score if math.isfinite(c.score) else math.inf)
    return out


def per_method(chosen: dict[str, list[Candidate]]) -> dict[str, dict]:
    """The winners as a ``per_method`` block: method -> nested settings (only its grid keys)."""
    return {m: nest(dict(cands[0].setting)) for m, cands in chosen.items() if cands[0].setting}


def _value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def to_yaml(chosen: dict[str, list[Candidate]], score: str, runs_dir: Path) -> str:
    head = [f"# Generated by python -m benchmark.studies.selection --runs {runs_dir} --score {score}",
            f"# score: {SCORES[score][0]} (mean over seeds), on the selection split carved from the training objects",
            "# grid per method (the chosen value first):"]
    for m, cands in chosen.items():
        grid = "; ".join(" ".join(f"{k}={_value(v)}" for k, v in c.setting) or "(one setting)" for c in cands)
        head.append(f"#   {m}: {grid}")
    return "\n".join(head) + "\n" + yaml.safe_dump({"per_method": per_method(chosen)}, sort_keys=True,
                                                   default_flow_style=None)


def to_markdown(chosen: dict[str, list[Candidate]], score: str) -> str:
    lines = [f"| method | setting | seeds | val top-1 | val rotation R² | score ({SCORES[score][0]}) | chosen |",
             "|---|---|---|---|---|---|---|"]
    for m, cands in chosen.items():
        for i, c in enumerate(cands):
            setting = ", ".join(f"{k}={_value(v)}" for k, v in c.setting) or "—"
            lines.append(f"| {m} | {setting} | {', '.join(map(str, c.seeds))} | {c.val_top1:.1f} "
                         f"| {c.val_rotation_r2:.3f} | {c.score:.3f} | {'yes' if i == 0 else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.studies.selection", description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="results/runs/pattern-select", help="the grid's run directories")
    p.add_argument("--score", default=DEFAULT_SCORE, choices=list(SCORES), help="what the selection maximises")
    p.add_argument("--out", help="folder for selection.yaml and selection.md (default: --runs)")
    args = p.parse_args(argv)
    try:
        chosen = candidates(load(Path(args.runs)), args.score)
        out = Path(args.out or args.runs)
        atomic_write_text(out / "selection.yaml", to_yaml(chosen, args.score, Path(args.runs)), "selection")
        table = to_markdown(chosen, args.score)
        atomic_write_text(out / "selection.md", table + "\n", "selection table")
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    print(table)
    print(f"\nwrote {out / 'selection.yaml'} and {out / 'selection.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
