"""Plugins describe themselves: a dataset (one module exporting ``ENTRY``) and a method (one class declaring its
``family`` and ``label``), each registered with one registry line, go through a real run, a launched sweep and
the aggregated tables with nothing else edited. The plugins are tests/fixtures/toy_plugins/ only."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import registry, sweeps
from benchmark.core.resolve import resolve
from benchmark.core.runner import run_one
from benchmark.data.entry import TABLES, DatasetEntry
from benchmark.infra.errors import ConfigError
from benchmark.reporting.aggregate import aggregate
from slurm import launch
from tests.fixtures.toy_plugins import toy_dataset, toy_method

ROOT = Path(__file__).resolve().parent.parent
TOY_DATASET, TOY_METHOD = "toy-shifts", "toy-linear"


@pytest.fixture
def toys(monkeypatch):
    """One registry line per plugin (the literal dicts behind the lazy registries)."""
    monkeypatch.setitem(registry.DATASETS.loaders, TOY_DATASET, lambda: toy_dataset.ENTRY)
    monkeypatch.setitem(registry.METHODS.loaders, TOY_METHOD, lambda: toy_method.ToyLinear)


def _metrics_are_real(result: dict) -> None:
    m = result["metrics"]
    assert result["status"] == "complete"
    for k in ("top1", "knn_top1", "position_r2"):
        assert math.isfinite(m[k]), (k, m[k])
    assert 0 <= m["top1"] <= 100 and 0 <= m["knn_top1"] <= 100
    assert m["headline_source"]["top1"] == "encoder"
    assert result["provenance"]["train_steps"] == 2 * (24 // 8)  # the toy preset: 2 epochs of 24 objects / 8


def test_a_registered_toy_dataset_and_method_run(toys, tmp_path):
    cfg = resolve({"dataset": TOY_DATASET, "method": TOY_METHOD, "out": str(tmp_path)})
    # the dataset's own preset and the method's own Config were applied
    assert (cfg.data.image_size, cfg.train.epochs, cfg.train.batch_size) == (8, 2, 8)
    assert cfg.model == {"dim": 16}
    outcome = run_one(cfg, log=lambda msg: None)
    assert outcome.status == "complete"
    result = json.loads((outcome.run_dir / "result.json").read_text())
    _metrics_are_real(result)
    assert (result["method"], result["dataset"]) == (TOY_METHOD, TOY_DATASET)
    assert run_one(cfg, log=lambda msg: None).status == "skipped"  # the same config names the same run


def test_unknown_names_list_the_registered_plugins(toys):
    with pytest.raises(ConfigError, match=r"unknown dataset 'nosuch'; valid datasets: .*3diebench.*toy-shifts"):
        resolve({"dataset": "nosuch"})
    with pytest.raises(ConfigError, match=r"unknown method 'nosuch'; valid methods: .*toy-linear"):
        resolve({"method": "nosuch", "dataset": TOY_DATASET})
    with pytest.raises(ConfigError, match="model.width"):  # the toy's Config rejects unknown keys like any method's
        resolve({"method": TOY_METHOD, "dataset": TOY_DATASET, "model": {"width": 3}})


def test_a_toy_sweep_launches_and_aggregates_into_a_table_row(toys, tmp_path, monkeypatch, capsys):
    runs = sweeps.product(sweeps.replicates(2), sweeps.fixed({"dataset": TOY_DATASET, "method": TOY_METHOD}))
    monkeypatch.setitem(sweeps.SWEEPS, "toy", sweeps.Sweep("toy", "the toy plugins, 2 seeds", tuple(runs)))
    out = tmp_path / "runs"
    assert launch.main(["--sweep", "toy", "--out", str(out), "--executor", "debug"]) == 0
    assert "run 0: complete" in capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in sorted(out.rglob("result.json"))]
    assert [r["seed"] for r in results] == [0, 1] and {r["config"]["sweep"] for r in results} == {"toy"}
    for r in results:
        _metrics_are_real(r)

    agg = tmp_path / "aggregated"
    aggregate(out, agg, plots=False, paper_path=None)
    with (agg / "tables" / f"{TOY_DATASET}.csv").open() as f:
        rows = list(csv.DictReader(f))
    # The tables name a method by its class's label once they read it (benchmark/reporting/tables.py), by its registry
    # name before: either way exactly one row, the mean of the two seeds.
    (row,) = [r for r in rows if r["method"] in (toy_method.ToyLinear.label, TOY_METHOD)]
    assert float(row["top1_n"]) == 2
    assert float(row["top1"]) == pytest.approx(sum(r["metrics"]["top1"] for r in results) / 2, rel=1e-5)
    assert float(row["position_r2"]) == pytest.approx(sum(r["metrics"]["position_r2"] for r in results) / 2, rel=1e-5)


def test_every_registered_dataset_describes_itself_without_torch():
    """Each built-in entry: a known table, a preset, a description, callables; looked up with no torch import."""
    code = ("import sys; from benchmark.core.registry import DATASETS\n"
            "entries = {n: DATASETS[n] for n in DATASETS}\n"
            "print('torch' in sys.modules, sorted({e.table for e in entries.values()}), "
            "sorted(n for n, e in entries.items() if e.check is None))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(" ", 1)[0] == "False"
    assert res.stdout.split(" ", 1)[1].strip() == (
        f"{sorted(TABLES)} ['3diebench-mini', 'cifar100-mini', 'stl10-mini', 'stl10-saccades-mini', "
        "'tinyimagenet-mini']")  # only the generated datasets need no data check
    for name in registry.DATASETS:
        e = registry.DATASETS[name]
        assert isinstance(e, DatasetEntry) and e.description and e.defaults["data"]["image_size"] > 0
        assert callable(e.build) and callable(e.spec) and callable(e.sizes)
    with pytest.raises(ValueError, match="table must be one of 3diebench, image"):
        DatasetEntry(build=toy_dataset.build, spec=toy_dataset.spec, table="other")
