"""The context representation: a method's output for a query view read after a context of c (x, x+) pairs.

ContextSSL's authors probe its transformer's output, not its encoder (``Sharut/In-Context-Symmetries`` @ 124736d,
``eval_equivariance.py`` for R^2, ``linear_probe.py`` for top-1; docs/baselines.md §3):

* the context is c (x, x+) pairs of c different *training* objects (``dataset.py`` ``_create_cache``: random
  objects, two random views each), as tokens [f(x_k); r_k] with r_k the relative action zeroed outside the
  environment (the rotation context zeroes its colour part) and [f(x+_k); 0]; its keys and values are cached once;
* every probed view v is a query token [f(v); 0] that attends to that cache and to itself (``forward_eval_rplus``);
  the paper's rows read ``eval_ctxt`` 126 tokens = 63 pairs, the longest context a 128-token block leaves room for;
* top-1: a linear head on the raw output; relative rotation / colour: heads on concat(n(out(v_a)), n(out(v_b)))
  and single-view targets on n(out(v)) (n = L2 normalisation), scored with ``utils.r2_score`` = 1 - SS_res / SS_tot
  about ONE mean over all entries (``metrics.r2_global``).

Given the context, the output is a function of its own view, so on view-bank datasets it is probed with the same
bank protocol and heads as the encoder (benchmark/probes/bank.py), elsewhere on the fixed probe samples (views 0
and 1). A method offers the representation by implementing :class:`InContext` (ContextSSL does); the result keys:
``context_top1``, ``context_<target>_r2`` (global R^2: upstream's definition, the one its published numbers use),
``context_<target>_r2_per_dim`` (mean per-dimension R^2, the definition of the encoder rows' ``<target>_r2``),
``context_len`` (c), ``context_env`` and ``context_protocol``. A target that does not vary in the probe data (the
colour of the pose-only mini) has no R^2, so no keys.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from benchmark.config import RunConfig
from benchmark.data.base import ProbeTarget, SequenceDataset, collate, loader_workers
from benchmark.infra.progress import progress as report
from benchmark.probes import bank
from benchmark.probes.heads import linear_probe, regression_probe
from methods.contract import Method, Representation

REP = "context"
PROTOCOL = ("context representation (upstream eval_equivariance.py / linear_probe.py): the output for a query "
            "token [f(v); 0] after one fixed context of context_len (x, x+) pairs of different training objects "
            "in environment context_env; top-1 from the raw output, R^2 heads on L2-normalised outputs; "
            "context_<t>_r2 = global R^2 (1 - SS_res / SS_tot about one mean, upstream's r2_score), "
            "context_<t>_r2_per_dim = mean of per-dimension R^2")


@runtime_checkable
class InContext(Protocol):
    """A method whose representation can be read after a context of (x, x+) pairs (baselines/contextssl.py)."""

    context_env: str  # which environment the context's actions come from (recorded as ``context_env``)

    @property
    def context_dim(self) -> int: ...

    def eval_context_pairs(self, train_batch_size: int) -> int:
        """c, the pairs a query is read after, for a method trained with batches of ``train_batch_size``."""
        ...

    def make_context(self, views: Tensor, actions: Tensor) -> Any:
        """c pairs: views (c, 2, C, H, W), actions (c, A) from view 0 to view 1 -> an opaque context."""
        ...

    def encode_context(self, views: Tensor, context: Any) -> Tensor:
        """views (B, V, C, H, W) -> (B, V, D), each view read after ``context`` alone (eval mode)."""
        ...


class ContextReader(Method):
    """``method``'s context representation behind one fixed context, as a Method with one view representation
    (what :func:`bank.extract_bank` reads). Holds ``method`` as a submodule, so ``eval()`` reaches it."""

    name = "context"
    headline: ClassVar[dict[str, str]] = {}

    def __init__(self, method: Method, context: Any) -> None:
        super().__init__(method.cfg, method.spec)
        if not isinstance(method, InContext):
            raise TypeError(f"{type(method).__name__} has no context representation (see InContext)")
        self.inner, self.context = method, context

    def representations(self) -> list[Representation]:
        return [Representation(REP, self.inner.context_dim, "view", "both")]

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        return {REP: self.inner.encode_context(views, self.context)}


def context_len(method: InContext, cfg: RunConfig, train_ds: SequenceDataset) -> int:
    """c: the method's (the paper row's) context length, at most one pair per training object."""
    return max(0, min(method.eval_context_pairs(cfg.train.batch_size), train_ds.num_items()))


@torch.no_grad()
def build_context(method: Method, train_ds: SequenceDataset, c: int, seed: int, device: torch.device) -> Any:
    """The context of c (x, x+) pairs: c distinct training objects drawn with ``seed``, two views each and the
    action between them, as the dataset's sample of that object (probe datasets are fixed: deterministic)."""
    pairs = train_ds.with_views(2)
    objects = torch.randperm(pairs.num_items(), generator=torch.Generator().manual_seed(seed))[:c].tolist()
    items = [pairs[i] for i in objects]
    s = method.spec
    views = torch.stack([it["views"] for it in items]) if items else torch.zeros(0, 2, s.channels, s.image_size,
                                                                                  s.image_size)
    actions = torch.stack([it["actions"][0] for it in items]) if items else torch.zeros(0, s.action_dim)
    method.eval()
    return method.make_context(views.to(device), actions.to(device))


