"""Probe heads trained on frozen, cached features; scored on the held-out split at the final epoch.

Protocol (docs/3diebench.md §4, docs/protocol.md §5): linear classifier; MLP in -> 1024 -> 1024 -> out (ReLU) for
rotations; linear head for colour; fitted as ``probe.preset`` says (``benchmark/config.py`` PROBE_PRESETS: SIE's
Adam 1e-3, wd 0, batch 256 by default, or seq-JEPA's AdamW 4e-4, wd 1e-3 on weights, batch 512). The encoder is
frozen in eval mode (Decision 4), so no BatchNorm statistics move during probing. No test-set selection:
the reported number is the last epoch's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from benchmark.config import ProbeConfig
from benchmark.infra.progress import Progress
from benchmark.probes.metrics import r2_global, r2_uniform, top1


def make_head(kind: str, d_in: int, d_out: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


EpochData = Callable[[int], tuple[Tensor, Tensor]]  # probe epoch -> (inputs, targets) drawn for it


def make_optimizer(head: nn.Module, cfg: ProbeConfig) -> torch.optim.Optimizer:
    """``probe.optimizer``: "adam" decays every parameter (SIE's eval scripts), "adamw" only the weights
    (seq-JEPA's --is-eval: parameters with ndim 1 get no decay)."""
    if cfg.optimizer == "adamw":
        params = list(head.parameters())
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit_head(head: nn.Module, data: EpochData, loss_fn, cfg: ProbeConfig, seed: int, desc: str = "probe head",
             progress: bool = False) -> nn.Module:
    """``probe.optimizer`` on ``data(epoch)`` for ``cfg.epochs`` epochs, shuffled minibatches; the head in eval mode.

    Every head of a representation sees the same minibatches (same seed, same draws): fitting them one by one
    equals fitting them jointly on the sum of their losses, as seq-JEPA's evaluation does. ``progress``: epochs
    and the last minibatch loss reported as ``desc`` (a plain line every 30 s and one at the end off a terminal).
    """
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(head, cfg)
    dev = next(head.parameters()).device
    head.train()
    with Progress(cfg.epochs, desc, "epoch", enabled=progress, leave=False, every_frac=None) as bar:
        for epoch in range(cfg.epochs):
            x, y = data(epoch)
            x, y = x.to(dev), y.to(dev)  # the epoch's draw on the head's device (features stay in host memory)
            perm = torch.randperm(x.shape[0], generator=g).to(dev)
            for i in range(0, x.shape[0], cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                loss = loss_fn(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if progress:
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}")  # one host sync per epoch, only when shown
            bar.update(1)
    head.eval()
    return head


@torch.no_grad()
def predict(head: nn.Module, x: Tensor, batch: int = 4096) -> Tensor:
    """Head outputs for ``x`` (on any device), computed on the head's device, returned on the CPU."""
    dev = next(head.parameters()).device
    return torch.cat([head(x[i:i + batch].to(dev)).float().cpu() for i in range(0, x.shape[0], batch)])


def linear_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, num_classes: int,
                 cfg: ProbeConfig, seed: int = 0, device: torch.device | None = None, desc: str = "linear probe",
                 progress: bool = False) -> float:
    """Linear classifier on frozen features -> held-out top-1 (%). Trains on ``device`` (default: the features')."""
    torch.manual_seed(seed)
    head = make_head("linear", train_x.shape[1], num_classes, cfg.hidden).to(device or train_x.device)
    fit_head(head, lambda epoch: (train_x, train_y), nn.functional.cross_entropy, cfg, seed, desc, progress)
    return top1(predict(head, val_x), val_y.cpu())


def regression_probe(train_x: Tensor, train_t: Tensor, val_x: Tensor, val_t: Tensor, kind: str,
                     cfg: ProbeConfig, seed: int = 0, device: torch.device | None = None,
                     desc: str = "regression probe", progress: bool = False) -> tuple[float, float]:
    """MSE-trained head on frozen features -> held-out (R^2 uniform average, R^2 global mean)."""
    torch.manual_seed(seed)
    head = make_head(kind, train_x.shape[1], train_t.shape[1], cfg.hidden).to(device or train_x.device)
    fit_head(head, lambda epoch: (train_x, train_t), nn.functional.mse_loss, cfg, seed, desc, progress)
    pred = predict(head, val_x)
    return r2_uniform(pred, val_t.cpu()), r2_global(pred, val_t.cpu())
