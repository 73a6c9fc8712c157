"""End to end through the CLI: a tiny run, idempotence, --epochs 0, and one-paragraph errors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import RunConfig, TrainConfig
from benchmark.core.runner import main
from benchmark.data import mini3d, preflight
from benchmark.infra.errors import ConfigError
from tests.conftest import tiny_args
from tests.test_threedie import write_official_tree

REQUIRED = {"schema_version", "method", "dataset", "seq_len", "eval_seq_len", "seed", "status", "config", "metrics",
            "provenance"}


def results(out: Path) -> list[Path]:
    return sorted(out.rglob("result.json"))


def test_tiny_run_writes_a_complete_result_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(tiny_args(out, **{"probe.eval_seq_lens": "[1,2]"})) == 0
    (path,) = results(out)
    r = json.loads(path.read_text())
    assert REQUIRED <= set(r) and r["schema_version"] == 1 and r["status"] == "complete"
    m = r["metrics"]
    for k in ("top1", "rotation_r2", "color_r2", "rotation_r2_global", "color_r2_global", "indiv_rotation_r2"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert 0 <= m["top1"] <= 100
    assert m["headline_source"] == {"top1": "aggregate", "rotation_r2": "encoder", "color_r2": "encoder",
                                    "indiv_rotation_r2": "encoder", "knn_top1": "aggregate"}
    assert 0 <= m["knn_top1"] <= 100
    assert set(m["top1_by_eval_len"]) == {"1", "2", "3"} and m["top1_by_eval_len"]["3"] == m["top1"]
    assert "top1" in m["per_representation"]["encoder"]
    assert r["config"]["model"]["act_cond"] is True and r["config"]["data"]["mini"]["classes"] == 3
    prov = r["provenance"]
    assert {"git_commit", "git_dirty", "torch", "device", "wall_time_s", "start_time", "end_time"} <= set(prov)
    assert prov["train_steps"] == prov["train_total_steps"] > 0
    assert "not comparable" in prov["dataset_note"]
    assert (path.parent / "config.yaml").is_file() and (path.parent / "checkpoint.pt").is_file()
    log = [json.loads(ln) for ln in (path.parent / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == prov["train_steps"] and math.isfinite(log[-1]["loss"])
    printed = capsys.readouterr().out
    assert str(path.parent) in printed
    before = path.read_text()
    assert main(tiny_args(out, **{"probe.eval_seq_lens": "[1,2]"})) == 0
    assert "already finished" in capsys.readouterr().out and path.read_text() == before
    assert main(tiny_args(out, **{"probe.eval_seq_lens": "[1,2]"}) + ["--force"]) == 0
    assert json.loads(path.read_text())["provenance"]["start_time"] >= r["provenance"]["start_time"]


def test_epochs_zero_evaluates_random_init(tmp_path):
    assert main(tiny_args(tmp_path) + ["--epochs", "0", "--set", "model.act_cond=false"]) == 0
    (path,) = results(tmp_path)
    r = json.loads(path.read_text())
    assert r["provenance"]["train_steps"] == 0 and r["metrics"]["train_loss_final"] is None
    assert not (path.parent / "checkpoint.pt").exists()
    assert r["config"]["model"]["act_cond"] is False


def test_real_3diebench_loader_through_the_cli(tmp_path):
    root = write_official_tree(tmp_path / "3DIEBench", objects_per_class=4, views=5)
    args = ["--dataset", "3diebench", "--data-root", str(tmp_path), "--image-size", "32", "--batch-size", "4",
            "--epochs", "1", "--out", str(tmp_path / "runs"), "--set", "train.progress=false",
            "--set", "data.num_workers=0", "--set", "probe.epochs=1", "--set", "probe.train_samples=1",
            "--set", "probe.val_samples=1", "--set", "train.warmup_epochs=0"]
    assert main(args) == 0
    (path,) = results(tmp_path / "runs")
    assert json.loads(path.read_text())["dataset"] == "3diebench"
    assert root.is_dir()


@pytest.mark.parametrize("extra,message", [
    (["--method", "jepa"], "unknown method 'jepa'; valid methods:"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; valid datasets:"),
    (["--seq-len", "0"], "must be >= 1"),
    (["--set", "train.epochz=3"], "unknown key train.epochz in --set train.epochz=3; did you mean train.epochs?"),
    (["--set", "train.epochs=many"], "train.epochs: expected an integer, got 'many' (in --set train.epochs=many)"),
    (["--set", "train.lr=1e-3x"], "train.lr: expected a number or null, got '1e-3x' (in --set train.lr=1e-3x)"),
    (["--set", "data.mini.classes=99"], "data.mini.classes must be 1..10"),
    (["--batch-size", "1000"], "larger than the"),
    (["--config", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
])
def test_bad_input_is_one_paragraph_without_traceback_or_result(tmp_path, capsys, extra, message):
    assert main(tiny_args(tmp_path) + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert results(tmp_path) == []


def test_missing_or_malformed_3diebench_root(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEQBENCH_DATA_ROOT", raising=False)
    base = ["--dataset", "3diebench", "--out", str(tmp_path / "runs"), "--set", "train.progress=false"]
    assert main(base) == 2
    assert "no 3DIEBench root given" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(base + ["--data-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "split files train_images.npy, train_labels.npy not found" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_corrupt_image_is_named_and_leaves_no_result(tmp_path, capsys):
    root = write_official_tree(tmp_path / "3DIEBench", objects_per_class=4, views=5)
    train_objs = np.load(root / "train_images.npy")
    for o in train_objs:
        for k in range(5):
            (root / o.strip("/") / f"image_{k}.jpg").write_bytes(b"\x00garbage")
    args = ["--dataset", "3diebench", "--data-root", str(root), "--image-size", "32", "--batch-size", "4",
            "--epochs", "1", "--out", str(tmp_path / "runs"), "--set", "train.progress=false",
            "--set", "data.num_workers=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "corrupt image" in err and "image_" in err and "Traceback" not in err
    assert results(tmp_path / "runs") == []


def test_yaml_1_2_floats_from_set_and_config_files(tmp_path, capsys):
    f = tmp_path / "lr.yaml"
    f.write_text("train:\n  lr: 5e-4\nprobe:\n  lr: 1e-3\n")
    assert main(["--config", str(f), "--set", "train.weight_decay=1e-3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "  lr: 0.0005\n" in out and "  weight_decay: 0.001\n" in out and "  lr: 0.001\n" in out
    assert main(["--set", "train.lr=1e-3", "--print-config"]) == 0
    assert "  lr: 0.001\n" in capsys.readouterr().out
    f.write_text("train:\n  leraning_rate: 1e-3\n")
    assert main(["--config", str(f), "--print-config"]) == 2
    assert f"error: unknown key train.leraning_rate in {f}; did you mean train.lr?" in capsys.readouterr().err


@pytest.fixture
def no_rendering(tmp_path, monkeypatch):
    """A fresh empty SEQBENCH_CACHE, and a mini generator that fails the test if anything calls it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SEQBENCH_CACHE", str(cache))

    def generate(*args, **kwargs):
        raise AssertionError("the mini dataset was rendered before the config was validated")

    monkeypatch.setattr(mini3d, "generate", generate)
    return cache


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "1000"], "train.batch_size (in --batch-size) = 1000 is larger than the 12 training samples of "
                               "3diebench-mini (data.mini: 3 classes x 4 training objects, 6 views each)"),
    (["--seq-len", "6"], "seqjepa at data.seq_len (in --seq-len) = 6 needs 7 views per training sample but "
                         "3diebench-mini has 6 per object"),
    (["--set", "probe.eval_seq_lens=[1,8]"], "probe.eval_seq_lens[1] (in --set probe.eval_seq_lens=[1,8]) = 8 "
                                             "needs 8 views per object for the probes but 3diebench-mini has 6"),
])
def test_impossible_settings_fail_before_rendering_or_any_run_directory(tmp_path, capsys, no_rendering, extra,
                                                                        message):
    out = tmp_path / "runs"
    t0 = time.perf_counter()
    assert main(tiny_args(out) + extra) == 2
    assert time.perf_counter() - t0 < 60  # no rendering, no training: imports only (a loaded CI machine)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Nothing was rendered or written" in err
    assert not out.exists() and list(no_rendering.iterdir()) == []


def test_batch_size_is_checked_against_the_data_parallel_world_size():
    sizes = preflight.DataSizes(train=100, views=12, what="a test")
    preflight.check(RunConfig(train=TrainConfig(batch_size=8)), sizes, views_needed=4, world_size=4)
    with pytest.raises(ConfigError, match="train.batch_size = 10 does not split over 4 data-parallel processes"):
        preflight.check(RunConfig(train=TrainConfig(batch_size=10)), sizes, views_needed=4, world_size=4)
    # no pre-training, no batch: only the probes' view counts matter
    preflight.check(RunConfig(train=TrainConfig(batch_size=1000, epochs=0)), sizes, views_needed=40)
