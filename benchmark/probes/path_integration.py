"""Path integration: regress the cumulative transformation of a sequence from its aggregate representation.

The paper (docs/protocol.md §5, ``path_int_fig.pdf``; published curves in benchmark/reporting/paper_results.yaml) plots
"Angular path prediction R^2" (3DIEBench) and "Saccade path prediction R^2" (STL-10 PLS) against M_val
for three models: vision + action conditioning, vision without action conditioning (a model trained with
``model.act_cond=false``), and "no vision" + action conditioning. No code is released, so the task
definition here is ours (**uncertain**):

* input: the frozen sequence representation (z_AGG for seq-JEPA) of the first M observed views with
  their M-1 in-sequence actions, for every M in {M_val, probe.eval_seq_lens} (M >= 2);
* target: the cumulative transformation from the first to the M-th view, composed from the same
  actions: their sum for additive actions (saccade displacements, augmentation-parameter differences;
  ``path_composition = "sum"``), the product of the relative quaternions (+ the sum of the other
  components, canonical w >= 0) for 3DIEBench rotations (``path_composition = "quaternion"``);
* head: the MLP probe (in -> hidden -> hidden -> out), trained with MSE on the probe train split and scored
  (R^2, uniform average and global mean) on the held-out split at the final epoch;
* "no vision" control (action-conditioned methods only): every view replaced by a blank image (all zeros
  after normalisation, i.e. the dataset mean colour), so the visual tokens are constant and only the
  actions inform the aggregate. The paper's control may instead drop the visual features inside the model.

Published curves start at R^2 = 1.0 for M_val = 1, which suggests their x-axis counts actions (the single
action input then equals the target); our M counts observed views, so their point k matches our M = k + 1.
Datasets opt in by setting ``SequenceDataset.path_composition``; methods without a sequence representation are skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from benchmark.config import RunConfig
from benchmark.data.base import SequenceDataset, collate, loader_workers
from benchmark.infra.progress import progress as report
from benchmark.probes.heads import regression_probe
from methods.contract import Method

PROTOCOL = ("path integration: MLP probe from the sequence representation of the first M views (with their "
            "M-1 actions) to the composed transformation from view 1 to view M; no-vision control = blank views")


def quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of scalar-last (x, y, z, w) quaternions (..., 4): the rotation R_a R_b (scipy a * b)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack([aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw,
                        aw * bw - ax * bx - ay * by - az * bz], dim=-1)


def compose(actions: Tensor, kind: str) -> Tensor:
    """(B, K, A) consecutive relative actions -> (B, A) transformation from the first view to view K + 1."""
    if kind == "sum":
        return actions.sum(dim=1)
    if kind == "quaternion":
        q = actions[:, 0, :4]
        for k in range(1, actions.shape[1]):
            q = quat_mul(q, actions[:, k, :4])  # R_1^-1 R_{k+2} = (R_1^-1 R_{k+1}) (R_{k+1}^-1 R_{k+2})
        q = q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        q = torch.where(q[:, 3:] < 0, -q, q)  # q and -q are the same rotation: one sign makes it a function
        return torch.cat([q, actions[:, :, 4:].sum(dim=1)], dim=-1)
    raise ValueError(f"unknown path_composition {kind!r}; expected 'sum' or 'quaternion'")


@torch.no_grad()
def _features(method: Method, ds: SequenceDataset, rep: str, lens: list[int], kind: str, no_vision: bool,
              cfg: RunConfig, device: torch.device, desc: str) -> dict:
    """{"x": {M: (N, D)}, "blind": {M: (N, D)}, "t": {M: (N, A)}} for every path length M."""
    method.eval()
    out: dict = {"x": {m: [] for m in lens}, "blind": {m: [] for m in lens}, "t": {m: [] for m in lens}}
    loader = DataLoader(ds, batch_size=cfg.probe.batch_size, shuffle=False,
                        num_workers=loader_workers(cfg.data.num_workers), collate_fn=collate)
    for b in report(loader, desc, unit="batch", enabled=cfg.train.progress):
        views, actions = b["views"].to(device), b["actions"].to(device)
        for m in lens:
            out["x"][m].append(method.encode(views[:, :m], actions[:, : m - 1])[rep].float().cpu())
            out["t"][m].append(compose(actions[:, : m - 1].double(), kind).float().cpu())
            if no_vision:
                blank = torch.zeros_like(views[:, :m])
                out["blind"][m].append(method.encode(blank, actions[:, : m - 1])[rep].float().cpu())
    return {k: {m: torch.cat(v) for m, v in d.items() if v} for k, d in out.items()}


def path_integration(method: Method, cfg: RunConfig, train_ds: SequenceDataset, val_ds: SequenceDataset,
                     device: torch.device) -> dict:
    """Path-integration metrics for ``metrics`` in result.json ({} when the dataset or method has none).

    Keys: ``path_r2`` (at M_val, or M = 2 when M_val = 1), ``path_r2_by_eval_len`` {M: R^2},
    ``path_r2_global_by_eval_len``, ``path_r2_no_vision_by_eval_len`` (action-conditioned methods),
    ``path_source`` (the representation read) and ``path_protocol``.
    """
    kind = train_ds.path_composition
    seq_reps = [r.name for r in method.representations() if r.kind == "sequence"]
    if kind is None or not seq_reps:
        return {}
    rep = method.headline.get("top1") if method.headline.get("top1") in seq_reps else seq_reps[0]
    lens = sorted({max(2, m) for m in (cfg.eval_seq_len, *cfg.probe.eval_seq_lens)})
    blind = bool(method.uses_actions)
    tr = _features(method, train_ds, rep, lens, kind, blind, cfg, device, "path features (train)")
    va = _features(method, val_ds, rep, lens, kind, blind, cfg, device, "path features (val)")
    p = cfg.probe
    r2, r2_global, r2_blind = {}, {}, {}
    for m in lens:
        u, g = regression_probe(tr["x"][m], tr["t"][m], va["x"][m], va["t"][m], "mlp", p, cfg.seed, device,
                                f"probe path_r2 ({rep}, M={m})", cfg.train.progress)
        r2[str(m)], r2_global[str(m)] = u, g
        if blind:
            r2_blind[str(m)] = regression_probe(tr["blind"][m], tr["t"][m], va["blind"][m], va["t"][m], "mlp", p,
                                                cfg.seed, device, f"probe path_r2 no vision ({rep}, M={m})",
                                                cfg.train.progress)[0]
    out = {"path_r2": r2[str(max(2, cfg.eval_seq_len))], "path_r2_by_eval_len": r2,
           "path_r2_global_by_eval_len": r2_global, "path_source": rep, "path_protocol": PROTOCOL}
    if blind:
        out["path_r2_no_vision_by_eval_len"] = r2_blind
    return out
