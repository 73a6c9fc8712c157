"""EquiMod (SimCLR + equivariance module), as re-implemented by seq-JEPA for its 3DIEBench table.

Devillers & Lefort, "EquiMod: An Equivariance Module to Improve Visual Instance Discrimination",
ICLR 2023, arXiv:2211.01244. Follows ``hafezgh/seq-jepa:seq-jepa/src/models.py`` class
``SimCLREquiMod`` (itself based on ``ADevillers/EquiMod@SimCLR+EquiMod:src/model.py``), see
docs/baselines.md §2. Two views x, y of one object with relative action a (x -> y):

    h_x, h_y = f(x), f(y)                                 (ResNet-18, 512-d; the probed representation)
    z_x, z_y = g_inv(h_x), g_inv(h_y)                     (512 -> 1024 -> 1024 -> 128, last BN affine=False)
    e_x, e_y = g_eq(h_x), g_eq(h_y)                       (same shape, separate weights)
    e^_y     = u([emb(a), e_x])                           (Linear(128+128 -> 128, no bias) + BN(affine=False))
    loss     = NT-Xent(z_x, z_y; tau_inv) + equi_factor * NT-Xent(e^_y, e_y; tau_equi)

``emb`` is seq-JEPA's action embedding (Linear(A -> 128, no bias) + BN(affine=False)), so the
predictor works for any action width A the dataset gives (4 = rotation quaternion, 6 = + hues).
Both NT-Xent terms are lightly's ``NTXentLoss`` (the 2N-way SimCLR loss EquiMod's ``src/loss.py``
writes out; tests/test_parity_equivariant.py checks they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from torch import Tensor

from baselines.common import EncoderMethod
from methods.components import ActionEmbedding, BackboneName, build_backbone, mlp
from methods.contract import Batch, DataSpec, StepOutput


@dataclass(frozen=True)
class EquiModConfig:
    """Defaults: seq-JEPA's ``SimCLREquiMod`` with its main-script flags (--temp 0.5, --equi-factor 1.0).

    Alternatives, not defaults: the official EquiMod (CIFAR10/ImageNet, 3 views) uses 2048-wide
    projectors, tau_inv 0.5 / tau_equi 0.2, lambda 1 and a Linear(p -> 128)+BN action projector on the
    full augmentation-parameter vector (``ADevillers/EquiMod@SimCLR+EquiMod:run_equimod_simclr_*.slurm``);
    SIE's ``SimCLREquiMod`` (``facebookresearch/SIE:src/models.py``) uses a hypernetwork predictor on a
    2048-d embedding with temperature 0.1.
    """

    proj_hidden: int = 1024  # seq-JEPA: 512 -> 1024 -> 1024 -> out for both projectors (official: 2048)
    inv_dim: int = 128  # seq-JEPA inv_emb_size 128
    equi_dim: int = 128  # seq-JEPA equi_emb_size 128 (official y_dim 128)
    action_emb_dim: int = 128  # seq-JEPA --act-projdim 128 (official proj_head_t_layers "128")
    temperature_inv: float = 0.5  # seq-JEPA --temp 0.5 (official temperature_z 0.5)
    temperature_equi: float = 0.5  # seq-JEPA --temp 0.5 for both terms (official temperature_y 0.2)
    equi_factor: float = 1.0  # seq-JEPA --equi-factor 1.0 (official lmbd 1)
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


def equimod_loss(z_x: Tensor, z_y: Tensor, pred_y: Tensor, e_y: Tensor, temperature_inv: float,
                 temperature_equi: float, equi_factor: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, invariant term, equivariant term) from (B, D) embeddings; seq-JEPA ``SimCLREquiMod.forward``.

    Negatives come from every data-parallel rank (seq-JEPA gathers them when distributed).
    """
    loss_inv = NTXentLoss(temperature=temperature_inv, gather_distributed=True)(z_x, z_y)
    loss_equi = NTXentLoss(temperature=temperature_equi, gather_distributed=True)(pred_y, e_y)
    return loss_inv + equi_factor * loss_equi, loss_inv, loss_equi


class EquiMod(EncoderMethod):
    name = "equimod"
    family = "equivariant"
    label = "EquiMod"
    Config = EquiModConfig
    role = "both"

    def __init__(self, cfg: EquiModConfig, spec: DataSpec) -> None:
        if spec.action_dim <= 0:
            raise ValueError("equimod conditions its predictor on the action; use a dataset with actions "
                             "(action_dim > 0)")
        super().__init__(cfg, spec)
        self.uses_actions = True
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.dim: int = self.encoder.out_dim
        # Projectors: Linear(no bias)-BN-ReLU x2, Linear(no bias), BN(affine=False) (seq-JEPA / official).
        head = dict(last_bn=True, last_bn_affine=False, last_bias=False)
        self.projector_inv = mlp([self.dim, cfg.proj_hidden, cfg.proj_hidden, cfg.inv_dim], **head)
        self.projector_equi = mlp([self.dim, cfg.proj_hidden, cfg.proj_hidden, cfg.equi_dim], **head)
        self.action_emb = ActionEmbedding(spec.action_dim, cfg.action_emb_dim)
        # Predictor "one" (official --predictor_eq_layers one): a single Linear + BN(affine=False).
        self.predictor = mlp([cfg.action_emb_dim + cfg.equi_dim, cfg.equi_dim], **head)

    def predict(self, h_x: Tensor, action: Tensor) -> Tensor:
        """Equivariant prediction e^_y (B, equi_dim) from encodings h_x (B, 512) and actions (B, A)."""
        return self.predictor(torch.cat([self.action_emb(action), self.projector_equi(h_x)], dim=1))

    def training_step(self, batch: Batch) -> StepOutput:
        views, action = self.batch_views(batch, 2), self.batch_actions(batch)[:, 0]
        # Views 0 and 1 in two encoder calls, as upstream: BatchNorm statistics are per view.
        h_x, h_y = self.encoder(views[:, 0]), self.encoder(views[:, 1])
        loss, l_inv, l_equi = equimod_loss(self.projector_inv(h_x), self.projector_inv(h_y), self.predict(h_x, action),
                                           self.projector_equi(h_y), self.cfg.temperature_inv,
                                           self.cfg.temperature_equi, self.cfg.equi_factor)
        return StepOutput(loss, {"loss": float(loss.detach()), "loss_inv": float(l_inv.detach()),
                                 "loss_equi": float(l_equi.detach())})
