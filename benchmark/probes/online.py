"""Online probes: is the method learning class and pose *while* it trains?

Every ``train.online_probe_every`` optimiser steps (and once before the first, as the random-init
reference), :class:`OnlineProbes` encodes a fixed monitor set - ``train.online_probe_objects`` training
objects and as many held-out ones, class-balanced - with the current online encoder (detached, eval
mode, ``torch.no_grad``) and fits the final probes' heads on it from scratch, with a smaller budget:

* ``online_top1``: linear classifier on the method's headline top-1 representation (z_AGG of
  ``eval_seq_len`` views for seq-JEPA, a single view's encoding for the two-view baselines);
* ``online_knn_top1``: k-nearest-neighbour top-1 on the same features (benchmark/probes/knn.py,
  ``probe.knn_k`` / ``probe.knn_t``);
* ``online_effective_rank``, ``online_std``, ``online_collapsed`` (1 = collapsed, else 0): the health of the
  top-1 representation's features of the training monitor objects (benchmark/probes/health.py: effective
  rank, per-dimension std of the L2-normalised features, the collapse rule of the final result);
* ``online_<target>_r2`` for every equivariance probe of the dataset (``rotation``, ``color``,
  ``indiv_rotation`` on 3DIEBench; augmentation parameters or fixation shifts on the image datasets),
  read from the representation the method's headline names for it. On datasets with a view bank the
  heads draw fresh view pairs every epoch from ``bank_views`` cached views per object, exactly as the
  final probes do (benchmark/probes/bank.py): a fixed set of pairs lets the rotation MLP memorise them.

The numbers are held-out estimates of the final probes' - lower, for the smaller budget. Nothing flows
back into the model: no gradient, no BatchNorm statistic, no random-number draw (the RNG state is
forked), so a run trains exactly the same with or without them, and the curve is a function of the
current weights alone (unaffected by resuming). Upstream seq-JEPA instead trains online heads on
detached features of every training batch and reports their training-batch accuracy.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from benchmark.config import RunConfig
from benchmark.data.base import SequenceDataset, collate
from benchmark.probes import bank, health
from benchmark.probes.heads import fit_head, make_head, predict
from benchmark.probes.knn import knn_top1
from benchmark.probes.metrics import r2_uniform, top1
from methods.contract import Method

MAX_BANK_VIEWS = 8  # views per monitor object on view-bank datasets (all 8 x 7 ordered pairs are scored)


def balanced_objects(ds: SequenceDataset, n: int) -> list[int]:
    """The first ``n`` objects of a class-interleaved order, so that every class is in the monitor set."""
    labels = ds.labels_of()
    by_class = [[i for i in range(len(labels)) if labels[i] == c] for c in sorted(set(labels.tolist()))]
    return [i for group in itertools.zip_longest(*by_class) for i in group if i is not None][:n]


class OnlineProbes:
    """Held-out monitor of a method's representations during training (see the module docstring)."""

    def __init__(self, method: Method, cfg: RunConfig, train_ds: SequenceDataset, val_ds: SequenceDataset,
                 device: torch.device) -> None:
        self.method, self.device, self.seed = method, device, cfg.seed
        self.train_ds, self.val_ds = train_ds, val_ds
        self.m_val = cfg.eval_seq_len
        n = cfg.train.online_probe_objects
        self.objects = balanced_objects(train_ds, n), balanced_objects(val_ds, n)
        self.num_classes = train_ds.num_classes
        reps = {r.name: r for r in method.representations()}
        self.kinds = {name: r.kind for name, r in reps.items()}
        first_view = next(r.name for r in reps.values() if r.kind == "view")
        self.top1_rep = method.headline.get("top1", first_view)
        self.target_rep = {t.name: method.headline.get(f"{t.name}_r2", first_view) for t in train_ds.probe_targets}
        p = cfg.probe
        # The final probes' protocol on a budget that fits between training steps.
        self.probe_cfg = dataclasses.replace(p, epochs=min(p.epochs, 50), hidden=min(p.hidden, 512),
                                             bank_draws=max(p.bank_draws, 4))
        self.knn = {"k": p.knn_k, "t": p.knn_t, "device": device}
        self.bank_views = min(bank.bank_size(train_ds, p.bank_views), MAX_BANK_VIEWS) if train_ds.view_bank else 0

    def __call__(self) -> dict[str, float]:
        """The online metrics of the current weights; leaves the method in train mode."""
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            self.method.eval()
            try:
                out = self._measure()
            finally:
                self.method.train()
        return {k: round(v, 4) for k, v in out.items()}

    def _measure(self) -> dict[str, float]:
        out: dict[str, float] = {}
        banks = None
        if self.bank_views:
            banks = tuple(bank.extract_bank(self.method, ds, self.bank_views, self.probe_cfg.batch_size, self.device,
                                            0, "", False, objs)
                          for ds, objs in zip((self.train_ds, self.val_ds), self.objects, strict=True))
            reps = {r for r in self.target_rep.values() if self.kinds[r] == "view"}
            if self.kinds[self.top1_rep] == "view":
                reps.add(self.top1_rep)
            res = {r: bank.bank_probes(*banks, self.train_ds, r, self.num_classes, self.probe_cfg, self.seed,
                                       self.device) for r in sorted(reps)}
            for name, rep in self.target_rep.items():
                if rep in res:
                    out[f"online_{name}_r2"] = res[rep][f"{name}_r2"]
        if banks is not None and self.kinds[self.top1_rep] == "view":
            out["online_top1"] = res[self.top1_rep]["top1"]
            (tr, va), k = banks, self.bank_views
            out["online_knn_top1"] = knn_top1(tr.feats[self.top1_rep].flatten(0, 1), tr.labels.repeat_interleave(k),
                                              va.feats[self.top1_rep].flatten(0, 1), va.labels.repeat_interleave(k),
                                              self.num_classes, **self.knn)
            out.update(self.health(tr.feats[self.top1_rep]))
            return out
        tr, va = (self._encode_sequences(ds, objs) for ds, objs in zip((self.train_ds, self.val_ds), self.objects,
                                                                        strict=True))
        out.update(self.fit_sequences(tr, va, with_pairs=banks is None))
        return out

    @torch.no_grad()
    def _encode_sequences(self, ds: SequenceDataset, objects: list[int]) -> dict:
        """Every representation of one fixed sequence of ``max(2, eval_seq_len)`` views per monitor object."""
        views = max(2, self.m_val)
        loader = DataLoader(Subset(ds.with_views(views), objects), shuffle=False, num_workers=0, collate_fn=collate,
                            batch_size=max(1, self.probe_cfg.batch_size // views))
        feats: dict[str, list[Tensor]] = {}
        labels, targets = [], []
        for b in loader:
            v, a = b["views"].to(self.device), b["actions"].to(self.device)
            enc = self.method.encode(v, a)
            if self.kinds[self.top1_rep] == "sequence" and views != self.m_val:
                enc[self.top1_rep] = self.method.encode(v[:, :self.m_val], a[:, :self.m_val - 1])[self.top1_rep]
            for name, t in enc.items():
                feats.setdefault(name, []).append(t.float().cpu())
            labels.append(b["label"])
            targets.append(b["targets"])
        return {"feats": {k: torch.cat(v) for k, v in feats.items()}, "labels": torch.cat(labels),
                "targets": {k: torch.cat([t[k] for t in targets]) for k in targets[0]}}

    def health(self, x: Tensor) -> dict[str, float]:
        """``online_effective_rank``, ``online_std`` and ``online_collapsed`` (1 / 0) of features ``x`` of the
        top-1 representation (every view of a view representation, as the final health figures)."""
        h = health.assess(x, self.num_classes)
        return {"online_effective_rank": h.effective_rank, "online_std": h.std, "online_collapsed": int(h.collapsed)}

    def fit_sequences(self, tr: dict, va: dict, with_pairs: bool) -> dict[str, float]:
        """Top-1 (linear and kNN) on the top-1 representation of the sequences; without a view bank also the
        equivariance probes, on views 0 and 1 of each sequence (what the final probes use there)."""
        out: dict[str, float] = {}
        x_tr, x_va = _single(tr["feats"][self.top1_rep]), _single(va["feats"][self.top1_rep])
        torch.manual_seed(self.seed)
        head = make_head("linear", x_tr.shape[1], self.num_classes, 0).to(self.device)
        fit_head(head, lambda e: (x_tr, tr["labels"]), nn.functional.cross_entropy, self.probe_cfg, self.seed)
        out["online_top1"] = top1(predict(head, x_va), va["labels"])
        out["online_knn_top1"] = knn_top1(x_tr, tr["labels"], x_va, va["labels"], self.num_classes, **self.knn)
        out.update(self.health(tr["feats"][self.top1_rep]))
        if not with_pairs:
            return out
        for t in self.train_ds.probe_targets:
            rep = self.target_rep[t.name]
            if self.kinds[rep] != "view":
                continue
            f_tr, f_va = tr["feats"][rep], va["feats"][rep]
            if t.kind == "pair":
                f_tr, f_va = f_tr[:, :2].flatten(1), f_va[:, :2].flatten(1)
            else:
                f_tr, f_va = f_tr[:, 0], f_va[:, 0]
            y_tr = tr["targets"][t.name]
            torch.manual_seed(self.seed)
            head = make_head(t.head, f_tr.shape[1], y_tr.shape[1], self.probe_cfg.hidden).to(self.device)
            fit_head(head, lambda e, x=f_tr, y=y_tr: (x, y), nn.functional.mse_loss, self.probe_cfg, self.seed)
            out[f"online_{t.name}_r2"] = r2_uniform(predict(head, f_va), va["targets"][t.name])
        return out


def _single(x: Tensor) -> Tensor:
    return x[:, 0] if x.ndim == 3 else x  # a view representation is classified from one view
