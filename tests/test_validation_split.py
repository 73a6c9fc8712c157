"""The selection split (benchmark/probes/validation.py): carved from the training objects, class-balanced,
deterministic, disjoint from the objects the probes fit on and from the held-out objects; val_* in result.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.registry import dataset_entry
from benchmark.core.runner import main as run_main
from benchmark.infra.errors import ConfigError
from benchmark.probes.validation import carve, split
from tests.conftest import tiny_args
from tests.test_online import _tiny_cfg


def test_carve_known_answer_balanced_and_deterministic() -> None:
    labels = np.random.default_rng(3).permutation(np.repeat([0, 1, 2], [6, 5, 7]))
    fit, val = carve(labels, 7)
    assert np.bincount(labels[val]).tolist() == [3, 2, 2]  # 7 // 3 each, the first class one more
    assert not set(fit) & set(val) and sorted([*fit, *val]) == list(range(len(labels)))
    again_fit, again_val = carve(labels.copy(), 7)
    assert np.array_equal(val, again_val) and np.array_equal(fit, again_fit)
    # a function of the labels only: a larger split of the same labels contains the smaller one
    assert set(val) <= set(carve(labels, 10)[1])


def test_carve_refuses_to_empty_a_class() -> None:
    labels = np.repeat([0, 1], [4, 2])
    with pytest.raises(ConfigError, match="validation_objects=4 leaves a class"):
        carve(labels, 4)  # class 1 would give both of its objects
    with pytest.raises(ConfigError, match="> 0"):
        carve(labels, 0)


def test_split_of_the_mini_training_objects(tmp_path) -> None:
    """On a rendered mini: the validation objects are training objects, apart from the fitting ones and from the
    held-out split, two per class; items and labels are those of the carved objects, also after with_views."""
    cfg = _tiny_cfg(tmp_path, **{"data.mini.objects_per_class": 10})
    entry = dataset_entry(cfg.dataset)
    tr, held = entry.build(cfg, "train", 3, True), entry.build(cfg, "val", 3, True)
    fit_ds, val_ds, record = split(tr, 6)
    fit_names = {tr.objects[i] for i in fit_ds.indices}
    val_names = {tr.objects[i] for i in val_ds.indices}
    assert len(val_names) == 6 and len(fit_names) == len(tr.objects) - 6
    assert not val_names & fit_names and not val_names & set(held.objects) and not fit_names & set(held.objects)
    assert np.bincount(val_ds.labels_of()).tolist() == [2, 2, 2] == list(record["per_class"].values())
    assert record["objects"] == 6 and record["fit_objects"] == len(tr.objects) - 6
    assert val_ds.num_classes == tr.num_classes and val_ds.view_bank == tr.view_bank
    three = val_ds.with_views(3)
    for i in range(len(val_ds.indices)):
        item = three[i]
        assert item["label"] == tr.labels_of()[val_ds.indices[i]] and item["views"].shape[0] == 3
    assert len(three) == 6 and val_ds.with_views(2).indices.tolist() == val_ds.indices.tolist()


def test_val_metrics_in_result_and_held_out_unchanged(tmp_path, capsys) -> None:
    """probe.validation_objects adds val_* and the validation record; the held-out numbers stay bit for bit."""
    sets = {"data.mini.objects_per_class": 6}
    assert run_main([*tiny_args(tmp_path / "off", **sets), "--epochs", "0"]) == 0
    off = json.loads((Path(capsys.readouterr().out.strip().splitlines()[-1]) / "result.json").read_text())
    assert run_main([*tiny_args(tmp_path / "on", **sets, **{"probe.validation_objects": 3}), "--epochs", "0"]) == 0
    on = json.loads((Path(capsys.readouterr().out.strip().splitlines()[-1]) / "result.json").read_text())
    assert {"val_top1", "val_knn_top1", "val_rotation_r2", "val_indiv_rotation_r2"} <= set(on["metrics"])
    assert on["metrics"]["validation"]["objects"] == 3 and on["metrics"]["validation"]["fit_objects"] == 12
    held_out = {k: v for k, v in on["metrics"].items() if not k.startswith("val_") and k != "validation"}
    assert held_out == off["metrics"]
    assert not any(k.startswith("val_") for k in off["metrics"])
    assert on["config"]["probe"]["validation_objects"] == 3


def test_negative_validation_objects_is_refused_with_its_source():
    from benchmark.core.resolve import resolve
    from benchmark.infra.errors import ConfigError

    with pytest.raises(ConfigError, match=r"probe.validation_objects must be >= 0 .*got -3"):
        resolve({"dataset": "3diebench-mini", "probe": {"validation_objects": -3}})
