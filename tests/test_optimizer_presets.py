"""The optimiser presets reproduce what their sources run: ``upstream-code`` is a transcription of the
learning-rate handling of hafezgh/seq-jepa ``main_transformed_views.py`` (training branch)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from benchmark.config import RunConfig, TrainConfig
from benchmark.core.train import build_optimizer
from methods.components import warmup_cosine
from methods.contract import DataSpec
from methods.seqjepa import SeqJEPA, SeqJEPAConfig

EPOCHS, WARMUP, LR, INIT_LR = 30, 5, 4e-4, 1e-5


def upstream_lrs() -> list[float]:
    """The lr each epoch trains with, as main_transformed_views.py computes it with the released script's
    flags (--lr 4e-4 --initial-lr 1e-5 --warmup N --scheduler): Adam(lr=1e-3, wd=0) (line 237), a
    CosineAnnealingLR on it (line 260), the warm-up block at the top of every epoch (lines 300-308) and
    the scheduler stepped after every post-warm-up epoch (lines 318-322)."""
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([p], lr=0.001, weight_decay=0.0)
    lr_scheduler = CosineAnnealingLR(optimizer, T_max=EPOCHS, eta_min=INIT_LR)
    seen = []
    for epoch in range(EPOCHS):
        if epoch < WARMUP:
            lr = INIT_LR + (LR - INIT_LR) * (epoch / WARMUP)
            for g in optimizer.param_groups:
                g["lr"] = lr
        else:
            for g in optimizer.param_groups:
                g["lr"] = LR
        seen.append(optimizer.param_groups[0]["lr"])  # the epoch's training steps use this
        if not (WARMUP and epoch < WARMUP):
            lr_scheduler.step()
    return seen


def test_upstream_code_preset_matches_the_released_loop() -> None:
    method = SeqJEPA(SeqJEPAConfig(backbone="resnet18-w16"), DataSpec(32, 4, 3))
    cfg = RunConfig(train=TrainConfig(optimizer_preset="upstream-code", epochs=EPOCHS, warmup_epochs=WARMUP))
    opt, preset = build_optimizer(method, cfg)
    assert type(opt) is torch.optim.Adam
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    steps_per_epoch = 7
    total, warmup = EPOCHS * steps_per_epoch, WARMUP * steps_per_epoch
    ours = [warmup_cosine(e * steps_per_epoch, total, warmup, preset["lr"], INIT_LR,
                          INIT_LR if preset["cosine"] else preset["lr"]) for e in range(EPOCHS)]
    assert ours == pytest.approx(upstream_lrs(), rel=1e-9)  # epoch starts coincide; we also ramp within epochs
    assert upstream_lrs()[-1] == LR  # constant after the warm-up: no cosine, not the constructor's 1e-3


def test_paper_preset() -> None:
    method = SeqJEPA(SeqJEPAConfig(backbone="resnet18-w16"), DataSpec(32, 4, 3))
    opt, preset = build_optimizer(method, RunConfig())
    assert type(opt) is torch.optim.AdamW and preset["lr"] == 4e-4 and preset["cosine"]
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 1e-3]
