"""Run every probe on a method's frozen representations and assemble the metrics record.

For each split, ``probe.{train,val}_samples`` view sequences per object are drawn with a fixed seed
(the same for every method), encoded once in eval mode, and cached:

* sequence representations (kind "sequence") of the first M views, for M = M_val and every extra
  ``probe.eval_seq_lens`` -> top-1 at each inference length;
* view representations (kind "view"), on datasets without a view bank (or ``probe.view_protocol =
  samples``): views 0 and 1 -> top-1 (view 0), pair probes on concat(view 0, view 1) (relative
  rotation, colour), single probes on view 0 (individual rotation);
* ``knn_top1``: cosine kNN top-1 (benchmark/probes/knn.py) on the headline top-1 representation of
  these cached samples (no head to fit: the geometry of the representation).

On datasets with a view bank (3DIEBench and its mini) view representations are probed as upstream
does, with fresh views / pairs every probe epoch, from features cached once (benchmark/probes/bank.py).
Deviation from SIE/seq-JEPA, recorded in the result: for sequence representations (and view
representations elsewhere) they would draw fresh random views every probe epoch; we cache a fixed
number of sampled sequences per object so a probe epoch costs no encoder pass.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader

from benchmark.config import PROBE_PRESETS, ProbeConfig, RunConfig
from benchmark.data.base import SequenceDataset, collate, loader_workers
from benchmark.infra.progress import progress as report
from benchmark.probes import bank, health, validation
from benchmark.probes.context import context_probes
from benchmark.probes.heads import linear_probe, regression_probe
from benchmark.probes.knn import knn_top1
from benchmark.probes.path_integration import path_integration
from methods.contract import Method

PROTOCOL = ("frozen encoder in eval mode; features of probe.train_samples / probe.val_samples fixed view "
            "sequences per object cached; heads trained with {optimizer} on the train split and scored on the "
            "held-out split at the final epoch (no test-set selection)")
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW"}  # probe.optimizer -> the name the protocol line prints


def protocol(p: ProbeConfig, banked: bool) -> str:
    """The probe protocol line of result.json: the heads' optimiser as fitted, and the view bank if used."""
    line = PROTOCOL.format(optimizer=OPTIMIZERS[p.optimizer])
    return f"{line}; {bank.PROTOCOL}" if banked else line


@torch.no_grad()
def extract(method: Method, ds: SequenceDataset, lens: list[int], batch_size: int, device: torch.device,
            num_workers: int, desc: str, progress: bool) -> dict:
    """Encode ``ds`` -> {"view": {rep: (N, 2, D)}, "seq": {rep: {M: (N, D)}}, "label", "targets"}."""
    method.eval()
    reps = method.representations()
    view_reps = [r.name for r in reps if r.kind == "view"]
    seq_reps = [r.name for r in reps if r.kind == "sequence"]
    out: dict = {"view": {r: [] for r in view_reps}, "seq": {r: {m: [] for m in lens} for r in seq_reps},
                 "label": [], "targets": {}}
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    for b in report(loader, desc, unit="batch", enabled=progress):
        views, actions = b["views"].to(device), b["actions"].to(device)
        enc = method.encode(views[:, :2], actions[:, :1])
        for r in view_reps:
            out["view"][r].append(enc[r].float().cpu())
        if seq_reps:
            for m in lens:
                enc_m = enc if m == 2 else method.encode(views[:, :m], actions[:, : m - 1])
                for r in seq_reps:
                    out["seq"][r][m].append(enc_m[r].float().cpu())
        out["label"].append(b["label"])
        for k, v in b["targets"].items():
            out["targets"].setdefault(k, []).append(v.float())
    return {
        "view": {r: torch.cat(v) for r, v in out["view"].items()},
        "seq": {r: {m: torch.cat(v) for m, v in d.items()} for r, d in out["seq"].items()},
        "label": torch.cat(out["label"]),
        "targets": {k: torch.cat(v) for k, v in out["targets"].items()},
    }


