"""End to end through the CLI for the invariant baselines, Cond-BYOL, VICReg-Traj and the "+tx" variants:
a few steps on the tiny 3diebench-mini write a result with finite top-1, rotation R^2 and colour R^2."""

from __future__ import annotations

import json
import math

import pytest

from benchmark.core.runner import main
from tests.conftest import tiny_args

ENCODER_ONLY = {"top1": "encoder", "rotation_r2": "encoder", "color_r2": "encoder"}
AGGREGATE_TOP1 = {"top1": "aggregate", "rotation_r2": "encoder", "color_r2": "encoder"}


@pytest.mark.parametrize("name,sets,sources", [
    ("simclr", {}, ENCODER_ONLY),
    ("byol", {}, ENCODER_ONLY),
    ("vicreg", {}, ENCODER_ONLY),
    ("cond-byol", {}, ENCODER_ONLY),
    ("vicreg-traj", {}, ENCODER_ONLY),
    ("simclr+tx", {"model.act_cond": "true"}, AGGREGATE_TOP1),  # seq_len 3 -> 6 views, as many as tiny has
    ("byol+tx", {"data.seq_len": 2}, AGGREGATE_TOP1),
    ("vicreg+tx", {"data.seq_len": 2}, AGGREGATE_TOP1),
])
def test_cli_run_writes_result(tmp_path, name, sets, sources):
    assert main(tiny_args(tmp_path, **{"train.max_steps": 2, **sets}) + ["--method", name]) == 0
    (path,) = tmp_path.rglob("result.json")
    r = json.loads(path.read_text())
    m = r["metrics"]
    for k in ("top1", "rotation_r2", "color_r2"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
        assert m["headline_source"][k] == sources[k]
    assert r["provenance"]["train_steps"] > 0 and math.isfinite(m["train_loss_final"])
    if "aggregate" in sources.values():
        assert set(m["per_representation"]) == {"encoder", "aggregate"}
        assert m["top1_by_eval_len"][str(r["eval_seq_len"])] == m["top1"]
