"""benchmark/studies/selection.py: per-method settings chosen on the val_* numbers of a grid's result.json files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from benchmark.config import merge, parse_set, run_dir
from benchmark.core.resolve import resolve
from benchmark.core.results import write_result
from benchmark.infra.errors import ConfigError
from benchmark.studies.selection import candidates, load, main, per_method


def _run(out: Path, method: str, seed: int, val_top1: float, val_rot: float, held_top1: float = 50.0,
         **sets) -> None:
    """A finished run's result.json with these val_* numbers (held-out numbers that must not matter)."""
    cfg = resolve(merge(parse_set([f"{k}={v}" for k, v in sets.items()]),
                        {"method": method, "seed": seed, "out": str(out), "probe": {"validation_objects": 8}}))
    metrics = {"top1": held_top1, "rotation_r2": 0.9, "val_top1": val_top1, "val_rotation_r2": val_rot}
    write_result(run_dir(cfg), cfg, metrics, {})


def _grid(out: Path) -> None:
    # byol: lr 2e-3 wins on the mean over seeds (0.5 + 0.2 and 0.6 + 0.2) although seed 1 of 4e-4 is higher
    _run(out, "byol", 0, 20.0, 0.00, held_top1=99.0, **{"train.lr": 4e-4})
    _run(out, "byol", 1, 90.0, 0.00, held_top1=99.0, **{"train.lr": 4e-4})
    _run(out, "byol", 0, 50.0, 0.20, **{"train.lr": 2e-3})
    _run(out, "byol", 1, 60.0, 0.20, **{"train.lr": 2e-3})
    # sie: two keys vary; the pose-heavy setting wins the default score, the class-heavy one --score top1
    _run(out, "sie", 0, 40.0, 0.30, **{"train.lr": 4e-4, "model.equi_factor": 0.1})
    _run(out, "sie", 0, 60.0, 0.05, **{"train.lr": 4e-4, "model.equi_factor": 1.0})
    _run(out, "sie", 0, 30.0, 0.10, **{"train.lr": 2e-3, "model.equi_factor": 1.0})
    # seq-JEPA: the ablation arm and the random-init run are not candidates (they would win on val numbers)
    _run(out, "seqjepa", 0, 70.0, 0.20, **{"model.ema_decay": 0.99})
    _run(out, "seqjepa", 0, 60.0, 0.35, **{"model.ema_decay": 0.996})
    _run(out, "seqjepa", 0, 99.0, 0.90, **{"model.ema_decay": 0.996, "model.act_cond": "false"})
    _run(out, "seqjepa", 0, 99.0, 0.90, **{"model.ema_decay": 0.996, "train.epochs": 0})


def test_selection_known_answer(tmp_path) -> None:
    _grid(tmp_path)
    chosen = candidates(load(tmp_path))
    assert per_method(chosen) == {"byol": {"train": {"lr": 2e-3}},
                                  "sie": {"model": {"equi_factor": 0.1}, "train": {"lr": 4e-4}},
                                  "seqjepa": {"model": {"ema_decay": 0.996}}}
    best = chosen["byol"][0]
    assert best.seeds == (0, 1) and best.val_top1 == pytest.approx(55.0) and best.score == pytest.approx(0.75)
    assert [c.score for c in chosen["sie"]] == pytest.approx([0.70, 0.65, 0.40])
    assert len(chosen["seqjepa"]) == 2  # the ablation arm and random init were left out
    top1 = per_method(candidates(load(tmp_path), "top1"))
    assert top1["sie"] == {"model": {"equi_factor": 1.0}, "train": {"lr": 4e-4}}
    assert top1["seqjepa"] == {"model": {"ema_decay": 0.99}}


def test_selection_cli_writes_a_stackable_block(tmp_path, capsys) -> None:
    _grid(tmp_path / "runs")
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "sel")]) == 0
    block = yaml.safe_load((tmp_path / "sel" / "selection.yaml").read_text())
    assert block["per_method"]["byol"] == {"train": {"lr": 2e-3}}
    table = (tmp_path / "sel" / "selection.md").read_text()
    assert "| byol | train.lr=0.002 | 0, 1 | 55.0 | 0.200 | 0.750 | yes |" in table
    # the block resolves as a config layer: byol gets the chosen lr, other methods are untouched
    cfg = resolve(merge(block, {"method": "byol"}))
    assert math.isclose(cfg.train.lr, 2e-3)
    assert resolve(merge(block, {"method": "vicreg"})).train.lr is None


def test_selection_needs_val_metrics(tmp_path) -> None:
    cfg = resolve({"method": "byol", "out": str(tmp_path)})
    write_result(run_dir(cfg), cfg, {"top1": 50.0, "rotation_r2": 0.1}, {})
    with pytest.raises(ConfigError, match="probe.validation_objects > 0"):
        candidates(load(tmp_path))
    with pytest.raises(ConfigError, match="no finished runs"):
        load(tmp_path / "empty")