def evaluate(method: Method, cfg: RunConfig, train_ds: SequenceDataset, val_ds: SequenceDataset,
             device: torch.device) -> dict:
    """All probes -> the ``metrics`` section of result.json."""
    lens = sorted({cfg.eval_seq_len, *cfg.probe.eval_seq_lens})
    p = cfg.probe
    nw, progress, seed = loader_workers(cfg.data.num_workers), cfg.train.progress, cfg.seed
    train_ds.repeats, val_ds.repeats = p.train_samples, p.val_samples
    tr = extract(method, train_ds, lens, p.batch_size, device, nw, "probe features (train)", progress)
    va = extract(method, val_ds, lens, p.batch_size, device, nw, "probe features (val)", progress)
    n_cls = train_ds.num_classes
    per_rep: dict[str, dict] = {}
    use_bank = train_ds.view_bank and p.view_protocol == "bank" and bool(tr["view"])
    if use_bank:
        btr = bank.extract_bank(method, train_ds, p.bank_views, p.batch_size, device, nw, "view bank (train)", progress)
        bva = bank.extract_bank(method, val_ds, p.bank_views, p.batch_size, device, nw, "view bank (val)", progress)
        for r in tr["view"]:
            per_rep[r] = bank.bank_probes(btr, bva, train_ds, r, n_cls, p, seed, device, progress)
    else:
        per_rep.update(_sample_view_probes(tr, va, train_ds, n_cls, p, seed, device, progress))
    for r, by_len in tr["seq"].items():
        accs = {str(m): linear_probe(by_len[m], tr["label"], va["seq"][r][m], va["label"], n_cls, p, seed, device,
                                     f"probe top1 ({r}, M_val={m})", progress)
                for m in lens}
        per_rep[r] = {"top1": accs[str(cfg.eval_seq_len)], "top1_by_eval_len": accs}
    metrics = headline(method, per_rep, train_ds, va["label"].shape[0], tr["label"].shape[0])
    src = metrics["headline_source"]["top1"]
    metrics.update(knn_metric(tr, va, src, cfg.eval_seq_len, n_cls, p, device))
    metrics["headline_source"]["knn_top1"] = src
    metrics.update(probe_record(p))
    metrics["probe_protocol"] = protocol(p, use_bank)
    metrics.update(health.probe_health(tr, btr if use_bank else None, cfg.eval_seq_len,
                                       metrics["headline_source"].values(), n_cls))
    if use_bank:
        metrics["probe_samples"]["bank"] = {"views": bank.bank_size(train_ds, p.bank_views), "draws": p.bank_draws,
                                            "train_objects": btr.shape[0], "val_objects": bva.shape[0]}
    # Datasets with a path_composition and methods with a sequence representation only (else {}).
    metrics.update(path_integration(method, cfg, train_ds, val_ds, device))
    # Methods with a context representation only (ContextSSL's transformer output, as its authors probe it).
    metrics.update(context_probes(method, cfg, train_ds, val_ds, device))
    if p.validation_objects:  # the same probes on a split of the training objects -> val_* (probes/validation.py)
        fit_ds, sel_ds, record = validation.split(train_ds, p.validation_objects)
        inner = dataclasses.replace(cfg, probe=dataclasses.replace(p, validation_objects=0))
        metrics.update(validation.prefixed(evaluate(method, inner, fit_ds, sel_ds, device), record))
    return metrics


def knn_metric(tr: dict, va: dict, rep: str, m_val: int, n_cls: int, p: ProbeConfig, device: torch.device) -> dict:
    """``knn_top1``: kNN top-1 (%) on the headline top-1 representation ``rep`` of the cached probe samples (its
    M_val features for a sequence representation, view 0 for a view one), ``probe.knn_k`` / ``probe.knn_t``."""
    x_tr, x_va = (tr["seq"][rep][m_val], va["seq"][rep][m_val]) if rep in tr["seq"] else \
        (tr["view"][rep][:, 0], va["view"][rep][:, 0])
    return {"knn_top1": knn_top1(x_tr, tr["label"], x_va, va["label"], n_cls, p.knn_k, p.knn_t, device)}


def _sample_view_probes(tr: dict, va: dict, ds: SequenceDataset, n_cls: int, p: ProbeConfig, seed: int,
                        device: torch.device, progress: bool = False) -> dict[str, dict]:
    """View representations probed on the fixed sampled sequences (views 0 and 1 of each)."""
    out: dict[str, dict] = {}
    for r, x in tr["view"].items():
        xv = va["view"][r]
        d: dict = {"top1": linear_probe(x[:, 0], tr["label"], xv[:, 0], va["label"], n_cls, p, seed, device,
                                        f"probe top1 ({r})", progress)}
        for t in ds.probe_targets:
            f_tr = x.flatten(1) if t.kind == "pair" else x[:, 0]
            f_va = xv.flatten(1) if t.kind == "pair" else xv[:, 0]
            u, g = regression_probe(f_tr, tr["targets"][t.name], f_va, va["targets"][t.name], t.head, p, seed, device,
                                    f"probe {t.name}_r2 ({r})", progress)
            d[f"{t.name}_r2"], d[f"{t.name}_r2_global"] = u, g
        out[r] = d
    return out


def headline(method: Method, per_rep: dict, ds: SequenceDataset, n_val: int, n_train: int) -> dict:
    """Pick the headline numbers from the representation the method declares for each."""
    metrics: dict = {}
    sources: dict = {}
    names = ["top1"] + [f"{t.name}_r2" for t in ds.probe_targets]
    for name in names:
        src = method.headline.get(name) or method.headline.get(name.removesuffix("_r2") + "_r2")
        if src is None:
            # Equivariance probes not named in the method's headline read its first view representation.
            src = next(r.name for r in method.representations() if r.kind == "view")
        metrics[name] = per_rep[src].get(name, float("nan"))
        if f"{name}_global" in per_rep[src]:
            metrics[f"{name}_global"] = per_rep[src][f"{name}_global"]
        sources[name] = src
        if name == "top1" and "top1_by_eval_len" in per_rep[src]:
            metrics["top1_by_eval_len"] = per_rep[src]["top1_by_eval_len"]
    metrics["headline_source"] = sources
    metrics["per_representation"] = per_rep
    metrics["probe_samples"] = {"train": n_train, "val": n_val}
    return metrics


def probe_record(p: ProbeConfig) -> dict:
    """How the heads were fitted, for result.json: ``probe_preset`` (the preset's name) and ``probe_fit`` (the
    values used, ``bank_views`` 0 = every view, and the keys set apart from the preset in ``overrides``)."""
    fit = {"optimizer": p.optimizer, "lr": p.lr, "weight_decay": p.weight_decay, "batch_size": p.batch_size,
           "epochs": p.epochs, "view_protocol": p.view_protocol, "bank_views": p.bank_views, "knn_k": p.knn_k,
           "knn_t": p.knn_t}
    overrides = sorted(k for k, v in PROBE_PRESETS[p.preset].items() if fit[k] != v)
    return {"probe_preset": p.preset, "probe_fit": {**fit, "overrides": overrides}}