def context_probes(method: Method, cfg: RunConfig, train_ds: SequenceDataset, val_ds: SequenceDataset,
                   device: torch.device) -> dict:
    """The ``context_*`` metrics of a method with a context representation; {} for every other method."""
    if not isinstance(method, InContext):
        return {}
    p, seed = cfg.probe, cfg.seed
    c = context_len(method, cfg, train_ds)
    reader = ContextReader(method, build_context(method, train_ds, c, seed, device))
    nw, progress = loader_workers(cfg.data.num_workers), cfg.train.progress
    if train_ds.view_bank and p.view_protocol == "bank":
        tr = bank.extract_bank(reader, train_ds, p.bank_views, p.batch_size, device, nw, "context bank (train)",
                               progress)
        va = bank.extract_bank(reader, val_ds, p.bank_views, p.batch_size, device, nw, "context bank (val)", progress)
        targets = [t for t in train_ds.probe_targets if _bank_varies(train_ds, (tr, va), t)]
        top1 = bank.bank_probes(tr, va, _with_targets(train_ds, []), REP, train_ds.num_classes, p, seed, device,
                                progress)["top1"]
        unit = bank.bank_probes(_normalised(tr), _normalised(va), _with_targets(train_ds, targets), REP,
                                train_ds.num_classes, p, seed, device, progress)
        r2 = {t.name: (unit[f"{t.name}_r2_global"], unit[f"{t.name}_r2"]) for t in targets}
    else:
        top1, r2 = _sample_probes(reader, train_ds, val_ds, cfg, device, nw)
    out: dict = {"context_len": c, "context_env": method.context_env, "context_top1": top1}
    for name, (glob, per_dim) in r2.items():
        out[f"context_{name}_r2"], out[f"context_{name}_r2_per_dim"] = glob, per_dim
    out["context_protocol"] = PROTOCOL
    return out


def _with_targets(ds: SequenceDataset, targets: list[ProbeTarget]) -> SequenceDataset:
    """A shallow copy of ``ds`` whose probes are ``targets`` only (bank_probes fits every target of its dataset)."""
    out = copy.copy(ds)
    out.probe_targets = tuple(targets)
    return out


def _normalised(b: bank.Bank) -> bank.Bank:
    return bank.Bank({REP: F.normalize(b.feats[REP], dim=-1)}, b.latents, b.labels)


def _constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[:1]))


def _bank_varies(ds: SequenceDataset, banks: tuple[bank.Bank, ...], t: ProbeTarget) -> bool:
    """Whether target ``t`` varies over the (view 0, view 1) pairs of the objects of ``banks``."""
    values = np.concatenate([ds.bank_targets(b.latents[:, 0], b.latents[:, 1])[t.name] for b in banks])
    return not _constant(values)


@torch.no_grad()
def _features(reader: ContextReader, ds: SequenceDataset, batch_size: int, device: torch.device, nw: int,
              desc: str, progress: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Context features of views 0 and 1 of the fixed probe samples of ``ds`` -> (N, 2, D), labels, targets."""
    reader.eval()
    feats, labels, targets = [], [], {}
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=nw, collate_fn=collate)
    for b in report(loader, desc, unit="batch", enabled=progress):
        feats.append(reader.encode(b["views"][:, :2].to(device))[REP].float().cpu())
        labels.append(b["label"])
        for k, v in b["targets"].items():
            targets.setdefault(k, []).append(v.float())
    return torch.cat(feats), torch.cat(labels), {k: torch.cat(v) for k, v in targets.items()}


def _sample_probes(reader: ContextReader, train_ds: SequenceDataset, val_ds: SequenceDataset, cfg: RunConfig,
                   device: torch.device, nw: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """Datasets without a view bank: top-1 and (global, per-dim) R^2 per varying target on the probe samples."""
    p, seed, progress = cfg.probe, cfg.seed, cfg.train.progress
    x, y, t_tr = _features(reader, train_ds, p.batch_size, device, nw, "context features (train)", progress)
    xv, yv, t_va = _features(reader, val_ds, p.batch_size, device, nw, "context features (val)", progress)
    top1 = linear_probe(x[:, 0], y, xv[:, 0], yv, train_ds.num_classes, p, seed, device, "probe top1 (context)",
                        progress)
    u, uv = F.normalize(x, dim=-1), F.normalize(xv, dim=-1)
    r2 = {}
    for t in train_ds.probe_targets:
        if _constant(torch.cat([t_tr[t.name], t_va[t.name]]).numpy()):
            continue
        f, fv = (u.flatten(1), uv.flatten(1)) if t.kind == "pair" else (u[:, 0], uv[:, 0])
        per_dim, glob = regression_probe(f, t_tr[t.name], fv, t_va[t.name], t.head, p, seed, device,
                                         f"probe {t.name}_r2 (context)", progress)
        r2[t.name] = (glob, per_dim)
    return top1, r2
