"""k-nearest-neighbour top-1 on frozen features: no head to fit, so it reads the geometry of the representation.

Weighted cosine kNN of Wu et al. 2018 (https://arxiv.org/abs/1805.01978) as lightly implements it
(``lightly.utils.benchmarking.knn_predict``) and as solo-learn and lightly's benchmarks report it:
features are L2-normalised, the ``k`` most similar training features vote for their class with weight
``exp(similarity / t)``. Defaults k = 200, t = 0.1 (``probe.knn_k`` / ``probe.knn_t``; Wu et al.,
lightly, solo-learn). The online probes (benchmark/probes/online.py) and the final probes
(benchmark/probes/suite.py, ``knn_top1`` in result.json) both call :func:`knn_top1`.
"""

from __future__ import annotations

import torch
from lightly.utils.benchmarking import knn_predict
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

# Similarity entries per query chunk: bounds the (queries, bank) matrix to 256 MiB of float32, so 20k
# held-out queries against a 160k bank (3DIEBench's cached probe samples) never need a 13 GB matrix.
MAX_SIM_ENTRIES = 1 << 26


@torch.no_grad()
def knn_top1(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, num_classes: int, k: int = 200,
             t: float = 0.1, device: torch.device | None = None) -> float:
    """Held-out top-1 (%) of cosine kNN: ``val_x`` (Nv, D) classified by ``train_x`` (N, D) with labels ``train_y``.

    ``k`` is capped at N. Computed on ``device`` (default: the features'), in chunks of queries.
    """
    if train_x.shape[0] == 0 or val_x.shape[0] == 0:
        raise ValueError(f"kNN needs training and held-out features, got {train_x.shape[0]} and {val_x.shape[0]}")
    dev = device or train_x.device
    bank = F.normalize(train_x.to(dev, torch.float32), dim=1).T.contiguous()  # (D, N), as knn_predict wants
    labels = train_y.to(dev, torch.long)
    k = min(k, bank.shape[1])
    chunk = max(1, MAX_SIM_ENTRIES // bank.shape[1])
    correct = 0
    for i in range(0, val_x.shape[0], chunk):
        q = F.normalize(val_x[i:i + chunk].to(dev, torch.float32), dim=1)
        pred = knn_predict(q, bank, labels, num_classes, knn_k=k, knn_t=t)[:, 0]
        correct += int((pred.cpu() == val_y[i:i + chunk].cpu()).sum())
    return 100.0 * correct / val_x.shape[0]
