"""The CPU pattern regime: per-method blocks in config files, benchmark/configs/pattern.yaml and the
``pattern`` sweep."""

from __future__ import annotations

import pytest

from benchmark.core.resolve import resolve
from benchmark.infra.errors import ConfigError


def test_per_method_block_applies_to_its_method_only() -> None:
    user = {"per_method": {"seqjepa": {"model": {"ema_decay": 0.9}, "train": {"lr": 1e-3}}}}
    assert resolve({**user, "method": "seqjepa"}).model["ema_decay"] == 0.9
    assert resolve({**user, "method": "seqjepa"}).train.lr == 1e-3
    simclr = resolve({**user, "method": "simclr"})
    assert "ema_decay" not in simclr.model and simclr.train.lr is None
    # anything set directly wins over the block
    assert resolve({**user, "method": "seqjepa", "model": {"ema_decay": 0.5}}).model["ema_decay"] == 0.5


def test_per_method_block_errors() -> None:
    with pytest.raises(ConfigError, match="unknown method 'seqjpa'"):
        resolve({"per_method": {"seqjpa": {"model": {}}}})
    with pytest.raises(ConfigError, match="per_method must map method names"):
        resolve({"per_method": {"seqjepa": 3}})
    with pytest.raises(ConfigError, match="ema_decy"):
        resolve({"per_method": {"seqjepa": {"model": {"ema_decy": 0.9}}}})


def _fake_run(out, method: str, seed: int, metrics: dict, **sets) -> None:
    """A finished pattern run with the given headline metrics (written by the real result writer)."""
    import torch

    from benchmark.config import run_dir
    from benchmark.core.results import provenance, write_result
    from benchmark.core.sweeps import SWEEPS

    idx = next(i for i, r in enumerate(SWEEPS["pattern"].runs) if r["method"] == method and r["seed"] == seed
               and all(r.get(k) == v for k, v in sets.items())
               and (sets or (r.get("model.act_cond", True) and r.get("train.epochs", 1) != 0)))
    cfg = SWEEPS["pattern"].config(idx, {"out": str(out)})
    d = run_dir(cfg)
    d.mkdir(parents=True)
    full = {"top1": 20.0, "rotation_r2": 0.0, "color_r2": 0.0, "indiv_rotation_r2": 0.0, "images_per_s": 100.0,
            **metrics}
    write_result(d, cfg, full, provenance(torch.device("cpu"), "t", 1.0))


def test_pattern_report(tmp_path) -> None:
    from benchmark.studies import pattern

    for seed, (rot, init_rot) in enumerate([(0.30, 0.01), (0.20, 0.02)]):
        _fake_run(tmp_path, "seqjepa", seed, {"rotation_r2": rot, "top1": 40.0 + seed})
        _fake_run(tmp_path, "seqjepa", seed, {"rotation_r2": init_rot, "top1": 30.0}, **{"train.epochs": 0})
        _fake_run(tmp_path, "seqjepa", seed, {"rotation_r2": 0.05}, **{"model.act_cond": False})
        _fake_run(tmp_path, "sie", seed, {"rotation_r2": 0.12})
        _fake_run(tmp_path, "vicreg", seed, {"rotation_r2": 0.10 - 0.05 * seed})
    doc = tmp_path / "pattern.md"
    doc.write_text("# Pattern\n\nprose before\n\n<!-- pattern:start -->\nOLD-BLOCK\n<!-- pattern:end -->\n\n"
                   "prose after\n")
    block = pattern.report(tmp_path / "pattern", doc, tmp_path / "pattern.png")
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "OLD-BLOCK" not in text
    assert (tmp_path / "pattern.png").stat().st_size > 10_000
    rows = {line.split("|")[1].strip(): line for line in block.splitlines() if line.startswith("| ")}
    assert "0.250 ± 0.071" in rows["seq-JEPA"] and "40.5 ± 0.7" in rows["seq-JEPA"]
    assert rows["seq-JEPA"].rstrip(" |").endswith("0.71")  # Table 1, M_tr = M_val = 3
    assert rows["seq-JEPA without actions"].rstrip(" |").endswith("0.29")
    assert rows["SIE"].rstrip(" |").endswith("0.58") and rows["VICReg"].rstrip(" |").endswith("0.20")
    crit = {line.split("|")[1].strip(): line for line in block.splitlines() if "(>=" in line}
    assert "seed 0: +0.290, seed 1: +0.180" in crit["seq-JEPA rotation R² above random init (>= 0.15)"]
    assert crit["seq-JEPA rotation R² above random init (>= 0.15)"].rstrip(" |").endswith("yes")
    assert crit["seq-JEPA rotation R² above seq-JEPA without actions (>= 0.1)"].rstrip(" |").endswith("yes")
    # SIE - VICReg: +0.02 (seed 0), +0.07 (seed 1): fails for one seed
    assert crit["SIE rotation R² above VICReg (>= 0.05)"].rstrip(" |").endswith("NO")
    assert crit["seq-JEPA top-1 above random init (>= 5)"].rstrip(" |").endswith("yes")
    # Rank agreement with Table 1 over the 4 rows with a published value (d = 0, -1, 0, 1; 5 of 6 pairs concordant)
    assert "| rot. R² | 4 | 0 | 0.80 | 0.67 |" in block and "### Agreement with the paper's Table 1" in block
    assert "(collapsed" not in block and "not compared:" not in block  # no health figures: never "collapsed"


