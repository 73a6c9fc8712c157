"""View-bank probes, for datasets whose objects have a finite set of views with latents (3DIEBench, mini).

SIE and seq-JEPA draw a fresh random view pair of every object in each probe epoch and push it through
the frozen encoder (docs/3diebench.md §3-§4). A *view* representation is a function of its own view
(methods/contract.py), so encoding ``probe.bank_views`` views of every object once and drawing the
pairs from those cached features is the same protocol without the repeated encoder passes:

* top-1 (linear) and single-view probes: each epoch, ``probe.bank_draws`` random views per object;
* pair probes (relative rotation, colour): each epoch, ``probe.bank_draws`` random ordered pairs of
  distinct views per object, targets computed from the two views' latents (``ds.bank_targets``).

Held-out scores use *every* view (top-1, single) or every ordered pair (pair probes) of each
validation object: the expectation of upstream's one random draw per object, without its noise.
A fixed sample of pairs, as the sequence probes use, lets the 2M-parameter rotation MLP memorise
a few pairs per object; fresh pairs do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from benchmark.config import ProbeConfig
from benchmark.data.base import SequenceDataset, collate
from benchmark.infra.progress import progress as report
from benchmark.probes.heads import fit_head, make_head, predict
from benchmark.probes.metrics import r2_global, r2_uniform, top1
from methods.contract import Method

PROTOCOL = ("view representations: features of probe.bank_views views per object cached; every probe epoch "
            "draws probe.bank_draws fresh views / ordered view pairs per training object (as SIE / seq-JEPA "
            "draw fresh pairs); held-out scores over every view / ordered pair of each validation object")


@dataclass(frozen=True)
class Bank:
    """Cached view features of one split: ``feats[rep]`` (N, K, D), ``latents`` (N, K, L), ``labels`` (N,)."""

    feats: dict[str, Tensor]
    latents: np.ndarray
    labels: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.latents.shape[0], self.latents.shape[1]


def bank_size(ds: SequenceDataset, views: int) -> int:
    """Views cached per object: ``probe.bank_views`` (0 = all), at most what the dataset has."""
    return ds.views_per_object if views <= 0 else min(views, ds.views_per_object)


@torch.no_grad()
def extract_bank(method: Method, ds: SequenceDataset, views: int, batch_size: int, device: torch.device,
                 num_workers: int, desc: str, progress: bool, objects: list[int] | None = None) -> Bank:
    """Encode ``bank_size`` distinct views of every object of ``ds`` (or of ``objects``; eval mode) -> :class:`Bank`."""
    method.eval()
    k = bank_size(ds, views)
    if k < 2:
        raise ValueError(f"a view bank needs at least 2 views per object, got {k} (probe.bank_views={views})")
    view_reps = [r.name for r in method.representations() if r.kind == "view"]
    source = ds.with_views(k)
    loader = DataLoader(source if objects is None else Subset(source, objects), batch_size=max(1, batch_size // k),
                        shuffle=False, num_workers=num_workers, collate_fn=collate)
    feats: dict[str, list[Tensor]] = {r: [] for r in view_reps}
    latents, labels = [], []
    for b in report(loader, desc, unit="batch", enabled=progress):
        enc = method.encode(b["views"].to(device), b["actions"].to(device))
        for r in view_reps:
            feats[r].append(enc[r].float().cpu())
        latents.append(b["latents"].numpy())
        labels.append(b["label"])
    return Bank({r: torch.cat(v) for r, v in feats.items()}, np.concatenate(latents), torch.cat(labels))


def _draw(n: int, k: int, draws: int, g: torch.Generator, pairs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``draws`` random views (or ordered pairs of distinct views) per object -> (object, a, b) indices."""
    obj = torch.arange(n).repeat_interleave(draws)
    a = torch.randint(0, k, (n * draws,), generator=g)
    b = (a + torch.randint(1, k, (n * draws,), generator=g)) % k if pairs else a
    return obj, a, b


def _every(n: int, k: int, pairs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Every view (or every ordered pair of distinct views) of every object -> (object, a, b) indices."""
    if not pairs:
        return torch.arange(n).repeat_interleave(k), torch.arange(k).repeat(n), torch.arange(k).repeat(n)
    a, b = np.nonzero(~np.eye(k, dtype=bool))
    m = len(a)
    return (torch.arange(n).repeat_interleave(m), torch.from_numpy(a).repeat(n), torch.from_numpy(b).repeat(n))


def _inputs(x: Tensor, obj: Tensor, a: Tensor, b: Tensor, pairs: bool) -> Tensor:
    return torch.cat([x[obj, a], x[obj, b]], dim=1) if pairs else x[obj, a]


def _targets(ds: SequenceDataset, bank: Bank, name: str, obj: Tensor, a: Tensor, b: Tensor) -> Tensor:
    o = obj.numpy()
    return torch.from_numpy(ds.bank_targets(bank.latents[o, a.numpy()], bank.latents[o, b.numpy()])[name]).float()


def _predict_chunked(head: nn.Module, x: Tensor, idx: tuple[Tensor, Tensor, Tensor], pairs: bool,
                     chunk: int = 65536) -> Tensor:
    """Predictions for every index triple, building the (paired) inputs a chunk at a time."""
    obj, a, b = idx
    return torch.cat([predict(head, _inputs(x, obj[i:i + chunk], a[i:i + chunk], b[i:i + chunk], pairs))
                      for i in range(0, obj.shape[0], chunk)])


def bank_probes(tr: Bank, va: Bank, ds: SequenceDataset, rep: str, num_classes: int, p: ProbeConfig, seed: int,
                device: torch.device, progress: bool = False) -> dict:
    """Top-1 and every equivariance probe of ``ds`` on view representation ``rep`` -> {"top1", "<t>_r2", ...}."""
    x, xv = tr.feats[rep], va.feats[rep]
    (n, k), (nv, kv) = tr.shape, va.shape

    def fit(name: str, kind: str, d_out: int, pairs: bool, target, loss_fn) -> nn.Module:
        def data(epoch: int) -> tuple[Tensor, Tensor]:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            idx = _draw(n, k, p.bank_draws, g, pairs)
            return _inputs(x, *idx, pairs), target(*idx)
        torch.manual_seed(seed)
        head = make_head(kind, x.shape[2] * (2 if pairs else 1), d_out, p.hidden).to(device)
        return fit_head(head, data, loss_fn, p, seed, f"probe {name} ({rep}, view bank)", progress)

    out: dict = {}
    head = fit("top1", "linear", num_classes, False, lambda obj, a, b: tr.labels[obj], nn.functional.cross_entropy)
    idx = _every(nv, kv, pairs=False)
    out["top1"] = top1(_predict_chunked(head, xv, idx, False), va.labels[idx[0]])
    for t in ds.probe_targets:
        pairs = t.kind == "pair"
        head = fit(f"{t.name}_r2", t.head, t.dim, pairs,
                   lambda obj, a, b, name=t.name: _targets(ds, tr, name, obj, a, b), nn.functional.mse_loss)
        idx = _every(nv, kv, pairs)
        pred, target = _predict_chunked(head, xv, idx, pairs).cpu(), _targets(ds, va, t.name, *idx)
        out[f"{t.name}_r2"], out[f"{t.name}_r2_global"] = r2_uniform(pred, target), r2_global(pred, target)
    return out
