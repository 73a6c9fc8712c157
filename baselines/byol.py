"""BYOL: bootstrapping an invariant representation from an EMA target network.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, arXiv:2006.07733 (official code:
google-deepmind/deepmind-research byol/). This adapter follows seq-JEPA's re-implementation used for
its 3DIEBench table, ``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``BYOL`` (docs/baselines.md §4):

    y_i  = g(f(x_i))          f ResNet-18 (512-d, probed); g 512 -> 2048 -> 128, last BN affine=False
    p_i  = q(y_i)             q 128 -> 2048 -> 128
    y'_i = g'(f'(x_i))        EMA target (encoder + projector), no gradient
    loss = (2 - 2 cos(p_1, y'_2)) + (2 - 2 cos(p_2, y'_1))      symmetric, as the BYOL paper

The target moves only in :meth:`on_step_end`: tau = 1 - (1 - 0.996)(cos(pi k / K) + 1) / 2 per step
(BYOL's schedule; upstream applies it per epoch). Cosines use lightly's ``NegativeCosineSimilarity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from torch import Tensor

from baselines.common import Backbone, BaselineMethod, ViewSequence
from methods.components import BackboneName, ema_tau, ema_update, make_target, mlp
from methods.contract import DataSpec, StepOutput


@dataclass(frozen=True)
class BYOLConfig:
    proj_hidden: int = 2048  # seq-JEPA models.py BYOL projector 512-2048-128
    proj_dim: int = 128
    pred_hidden: int = 2048  # predictor 128-2048-128
    ema_decay: float = 0.996  # --ema-decay 0.996, cosine schedule to 1 (BYOL paper)
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class BYOL(BaselineMethod):
    name = "byol"
    family = "invariant"
    label = "BYOL"
    Config = BYOLConfig

    def __init__(self, cfg: BYOLConfig, spec: DataSpec, backbone: Backbone | None = None) -> None:
        if not 0.0 <= cfg.ema_decay <= 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1], got {cfg.ema_decay}")
        super().__init__(cfg, spec, backbone)
        self.projector = mlp([self.backbone.dim, cfg.proj_hidden, cfg.proj_dim],
                             last_bias=False, last_bn=True, last_bn_affine=False)
        self.predictor = mlp([cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim])
        self.target_backbone = make_target(self.backbone)
        self.target_projector = make_target(self.projector)
        self.neg_cos = NegativeCosineSimilarity()

    def pair_loss(self, x1: Tensor | ViewSequence, x2: Tensor | ViewSequence) -> StepOutput:
        p1 = self.predictor(self.projector(self.backbone(x1)))
        p2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():  # target in train mode (batch-statistics BN), as upstream
            t1 = self.target_projector(self.target_backbone(x1))
            t2 = self.target_projector(self.target_backbone(x2))
        # 2 - 2 cos = 2 + 2 * (-cos): BYOL's normalised MSE, summed over both directions.
        loss = (2 + 2 * self.neg_cos(p1, t2)) + (2 + 2 * self.neg_cos(p2, t1))
        return StepOutput(loss, {"loss": float(loss.detach())})

    def on_step_end(self, step: int, total_steps: int) -> None:
        tau = ema_tau(step, total_steps, self.cfg.ema_decay)
        ema_update(self.backbone, self.target_backbone, tau)
        ema_update(self.projector, self.target_projector, tau)
