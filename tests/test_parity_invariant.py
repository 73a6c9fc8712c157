"""Parity of the invariant baselines' losses with the authors' formulations, written out here.

Each reference below is transcribed from the paper / upstream file it names (not from lightly), then
compared on fixed tensors with the loss function the adapter uses. The adapters themselves (layers, loss,
encoder gradient) are compared with the authors' classes in tests/test_parity_upstream.py; the last tests
here check behaviour that comparison does not reach (EMA schedule, action use, the +tx variants), with the
ResNet swapped for ``Flatten`` so that the "views" (B, V, D, 1, 1) are fixed feature vectors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import Tensor, nn

from baselines.byol import BYOL, BYOLConfig
from baselines.common import Backbone, vicreg_terms
from baselines.cond_byol import CondBYOL, CondBYOLConfig
from baselines.tx import SimCLRTx, SimCLRTxConfig
from baselines.vicreg_traj import trajectory_loss
from methods.components import RESNET18_DIM
from methods.contract import Batch, DataSpec

B, D = 8, RESNET18_DIM
SPEC = DataSpec(image_size=16, action_dim=4, num_classes=3)


def fixed(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def as_views(*feats: Tensor) -> Tensor:
    """Feature vectors (B, D) -> "views" (B, V, D, 1, 1) that a Flatten encoder maps back."""
    return torch.stack(feats, dim=1)[..., None, None]


def flatten_encoders(method: nn.Module) -> None:
    """Swap every ResNet in ``method`` (online and EMA target) for Flatten: features in, features out."""
    for mod in list(method.modules()):
        if isinstance(mod, Backbone):
            mod.encoder = nn.Flatten()


# ---- references, transcribed -------------------------------------------------------------------

def ref_ntxent(z1: Tensor, z2: Tensor, tau: float) -> Tensor:
    """SimCLR (Chen et al. 2020, Alg. 1) = seq-JEPA models.py SimCLR.NTXent_loss + CrossEntropyLoss:
    l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), mean over all 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / tau
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(torch.exp(sim[i, k]) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(sim[i, j]) / denom)
    return total / (2 * n)


