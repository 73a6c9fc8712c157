"""Representation health: has a representation collapsed? (docs/protocol.md, "Representation health")

Two figures of a feature matrix X (N samples x D dimensions), and a rule on them:

* ``effective_rank``: Roy & Vetterli (2007): exp of the Shannon entropy of the normalised singular values
  p_i = s_i / sum(s) of the *centred* X. 1 when all variance lies along one direction, D when every direction
  carries the same (whitened features), 0 for constant features (no variance at all). Centring makes it
  measure spread between samples, not the mean every sample shares.
* ``std``: the mean over dimensions of the per-dimension standard deviation of the L2-normalised
  embedding (lightly's ``std_of_l2_normalized``). Whitened Gaussian features give 1/sqrt(D) (points
  spread over the unit sphere); identical directions give 0 (complete collapse).

Collapse rule (:func:`assess`), either of

1. *dimensional collapse*: ``effective_rank < RANK_FRACTION * (min(C, D) - 1)``, C the number of classes:
   C class means span C - 1 dimensions, and features whose variance lives in well under those cannot keep
   the classes apart linearly. Calibrated on the CPU pattern regime (3diebench-mini, 8 classes, 128-d,
   docs/pattern.md): threshold 4.2, the geometric middle of the healthy runs' 6-12 (SimCLR 11.9, EquiMod 9.3,
   VICReg 7.9, seq-JEPA 6.0) and the collapsed BYOL's and SIE's 3.0 and 2.6 (top-1 19-30 % against 72-92 %):
   a margin of about 1.4x on either side.
2. *complete collapse*: ``std * sqrt(D) < STD_FLOOR``: every embedding points (nearly) the same way, even
   when the tiny differences between them are spread over many directions (a high effective rank of noise).
   Post-ReLU encoder features share a large mean direction, so this figure is low even for healthy ones
   (seq-JEPA's random-init encoder: 0.056): the floor only catches (near-)complete collapse.

Random-init features are not collapsed: seq-JEPA's random-init encoder has an effective rank of 24.5 on the
pattern regime's features, above any trained run (an untrained network spreads small random variations
over many directions); health is not quality (docs/protocol.md §8).

Both figures are computed on at most ``MAX_ROWS`` rows (evenly spaced, no random draw), in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

RANK_FRACTION = 0.6  # collapsed below this fraction of the C - 1 dimensions that C class means span
STD_FLOOR = 0.01  # collapsed below this std * sqrt(D) (whitened features: 1; seq-JEPA's random-init encoder 0.056)
MAX_ROWS = 4096  # rows used (evenly spaced): an SVD of 4096 x D costs milliseconds for D <= 2048
RULE = (f"collapsed when the effective rank (exp of the entropy of the centred features' normalised singular "
        f"values) < {RANK_FRACTION:g} x (min(classes, dim) - 1), or the mean per-dimension std of the "
        f"L2-normalised features x sqrt(dim) < {STD_FLOOR:g}")


def _rows(x: Tensor) -> Tensor:
    """(N, ..., D) -> (<= MAX_ROWS, D) float64, evenly spaced rows (deterministic, no RNG draw)."""
    x = x.detach().reshape(-1, x.shape[-1]).double()
    if x.shape[0] > MAX_ROWS:
        x = x[torch.linspace(0, x.shape[0] - 1, MAX_ROWS).round().long()]
    return x.cpu()


def effective_rank(x: Tensor) -> float:
    """Roy & Vetterli's effective rank of the centred features ``x`` (N, D) (leading dims are flattened)."""
    x = _rows(x)
    if not bool(torch.isfinite(x).all()):
        return math.nan
    s = torch.linalg.svdvals(x - x.mean(0))
    total = s.sum()
    if total <= 0:
        return 0.0  # no variance at all: constant features
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_std(x: Tensor) -> float:
    """Mean per-dimension std of the L2-normalised rows of ``x`` (lightly's ``std_of_l2_normalized``)."""
    x = _rows(x)
    if x.shape[0] < 2:
        return math.nan
    return float(torch.nn.functional.normalize(x, dim=1).std(dim=0).mean())


def rank_threshold(num_classes: int, dim: int) -> float:
    """Effective rank below which a representation of ``dim`` dimensions for ``num_classes`` classes has collapsed."""
    return RANK_FRACTION * (min(num_classes, dim) - 1)


@dataclass(frozen=True)
class Health:
    """Health figures of one representation and the verdict of the collapse rule."""

    effective_rank: float
    std: float
    dim: int
    rank_threshold: float
    collapsed: bool
    reason: str  # "" when healthy, else which figure is below which threshold


def assess(x: Tensor, num_classes: int) -> Health:
    """Effective rank, normalised std and the collapse rule on features ``x`` (N, D) (or (N, K, D))."""
    dim = int(x.shape[-1])
    rank, std = effective_rank(x), normalized_std(x)
    need = rank_threshold(num_classes, dim)
    why = []
    if not math.isfinite(rank) or not math.isfinite(std):
        why.append("non-finite features")
    else:
        if std * math.sqrt(dim) < STD_FLOOR:
            why.append(f"std of the normalised features {std:.2g} < {STD_FLOOR:g}/sqrt({dim}) = "
                       f"{STD_FLOOR / math.sqrt(dim):.2g}")
        if rank < need:
            why.append(f"effective rank {rank:.2f} < {need:g} ({RANK_FRACTION:g} x (min({num_classes} classes, "
                       f"{dim} dims) - 1))")
    return Health(rank, std, dim, need, bool(why), "; ".join(why))


def health_metrics(features: Mapping[str, Tensor], headline: Iterable[str], num_classes: int,
                   prefix: str = "health_") -> dict:
    """result.json entries for every representation in ``features``: ``<prefix><rep>_effective_rank`` and
    ``<prefix><rep>_std``, then ``collapsed`` (any ``headline`` representation collapsed), ``collapse_reason``
    ("" when healthy) and ``health_rule`` (the rule, in words)."""
    out: dict = {}
    reasons = []
    heads = set(headline)
    for rep, x in features.items():
        h = assess(x, num_classes)
        out[f"{prefix}{rep}_effective_rank"] = round(h.effective_rank, 4)
        out[f"{prefix}{rep}_std"] = round(h.std, 6)
        if h.collapsed and rep in heads:
            reasons.append(f"{rep}: {h.reason}")
    out.update(collapsed=bool(reasons), collapse_reason="; ".join(reasons), health_rule=RULE)
    return out


def probe_health(tr: dict, train_bank, m_val: int, headline: Iterable[str], num_classes: int) -> dict:
    """:func:`health_metrics` on the training-split features the final probes read (benchmark/probes/suite.py):
    a view representation's view-bank features when the probes used a bank (``train_bank``, else None), else
    both cached views of each sampled sequence; a sequence representation's features at M_val = ``m_val``."""
    feats = {r: (train_bank.feats[r] if train_bank is not None else x) for r, x in tr["view"].items()}
    feats.update({r: by_len[m_val] for r, by_len in tr["seq"].items()})
    return health_metrics(feats, headline, num_classes)
