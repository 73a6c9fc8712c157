"""Divergence: NaN/inf in the loss, the weights or the probe features ends a run as "diverged".

* The loss, read on the host every step anyway (its mean over the data-parallel ranks, so every rank
  decides the same), is checked before its update is applied: :meth:`DivergenceWatch.check_loss`.
  NaN/inf weights show up there one step later.
* Parameters, EMA targets and BatchNorm statistics are checked on the device before every checkpoint
  (a pass over every weight: too slow on a CPU to repeat every step), so a non-finite state is never
  saved: :meth:`DivergenceWatch.check_state`.
* After training, ``benchmark.core.runner`` encodes a few probe samples: :func:`check_probe_features`.

A divergence is the record ``{"step", "what", "detail"}`` that result.json carries.
"""

from __future__ import annotations

import math

import torch

from benchmark.data.base import SequenceDataset, collate
from benchmark.infra import distributed
from methods.contract import Method


def divergence(step: int, what: str, detail: str) -> dict:
    return {"step": step, "what": what, "detail": detail}


def names(bad: list[str]) -> str:
    """The first five of ``bad``, and how many more."""
    return ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")


def nonfinite(method: Method) -> list[str]:
    """Names of the floating-point parameters and buffers (EMA targets, BN statistics) holding NaN/inf.

    The check runs on the device; reading its one boolean is the only host sync.
    """
    tensors = [(n, t.detach()) for n, t in method.state_dict(keep_vars=True).items()
               if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        return []
    flags = torch.stack([torch.isfinite(t).all() for _, t in tensors])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(tensors, flags.tolist(), strict=True) if not ok]


class DivergenceWatch:
    """The training loop's divergence checks; ``record`` is the first divergence seen (None while finite)."""

    def __init__(self) -> None:
        self.record: dict | None = None

    def check_loss(self, step: int, loss: torch.Tensor) -> float | None:
        """The loss of the step that starts after ``step`` steps, averaged over the ranks (the same float on
        every rank, so all ranks stop together); None, with ``record`` set, if it is NaN/inf."""
        value = distributed.mean(loss)
        if math.isfinite(value):
            return value
        self.record = divergence(step + 1, "loss", f"the training loss became {value} (the update of "
                                                   f"step {step + 1} was not applied)")
        return None

    def check_state(self, step: int, method: Method) -> bool:
        """False, with ``record`` set (unless set before), if a weight or buffer holds NaN/inf after ``step``.

        Identical on every rank (data parallelism keeps the weights in sync).
        """
        bad = nonfinite(method)
        if bad:
            self.record = self.record or divergence(step, "parameters", f"NaN/inf in {names(bad)}")
        return not bad

    @property
    def keeps_last_state(self) -> bool:
        """Whether the state at the last step may be saved: no divergence, or one in a loss (its update was
        not applied, so the weights are those of the last finite step)."""
        return self.record is None or self.record["what"] == "loss"


@torch.no_grad()
def check_probe_features(method: Method, ds: SequenceDataset, lens: list[int], device: torch.device,
                         n: int = 8) -> dict | None:
    """Encode the first ``n`` probe samples at every length the probes use; a divergence record if any
    representation holds NaN/inf (the probes would fit chance-level heads on them), else None."""
    items = [ds[i] for i in range(min(n, len(ds)))]
    if not items:
        return None
    b = collate(items)
    views, actions = b["views"].to(device), b["actions"].to(device)
    method.eval()
    bad = set()
    for m in sorted({2, *lens}):
        if m > views.shape[1]:
            continue
        for name, t in method.encode(views[:, :m], actions[:, : m - 1]).items():
            if not bool(torch.isfinite(t).all()):
                bad.add(f"{name} (M={m})")
    if not bad:
        return None
    return divergence(-1, "probe features", f"non-finite probe features from {names(sorted(bad))}")
