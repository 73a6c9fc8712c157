"""Probe metrics: top-1 and the two R^2 definitions (docs/protocol.md §5 and Decision 2)."""

from __future__ import annotations

import torch
from torch import Tensor


def top1(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(dim=1) == labels).float().mean() * 100)


def r2_uniform(pred: Tensor, target: Tensor) -> float:
    """sklearn ``r2_score`` (multioutput="uniform_average"): mean over dimensions of per-dimension R^2.

    The paper's definition. A constant target dimension scores 1 if predicted exactly, else 0
    (sklearn's ``force_finite``).
    """
    pred, target = pred.double(), target.double()
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    per_dim = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp(min=1e-300),
                          (ss_res == 0).double())
    return float(per_dim.mean())


def r2_global(pred: Tensor, target: Tensor) -> float:
    """1 - SS_res / SS_tot with one scalar mean over all entries (SIE / ContextSSL's definition)."""
    pred, target = pred.double(), target.double()
    ss_tot = ((target - target.mean()) ** 2).sum()
    if ss_tot == 0:
        return float(((target - pred) ** 2).sum() == 0)
    return float(1 - ((target - pred) ** 2).sum() / ss_tot)
