"""Sweeps: deterministic indexable run lists, the named sweeps' contents, YAML sweeps and their errors."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmark.config import run_dir
from benchmark.core import sweeps
from benchmark.core.registry import METHODS
from benchmark.core.sweeps import axis, chain, fixed, product, replicates, zipped
from benchmark.infra.errors import ConfigError

OUT = {"out": "/tmp/seqbench-sweep-test"}


def test_combinators_order_and_shapes():
    runs = product(axis("a", [1, 2]), axis("b", ["x", "y", "z"]))
    assert runs == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                    {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]  # first axis varies slowest
    assert zipped(axis("a", [1, 2]), axis("b", [3, 4])) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert chain(axis("a", [1]), fixed({"b": 2})) == [{"a": 1}, {"b": 2}]
    assert product(fixed({"a": 1, "b": 1}), axis("b", [2])) == [{"a": 1, "b": 2}]  # later part wins
    assert replicates(3) == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    with pytest.raises(ConfigError, match="equal length"):
        zipped(axis("a", [1, 2]), axis("b", [1]))


@pytest.mark.parametrize("name", ["paper-3diebench", "seqlen-ablation", "action-ablation", "smoke"])
def test_named_sweeps_resolve_to_distinct_runs_deterministically(name):
    sweep = sweeps.load(name)
    cfgs = sweep.configs(OUT)
    dirs = [run_dir(c) for c in cfgs]
    assert len(set(dirs)) == len(dirs) == len(sweep) > 0
    assert all(c.sweep == name and str(d).startswith(f"{OUT['out']}/{name}/") for c, d in zip(cfgs, dirs, strict=True))
    again = sweeps.SWEEPS[name].configs(OUT)
    assert [run_dir(c) for c in again] == dirs  # same index -> same run, every time
    assert sweep.config(len(sweep) - 1, OUT) == cfgs[-1]


def test_paper_sweep_covers_every_3diebench_method_with_paired_seeds():
    sweep = sweeps.load("paper-3diebench")
    cfgs = sweep.configs(OUT)
    assert {c.dataset for c in cfgs} == {"3diebench"}
    assert {c.train.epochs for c in cfgs} == {1000} and {c.train.batch_size for c in cfgs} == {512}
    assert {c.data.image_size for c in cfgs} == {128}
    # every Table-1 method, i.e. every registered method except the +tx controls and the PLS-only conv-ijepa
    table1 = set(METHODS) - set(sweeps.TX_BASELINES) - {"conv-ijepa"}
    assert {c.method for c in cfgs} == table1
    seeds_by_setting = Counter((c.method, c.data.seq_len, c.model.get("act_cond")) for c in cfgs)
    assert set(seeds_by_setting.values()) == {3}
    for c in cfgs:
        assert c.seed in (0, 1, 2)
    seqjepa = {(c.data.seq_len, c.model["act_cond"]) for c in cfgs if c.method == "seqjepa"}
    assert seqjepa == {(1, True), (3, True), (3, False)}
    assert all(c.probe.eval_seq_lens == (1, 3, 5) for c in cfgs if c.method == "seqjepa")
    assert all(c.data.seq_len == 1 for c in cfgs if c.method in sweeps.PAIR_BASELINES)


def test_ablation_sweeps():
    seqlen = sweeps.load("seqlen-ablation").configs(OUT)
    assert {(c.method, c.data.seq_len) for c in seqlen} == {
        (m, L) for m in ("seqjepa", *sweeps.TX_BASELINES) for L in (1, 2, 3, 4, 5)}
    assert all(c.probe.eval_seq_lens == tuple(range(1, 9)) for c in seqlen)
    action = sweeps.load("action-ablation").configs(OUT)
    assert Counter(c.model["act_cond"] for c in action) == {True: 3, False: 3}
    assert {c.method for c in action} == {"seqjepa"} and {c.data.seq_len for c in action} == {3}


def test_smoke_sweep_is_tiny():
    cfgs = sweeps.load("smoke").configs(OUT)
    assert len(cfgs) == 2 and {c.dataset for c in cfgs} == {"3diebench-mini"}
    for c in cfgs:
        assert c.data.image_size <= 32 and c.train.batch_size <= 4 and c.probe.epochs <= 2
        assert c.data.mini.classes * c.data.mini.objects_per_class <= 15
        assert c.train.progress is False and c.train.log_every == 1


def test_yaml_sweep(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("""
name: mine
description: two methods over two lengths, zipped with their eval lengths
seeds: [7, 8]
fixed:
  dataset: 3diebench-mini
  train: {epochs: 2}
  data.image_size: 32
runs:
  chain:
    - product:
        method: [seqjepa, byol+tx]
        zip:
          - data.seq_len: [1, 2]
          - probe.eval_seq_len: [1, 3]
    - {method: byol, data.seq_len: 1}
""")
    sweep = sweeps.load(str(f))
    assert sweep.name == "mine" and len(sweep) == 2 * (2 * 2 + 1)
    assert sweep[0] == {"seed": 7, "dataset": "3diebench-mini", "train.epochs": 2, "data.image_size": 32,
                        "method": "seqjepa", "data.seq_len": 1, "probe.eval_seq_len": 1}
    assert sweep[3]["method"] == "byol+tx" and sweep[3]["data.seq_len"] == 2 and sweep[3]["probe.eval_seq_len"] == 3
    assert sweep[4] == {"seed": 7, "dataset": "3diebench-mini", "train.epochs": 2, "data.image_size": 32,
                        "method": "byol", "data.seq_len": 1}
    assert [r["seed"] for r in sweep.runs] == [7] * 5 + [8] * 5
    cfgs = sweep.configs(OUT)
    assert cfgs[0].train.epochs == 2 and cfgs[0].data.image_size == 32 and cfgs[0].sweep == "mine"
    assert sweep.varying_keys() == ["seed", "method", "data.seq_len", "probe.eval_seq_len"]


@pytest.mark.parametrize("body, message", [
    ("runs: {method: [seqjepa, nosuch]}", "run 1 (method=nosuch): unknown method 'nosuch'"),
    ("runs: {data.seq_len: [1, 0]}", "run 1 (data.seq_len=0): data.seq_len"),
    ("runs: {train.epochs: [1, two]}", "run 1 (train.epochs=two): train.epochs: expected an integer"),
    ("runs: {model.nosuch: [1]}", "unknown key model.nosuch in sweep file"),
    ("runs: {method: []}", "empty list of values"),
    ("runs: {zip: [{a: [1, 2]}, {b: [1]}]}", "equal length"),
    ("runs: {data: {seq_len: [1, 2]}}", "write nested keys dotted"),
    ("runs: [1, 2]", "expected a mapping"),
    ("seeds: 0", "seeds must be a count"),
    ("colour: red", "unknown key colour in sweep file"),
    ("name: 'a/b'", "must be letters"),
    ("runs: {train.epochs: [1, 1]}", "same run directory"),
])
def test_bad_yaml_sweeps_fail_with_a_clear_message(tmp_path, body, message):
    f = tmp_path / "bad.yaml"
    f.write_text("fixed: {dataset: 3diebench-mini}\n" + body + "\n")
    with pytest.raises(ConfigError) as e:
        sweeps.load(str(f)).configs(OUT)
    assert message in str(e.value)


def test_unknown_sweep_lists_the_named_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown sweep 'nosuch'; named sweeps: paper-3diebench"):
        sweeps.load("nosuch")
    with pytest.raises(ConfigError, match="does not exist"):
        sweeps.load(str(tmp_path / "missing.yaml"))
