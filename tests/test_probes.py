"""Known-answer tests of the probes and R^2 definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from benchmark.config import ProbeConfig
from benchmark.data.base import SequenceDataset
from benchmark.data.rotations import pair_targets, rotations
from benchmark.data.threedie import ThreeDIEBench
from benchmark.probes.bank import Bank, _draw, _every, bank_probes
from benchmark.probes.heads import linear_probe, regression_probe
from benchmark.probes.metrics import r2_global, r2_uniform, top1

FAST = ProbeConfig(epochs=60, batch_size=64, lr=1e-2, hidden=64)


def test_r2_uniform_matches_sklearn_and_global_differs_for_offset_dims():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 4, generator=g) * torch.tensor([0.5, 0.5, 0.5, 0.3]) + torch.tensor([0, 0, 0, 0.54])
    pred = y + 0.2 * torch.randn(200, 4, generator=g)
    assert r2_uniform(pred, y) == pytest.approx(r2_score(y.double().numpy(), pred.double().numpy()), abs=1e-6)
    # Global-mean R^2 counts the w-offset as explained variance, so it is larger (docs/protocol.md §5).
    ss_res = ((y - pred) ** 2).sum()
    assert r2_global(pred, y) == pytest.approx(float(1 - ss_res / ((y - y.mean()) ** 2).sum()), abs=1e-6)
    assert r2_global(pred, y) > r2_uniform(pred, y)
    assert r2_uniform(y, y) == 1.0 and r2_global(y, y) == 1.0
    assert r2_uniform(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-12)


def test_identity_features_give_r2_near_one_and_constant_features_near_zero():
    g = torch.Generator().manual_seed(1)
    t_tr, t_va = torch.randn(512, 4, generator=g), torch.randn(256, 4, generator=g)
    u, glob = regression_probe(t_tr, t_tr, t_va, t_va, "linear", FAST)
    assert u > 0.99 and glob > 0.99
    const_tr, const_va = torch.ones(512, 8), torch.ones(256, 8)
    u, glob = regression_probe(const_tr, t_tr, const_va, t_va, "mlp", FAST)
    assert -0.05 < u <= 0.01 and -0.05 < glob <= 0.01


def test_separable_features_give_top1_near_100_and_noise_near_chance():
    g = torch.Generator().manual_seed(2)
    y_tr, y_va = torch.randint(0, 5, (500,), generator=g), torch.randint(0, 5, (200,), generator=g)
    centres = torch.randn(5, 16, generator=g) * 5
    x_tr = centres[y_tr] + torch.randn(500, 16, generator=g)
    x_va = centres[y_va] + torch.randn(200, 16, generator=g)
    assert linear_probe(x_tr, y_tr, x_va, y_va, 5, FAST) > 99.0
    noise = linear_probe(torch.randn(500, 16, generator=g), y_tr, torch.randn(200, 16, generator=g), y_va, 5, FAST)
    assert noise < 45.0
    assert top1(torch.eye(3), torch.tensor([0, 1, 0])) == pytest.approx(200 / 3)


def test_probe_is_deterministic_for_a_seed():
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(3))
    t = x[:, :2] ** 2
    a = regression_probe(x, t, x, t, "mlp", ProbeConfig(epochs=3, hidden=16), seed=5)
    b = regression_probe(x, t, x, t, "mlp", ProbeConfig(epochs=3, hidden=16), seed=5)
    assert a == b and np.isfinite(a).all()


class _LatentBank(SequenceDataset):
    """Stand-in with a view bank: targets from 3DIEBench latents, as ThreeDIEBench computes them."""

    view_bank = True
    probe_targets = ThreeDIEBench.probe_targets

    def bank_targets(self, first, second):
        return pair_targets(first, second)


def _bank(n: int, k: int, seed: int, feats) -> Bank:
    rng = np.random.default_rng(seed)
    lat = np.concatenate([rng.uniform(-np.pi / 2, np.pi / 2, (n, k, 3)), rng.uniform(0, 1, (n, k, 4))], axis=2)
    labels = torch.as_tensor(rng.integers(0, 3, n))
    return Bank({"enc": feats(lat, labels)}, lat, labels)


def test_bank_draws_distinct_pairs_and_scores_every_ordered_pair():
    obj, a, b = _draw(50, 6, 3, torch.Generator().manual_seed(0), pairs=True)
    assert obj.tolist() == [i for i in range(50) for _ in range(3)] and bool((a != b).all())
    assert a.min() >= 0 and max(a.max(), b.max()) < 6
    obj, a, b = _every(2, 4, pairs=True)
    assert len(obj) == 2 * 4 * 3 and len(set(zip(obj.tolist(), a.tolist(), b.tolist(), strict=True))) == 24
    assert not bool((a == b).any())
    obj, a, b = _every(2, 4, pairs=False)
    assert obj.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and a.tolist() == [0, 1, 2, 3] * 2


def test_bank_probes_known_answers():
    """Latents (and one-hot labels) as features: colour R^2 ~ 1 and top-1 100; constant features: R^2 ~ 0."""
    def informative(lat, labels):
        onehot = torch.nn.functional.one_hot(labels, 3).float()[:, None].expand(-1, lat.shape[1], -1)
        return torch.cat([torch.from_numpy(lat).float(), 3 * onehot], dim=2)

    cfg = ProbeConfig(epochs=150, batch_size=128, lr=1e-2, hidden=64, bank_draws=4)
    tr, va = _bank(300, 6, 0, informative), _bank(60, 6, 1, informative)
    ds = _LatentBank(2, 0, True)
    out = bank_probes(tr, va, ds, "enc", 3, cfg, 0, torch.device("cpu"))
    assert out["top1"] == 100.0
    assert out["color_r2"] > 0.99 and out["color_r2_global"] > 0.99
    assert set(out) == {"top1", "rotation_r2", "rotation_r2_global", "color_r2", "color_r2_global",
                        "indiv_rotation_r2", "indiv_rotation_r2_global"}
    const = lambda lat, labels: torch.ones(*lat.shape[:2], 5)  # noqa: E731
    out = bank_probes(_bank(300, 6, 0, const), _bank(60, 6, 1, const), ds, "enc", 3, cfg, 0, torch.device("cpu"))
    assert -0.05 < out["color_r2"] <= 0.01 and -0.05 < out["rotation_r2"] <= 0.01


def test_bank_rotation_probe_recovers_rotations_from_rotation_matrix_features():
    """Known answer for the rotation probes: each view's rotation matrix as its feature -> R^2 near 1."""
    def rotmat(lat, labels):
        return torch.from_numpy(rotations(lat.reshape(-1, 7)).as_matrix().reshape(*lat.shape[:2], 9)).float()

    cfg = ProbeConfig(epochs=100, hidden=256)
    out = bank_probes(_bank(256, 8, 0, rotmat), _bank(32, 8, 1, rotmat), _LatentBank(2, 0, True), "enc", 3, cfg, 0,
                      torch.device("cpu"))
    assert out["rotation_r2"] > 0.9 and out["indiv_rotation_r2"] > 0.9
