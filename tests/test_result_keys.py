"""Every metric a real run writes is declared in benchmark.core.results.METRIC_KEYS (the source of
docs/protocol.md §9), and every declared pattern matches something: the docs cannot drift from the writer."""

from __future__ import annotations

import json
import re

import pytest

from benchmark.core.results import METRIC_KEYS
from benchmark.core.runner import main
from tests.conftest import tiny_args


def _pattern(key: str) -> re.Pattern:
    parts = re.split(r"<\w+>", key)
    return re.compile("[a-z0-9_]+".join(map(re.escape, parts)) + r"\Z")


PATTERNS = {k: _pattern(k) for k in METRIC_KEYS}


def declared(key: str) -> bool:
    return any(p.match(key) for p in PATTERNS.values())


def test_patterns_known_answers():
    assert declared("rotation_r2") and declared("context_indiv_rotation_r2_per_dim")
    assert declared("health_aggregate_effective_rank") and declared("val_top1")
    assert not declared("Top1") and not declared("rotation-r2")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    runs = [["--method", "seqjepa", "--set", "train.max_steps=2"],
            ["--method", "contextssl", "--set", "train.max_steps=2", "--set", "model.n_embd=32",
             "--set", "model.n_layer=1", "--set", "model.n_head=2", "--set", "model.aux_hidden=16"],
            ["--method", "simclr", "--epochs", "0", "--set", "probe.validation_objects=3"],
            ["--method", "byol", "--dataset", "cifar100-mini", "--image-size", "16", "--set", "train.max_steps=2",
             "--set", "data.image_mini.classes=3", "--set", "data.image_mini.train_per_class=3",
             "--set", "data.image_mini.test_per_class=2"]]
    found = []
    for i, extra in enumerate(runs):
        assert main(tiny_args(out / str(i)) + extra) == 0, extra
        found.append(json.loads(next((out / str(i)).rglob("result.json")).read_text()))
    return found


def test_every_metric_of_real_runs_is_declared(records):
    undeclared = {k for r in records for k in r["metrics"] if not declared(k)}
    assert not undeclared, f"declare these in benchmark/core/results.py METRIC_KEYS: {sorted(undeclared)}"
    for r in records:  # health is on every run, random init included
        assert "collapsed" in r["metrics"] and "collapse_reason" in r["metrics"]


def test_every_declared_key_is_written_by_some_run(records):
    seen = {k for r in records for k in r["metrics"]}
    unused = [k for k, p in PATTERNS.items() if not any(p.match(s) for s in seen)]
    assert not unused, f"declared but written by none of the test runs: {unused}"
