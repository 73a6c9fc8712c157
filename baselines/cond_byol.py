"""Conditional BYOL: BYOL whose predictor is told the action between the two views.

Defined by seq-JEPA's code (no separate paper or official repository is known to us):
``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``BYOL_Conditional``, row "Conditional BYOL" of
Table 1 of Ghaemi et al., arXiv:2505.03176 (docs/baselines.md §4). BYOL: Grill et al., arXiv:2006.07733.

    y_1   = g(f(x_1))                       f ResNet-18 (512-d, probed); g 512 -> 2048 -> 128, last BN
                                            affine=False
    y^_2  = q([emb(a_12), y_1])             emb Linear(A -> 128, no bias) + BN(affine=False);
                                            q 256 -> 2048 -> 128 (action first, as upstream)
    loss  = 2 - 2 cos(y^_2, g'(f'(x_2)))    one direction only (view 1 -> view 2); g', f' EMA targets

a_12 = ``batch.actions[:, 0]``, the relative action from view 0 to view 1 (upstream rel_latents[:, 0]).
The target moves only in :meth:`on_step_end` (cosine tau schedule, as BYOL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity

from baselines.common import BaselineMethod
from methods.components import ActionEmbedding, BackboneName, ema_tau, ema_update, make_target, mlp
from methods.contract import Batch, DataSpec, StepOutput


@dataclass(frozen=True)
class CondBYOLConfig:
    proj_hidden: int = 2048  # models.py BYOL_Conditional projector 512-2048-128
    proj_dim: int = 128
    action_emb_dim: int = 128  # --act-projdim 128
    pred_hidden: int = 2048  # predictor (128 + 128)-2048-128
    ema_decay: float = 0.996  # --ema-decay 0.996, cosine schedule to 1
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class CondBYOL(BaselineMethod):
    name = "cond-byol"
    family = "equivariant"
    label = "Conditional BYOL"
    Config = CondBYOLConfig
    role = "equivariant"  # Table 1 lists it among the equivariant methods

    def __init__(self, cfg: CondBYOLConfig, spec: DataSpec) -> None:
        if spec.action_dim <= 0:
            raise ValueError("cond-byol conditions its predictor on actions; use a dataset with actions")
        if not 0.0 <= cfg.ema_decay <= 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1], got {cfg.ema_decay}")
        super().__init__(cfg, spec)
        self.uses_actions = True
        self.projector = mlp([self.backbone.dim, cfg.proj_hidden, cfg.proj_dim],
                             last_bias=False, last_bn=True, last_bn_affine=False)
        self.action_emb = ActionEmbedding(spec.action_dim, cfg.action_emb_dim)
        self.predictor = mlp([cfg.action_emb_dim + cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim])
        self.target_backbone = make_target(self.backbone)
        self.target_projector = make_target(self.projector)
        self.neg_cos = NegativeCosineSimilarity()

    def training_step(self, batch: Batch) -> StepOutput:
        views, actions = self.batch_views(batch, 2), self.batch_actions(batch)
        y1 = self.projector(self.backbone(views[:, 0]))
        pred = self.predictor(torch.cat([self.action_emb(actions[:, 0]), y1], dim=1))
        with torch.no_grad():
            t2 = self.target_projector(self.target_backbone(views[:, 1]))
        loss = 2 + 2 * self.neg_cos(pred, t2)  # 2 - 2 cos
        return StepOutput(loss, {"loss": float(loss.detach())})

    def on_step_end(self, step: int, total_steps: int) -> None:
        tau = ema_tau(step, total_steps, self.cfg.ema_decay)
        ema_update(self.backbone, self.target_backbone, tau)
        ema_update(self.projector, self.target_projector, tau)
