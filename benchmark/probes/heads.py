"""Probe heads trained on frozen, cached features; scored on the held-out split at the final epoch.

Protocol (docs/3diebench.md §4, docs/protocol.md §5): Adam lr 1e-3, wd 0, batch 256; linear classifier;
MLP in -> 1024 -> 1024 -> out (ReLU) for rotations; linear head for colour. The encoder is frozen in
eval mode (Decision 4), so no BatchNorm statistics move during probing. No test-set selection:
the reported number is the last epoch's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from benchmark.config import ProbeConfig
from benchmark.probes.metrics import r2_global, r2_uniform, top1


def make_head(kind: str, d_in: int, d_out: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


EpochData = Callable[[int], tuple[Tensor, Tensor]]  # probe epoch -> (inputs, targets) drawn for it


def fit_head(head: nn.Module, data: EpochData, loss_fn, cfg: ProbeConfig, seed: int) -> nn.Module:
    """Adam on ``data(epoch)`` for ``cfg.epochs`` epochs, shuffled minibatches; the head in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dev = next(head.parameters()).device
    head.train()
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
    head.eval()
    return head


@torch.no_grad()
def predict(head: nn.Module, x: Tensor, batch: int = 4096) -> Tensor:
    """Head outputs for ``x`` (on any device), computed on the head's device, returned on the CPU."""
    dev = next(head.parameters()).device
    return torch.cat([head(x[i:i + batch].to(dev)).float().cpu() for i in range(0, x.shape[0], batch)])


def linear_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, num_classes: int,
                 cfg: ProbeConfig, seed: int = 0, device: torch.device | None = None) -> float:
    """Linear classifier on frozen features -> held-out top-1 (%). Trains on ``device`` (default: the features')."""
    torch.manual_seed(seed)
    head = make_head("linear", train_x.shape[1], num_classes, cfg.hidden).to(device or train_x.device)
    fit_head(head, lambda epoch: (train_x, train_y), nn.functional.cross_entropy, cfg, seed)
    return top1(predict(head, val_x), val_y.cpu())


def regression_probe(train_x: Tensor, train_t: Tensor, val_x: Tensor, val_t: Tensor, kind: str,
                     cfg: ProbeConfig, seed: int = 0, device: torch.device | None = None) -> tuple[float, float]:
    """MSE-trained head on frozen features -> held-out (R^2 uniform average, R^2 global mean)."""
    torch.manual_seed(seed)
    head = make_head(kind, train_x.shape[1], train_t.shape[1], cfg.hidden).to(device or train_x.device)
    fit_head(head, lambda epoch: (train_x, train_t), nn.functional.mse_loss, cfg, seed)
    pred = predict(head, val_x)
    return r2_uniform(pred, val_t.cpu()), r2_global(pred, val_t.cpu())