def _health(rank: float, collapsed: bool) -> dict:
    reason = f"encoder: effective rank {rank:.2f} < 4.2 (0.6 x (min(8 classes, 128 dims) - 1))" if collapsed else ""
    return {"headline_source": {"top1": "encoder", "rotation_r2": "encoder"}, "health_encoder_effective_rank": rank,
            "health_encoder_std": 0.05, "collapsed": collapsed, "collapse_reason": reason}


def test_pattern_marks_collapsed_runs_and_does_not_compare_them(tmp_path) -> None:
    """SIE collapsed on seed 1 only: its row says so, and "SIE above VICReg" is not decided (it would read yes)."""
    from benchmark.studies import pattern

    for seed in (0, 1):
        _fake_run(tmp_path, "sie", seed, {"rotation_r2": 0.30, **_health(2.6 + seed, collapsed=seed == 1)})
        _fake_run(tmp_path, "vicreg", seed, {"rotation_r2": 0.10, **_health(8.0, collapsed=False)})
        _fake_run(tmp_path, "seqjepa", seed, {"rotation_r2": 0.30, "top1": 50.0})
        _fake_run(tmp_path, "seqjepa", seed, {"rotation_r2": 0.01, "top1": 20.0}, **{"train.epochs": 0})
    block = pattern.report(tmp_path / "pattern", tmp_path / "p.md", tmp_path / "p.png")
    rows = {line.split("|")[1].strip(): line.split("|") for line in block.splitlines() if line.startswith("| ")}
    assert "SIE **(collapsed: seed 1)**" in rows and "VICReg" in rows
    assert rows["VICReg"][8].strip() == "8.0 ± 0.0" and rows["SIE **(collapsed: seed 1)**"][8].strip() == "3.1 ± 0.7"
    assert rows["seq-JEPA"][8].strip() == "—"  # no health figures in these results
    crit = {line.split("|")[1].strip(): line for line in block.splitlines() if "(>=" in line}
    sie = crit["SIE rotation R² above VICReg (>= 0.05)"]
    assert "seed 0: +0.200, seed 1: +0.200" in sie and sie.rstrip(" |").endswith("not compared: SIE collapsed (seed 1)")
    assert crit["seq-JEPA top-1 above random init (>= 5)"].rstrip(" |").endswith("yes")
    runs = pattern.load(tmp_path / "pattern")
    assert pattern.collapsed_seeds(runs, "sie") == [1] and pattern.collapsed_seeds(runs, "vicreg") == []


def test_pattern_report_without_runs(tmp_path, capsys) -> None:
    from benchmark.studies import pattern

    assert pattern.main(["--runs", str(tmp_path), "--doc", str(tmp_path / "p.md")]) == 2
    assert "run the sweep first" in capsys.readouterr().err
