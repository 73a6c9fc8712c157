"""benchmark/core/divergence.py: NaN/inf in the loss or in the weights and buffers, and what each records."""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmark.core.divergence import DivergenceWatch, nonfinite


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def test_loss_check_records_the_step_whose_update_is_not_applied():
    watch = DivergenceWatch()
    assert watch.check_loss(4, torch.tensor(1.5)) == 1.5 and watch.record is None
    assert watch.check_loss(5, torch.tensor(math.inf)) is None
    assert watch.record["step"] == 6 and watch.record["what"] == "loss"
    assert "inf" in watch.record["detail"] and "step 6 was not applied" in watch.record["detail"]
    assert watch.keeps_last_state  # the weights are still those of step 5


def test_state_check_names_parameters_and_buffers_and_keeps_the_first_record():
    m = net()
    assert nonfinite(m) == []
    watch = DivergenceWatch()
    assert watch.check_state(3, m)
    with torch.no_grad():
        m[0].weight[1, 0] = math.nan
    m[1].running_var.fill_(math.inf)  # a buffer (BN statistics, EMA targets) counts too
    assert nonfinite(m) == ["0.weight", "1.running_var"]
    assert not watch.check_state(7, m)
    assert watch.record == {"step": 7, "what": "parameters", "detail": "NaN/inf in 0.weight, 1.running_var"}
    assert not watch.keeps_last_state
    assert not watch.check_state(9, m) and watch.record["step"] == 7  # the first divergence is the one kept