def off_diagonal(m: Tensor) -> Tensor:
    """facebookresearch/vicreg main_vicreg.py off_diagonal."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def ref_vicreg(x: Tensor, y: Tensor, sim: float = 25.0, std: float = 25.0, cov: float = 1.0) -> Tensor:
    """facebookresearch/vicreg main_vicreg.py VICReg.forward (single GPU)."""
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    n, d = x.shape
    cov_x, cov_y = (x.T @ x) / (n - 1), (y.T @ y) / (n - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    return sim * repr_loss + std * std_loss + cov * cov_loss


def var_hinge(x: Tensor) -> float:
    return float(F.relu(1 - torch.sqrt(x.var(dim=0) + 1e-4)).mean())


def ref_byol_pair(p: Tensor, z: Tensor) -> Tensor:
    """BYOL (Grill et al. 2020, eq. 2): || p/|p| - z/|z| ||^2, mean over the batch (= 2 - 2 cos)."""
    return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()


def ref_traj(y_l: Tensor, y_c: Tensor, y_r: Tensor) -> Tensor:
    """seq-JEPA models.py VICReg_Traj.forward, trajectory term (unnormalised y_c, as released)."""
    v1, v2 = y_c - y_l, y_r - y_c
    u1 = v1 - torch.einsum("bd,bd->b", v1, y_c)[:, None] * y_c
    u2 = v2 - torch.einsum("bd,bd->b", v2, y_c)[:, None] * y_c
    cos = torch.einsum("bd,bd->b", u1, u2) / (u1.norm(dim=1) * u2.norm(dim=1))
    return -cos.mean()


# ---- loss functions ----------------------------------------------------------------------------

def test_ntxent_matches_simclr_formula_and_known_answer() -> None:
    z1, z2 = fixed(B, 32, seed=1), fixed(B, 32, seed=2)
    assert NTXentLoss(temperature=0.5)(z1, z2).item() == pytest.approx(ref_ntxent(z1, z2, 0.5).item(), rel=1e-5)
    # Identical orthonormal views: positive sim 1, the 2N-2 = 6 negatives 0 -> log(1 + 6 e^{-1/tau}).
    eye = torch.eye(4)
    assert NTXentLoss(temperature=0.5)(eye, eye).item() == pytest.approx(math.log(1 + 6 * math.exp(-2)), rel=1e-6)


def test_vicreg_terms_match_main_vicreg() -> None:
    x, y = fixed(B, 64, seed=3), fixed(B, 64, seed=4) * 0.3 + 1.0
    inv, var, cov = vicreg_terms(x, y)
    assert (25 * inv + 25 * var + cov).item() == pytest.approx(ref_vicreg(x, y).item(), rel=1e-5)
    # Known answers: the 7 non-constant columns of a Sylvester-Hadamard matrix are centred, orthogonal,
    # with variance 8/7 > 1, so the variance hinge and the covariance term vanish; equal views: no MSE.
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    hadamard = torch.kron(torch.kron(h2, h2), h2)[:, 1:]  # (8, 7)
    inv, var, cov = vicreg_terms(hadamard, hadamard)
    assert (inv.item(), var.item()) == (0.0, 0.0) and cov.item() == pytest.approx(0.0, abs=1e-12)
    assert vicreg_terms(x, x * 0)[1].item() == pytest.approx((1 - math.sqrt(1e-4)) / 2 + 0.5 * var_hinge(x))


def test_trajectory_term_matches_upstream_and_rewards_straight_paths() -> None:
    y_l, y_c, y_r = fixed(B, 16, seed=6), fixed(B, 16, seed=7), fixed(B, 16, seed=8)
    assert trajectory_loss(y_l, y_c, y_r).item() == pytest.approx(ref_traj(y_l, y_c, y_r).item(), rel=1e-5)
    # On the unit sphere a great-circle arc l -> c -> r is straight: cos(u1, u2) = 1, loss -1.
    t = torch.tensor([-0.3, 0.0, 0.3])
    arc = torch.stack([torch.cos(t), torch.sin(t), torch.zeros(3)], dim=1)  # (3, 3) points on a circle
    l_, c_, r_ = (arc[i].expand(2, 3) for i in range(3))
    assert trajectory_loss(l_, c_, r_).item() == pytest.approx(-1.0, abs=1e-6)
    # normalize=True makes the term scale-free (upstream's is not: the y_c projection dominates).
    assert trajectory_loss(50 * l_, 50 * c_, 50 * r_, normalize=True).item() == pytest.approx(-1.0, abs=1e-6)
    assert trajectory_loss(50 * l_, 50 * c_, 50 * r_).item() > 0.99


# ---- behaviour the upstream parity tests (tests/test_parity_upstream.py) do not cover ---------------

def test_byol_ema_follows_byol_schedule() -> None:
    """Target update after step k of K (k from 1): tau = 1 - (1 - tau_base)(cos(pi (k - 1) / (K - 1)) + 1) / 2,
    BYOL sec. 3.2's cosine over the K updates (methods.components.ema_tau, shared with seq-JEPA): the first
    update uses tau_base, the last 1; on encoder and projector (seq-JEPA updates per epoch instead)."""
    torch.manual_seed(0)
    m = BYOL(BYOLConfig(), SPEC)
    online, target = m.projector[0].weight, m.target_projector[0].weight
    with torch.no_grad():
        online.add_(1.0)
    before = target.detach().clone()
    k, total = 3, 10
    tau = 1 - (1 - 0.996) * (math.cos(math.pi * (k - 1) / (total - 1)) + 1) / 2
    enc_before = m.target_backbone.encoder.conv1.weight.detach().clone()
    with torch.no_grad():
        m.backbone.encoder.conv1.weight.mul_(2.0)
    m.on_step_end(k, total)
    assert torch.allclose(target, tau * before + (1 - tau) * online.detach(), atol=1e-6)
    enc_online = m.backbone.encoder.conv1.weight.detach()
    assert torch.allclose(m.target_backbone.encoder.conv1.weight, tau * enc_before + (1 - tau) * enc_online,
                          atol=1e-6)


def test_cond_byol_loss_depends_on_the_action() -> None:
    torch.manual_seed(0)
    m = CondBYOL(CondBYOLConfig(), SPEC)
    flatten_encoders(m)
    h1, h2, a = fixed(B, D, seed=19), fixed(B, D, seed=20), fixed(B, 1, 4, seed=21)
    loss = m.training_step(Batch(as_views(h1, h2), a, torch.zeros(B))).loss
    # A per-sample change (the action embedding's BatchNorm removes shifts common to the batch).
    other = m.training_step(Batch(as_views(h1, h2), a.flip(0), torch.zeros(B))).loss
    assert other.item() != pytest.approx(loss.item(), rel=1e-6)


def test_tx_variant_reads_two_sequences_and_only_their_own_actions() -> None:
    """+tx has no upstream code: views 0..L-1 and L..2L-1 form the two sequences; the action linking them
    belongs to neither, an in-sequence action does change the loss."""
    torch.manual_seed(0)
    m = SimCLRTx(SimCLRTxConfig(act_cond=True, dropout=0.0), SPEC)
    flatten_encoders(m)
    hs = [fixed(B, D, seed=s) for s in range(30, 34)]  # 2 sequences of 2 views
    acts = fixed(B, 3, 4, seed=34)
    loss = m.training_step(Batch(as_views(*hs), acts, torch.zeros(B))).loss
    assert torch.isfinite(loss) and m.pool.width == D + 128
    linked = acts.clone()
    linked[:, 1] = fixed(B, 4, seed=35)
    assert m.training_step(Batch(as_views(*hs), linked, torch.zeros(B))).loss.item() == pytest.approx(
        loss.item(), rel=1e-6)
    inside = acts.clone()
    inside[:, 0] = fixed(B, 4, seed=36)
    assert m.training_step(Batch(as_views(*hs), inside, torch.zeros(B))).loss.item() != pytest.approx(
        loss.item(), rel=1e-6)
    # Swapping the two sequences leaves the symmetric NT-Xent unchanged; mixing their views does not.
    swapped = m.training_step(Batch(as_views(hs[2], hs[3], hs[0], hs[1]), acts[:, [2, 1, 0]], torch.zeros(B))).loss
    assert swapped.item() == pytest.approx(loss.item(), rel=1e-5)
    mixed = m.training_step(Batch(as_views(hs[0], hs[2], hs[1], hs[3]), acts, torch.zeros(B))).loss
    assert mixed.item() != pytest.approx(loss.item(), rel=1e-4)
