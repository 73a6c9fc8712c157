"""The speed benchmark runs on CPU and reports a method/backbone ratio measured in one run."""

from __future__ import annotations

import json

from benchmark.speed import main


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
