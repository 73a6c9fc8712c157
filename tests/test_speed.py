"""The speed benchmark runs on CPU and reports a method/backbone ratio measured in one run."""

from __future__ import annotations

import json

from benchmark.tools.speed import main


def test_speed_benchmark_prints_and_writes_ratio(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert main(["--methods", "seqjepa", "--image-size", "16", "--batch-size", "2", "--steps", "1",
                 "--warmup", "0", "--device", "cpu", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["method"] == "seqjepa" and row["views_per_sample"] == 4
    assert row["train_img_s"] > 0 and row["backbone_img_s"] > 0
    assert abs(row["ratio"] - row["train_img_s"] / row["backbone_img_s"]) < 0.01
    assert "ratio" in capsys.readouterr().out


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["--methods", "nope", "--device", "cpu"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_data_pipeline_cache_and_fast_paths_columns(tmp_path, capsys):
    from tests.conftest import TINY_SETS

    out = tmp_path / "speed.json"
    sets = [a for k, v in {**TINY_SETS, "data.cache_dir": tmp_path / "c"}.items() for a in ("--set", f"{k}={v}")]
    assert main(["--methods", "byol", "--image-size", "16", "--batch-size", "2", "--steps", "2", "--warmup", "0",
                 "--device", "cpu", "--data", "--cache", "--fast", "all", "--json", str(out), *sets]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["fast"] == "bf16+cl+fused" and row["syncs"] is None  # host syncs are counted on CUDA only
    for pipe in ("data", "cache"):
        assert row[f"{pipe}_img_s"] > 0
        assert abs(row[f"{pipe}_x"] - row[f"{pipe}_img_s"] / row["train_img_s"]) < 0.01 * row[f"{pipe}_x"] + 0.01
    assert list((tmp_path / "c").glob("3diebench-train-16px-*/manifest.json"))
    assert "cache_x" in capsys.readouterr().out
