"""SEN (symmetric embedding network), contrastive variant, as re-implemented by seq-JEPA.

Park, Biza, Zhao, van de Meent, Walters, "Learning Symmetric Embeddings for Equivariant World Models",
ICML 2022, arXiv:2204.11371. seq-JEPA's 3DIEBench table uses its own re-implementation
``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``SEN_Contrastive`` (docs/baselines.md §4),
which this file follows. Two views x, y of one object with relative action a (x -> y):

    h_x, h_y = f(x), f(y)                   (ResNet-18, 512-d; the probed representation)
    e_x, e_y = g(h_x), g(h_y)               (512 -> 2048 -> 2048 -> 2048, Linear(no bias)-BN-ReLU, last BN affine=False)
    e^_y     = u([emb(a), e_x])             (Linear(2048+128 -> 2048, no bias) + BN(affine=False))
    loss     = NT-Xent(e^_y, e_y; tau)      (tau 0.5; lightly ``NTXentLoss``)

Unlike EquiMod there is no invariant term: the only objective is predicting the transformed view's
embedding from the action, so the encoder is pushed towards equivariance.
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
class SENConfig:
    """Defaults: seq-JEPA ``SEN_Contrastive`` with its main-script flags.

    The original SEN (Park et al. 2022) trains world models on low-dimensional environments with a
    C-SWM-style hinge/contrastive energy loss; only seq-JEPA's NT-Xent adaptation to images is
    implemented here, because that is what the seq-JEPA and ContextSSL 3DIEBench tables compare with.
    """

    proj_dim: int = 2048  # seq-JEPA equi_emb_size 2048 (hidden and output widths)
    action_emb_dim: int = 128  # seq-JEPA --act-projdim 128 (--learn-act-emb 1)
    temperature: float = 0.5  # seq-JEPA --temp 0.5
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


def sen_loss(pred_y: Tensor, e_y: Tensor, temperature: float) -> Tensor:
    """NT-Xent between predicted and true embeddings of the second view, (B, D) each; negatives from every
    data-parallel rank (seq-JEPA gathers them when distributed)."""
    return NTXentLoss(temperature=temperature, gather_distributed=True)(pred_y, e_y)


class SEN(EncoderMethod):
    name = "sen"
    family = "equivariant"
    label = "SEN"
    Config = SENConfig
    role = "equivariant"

    def __init__(self, cfg: SENConfig, spec: DataSpec) -> None:
        if spec.action_dim <= 0:
            raise ValueError("sen conditions its predictor on the action; use a dataset with actions (action_dim > 0)")
        super().__init__(cfg, spec)
        self.uses_actions = True
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.dim: int = self.encoder.out_dim
        head = dict(last_bn=True, last_bn_affine=False, last_bias=False)
        self.projector = mlp([self.dim, cfg.proj_dim, cfg.proj_dim, cfg.proj_dim], **head)
        self.action_emb = ActionEmbedding(spec.action_dim, cfg.action_emb_dim)
        self.predictor = mlp([cfg.action_emb_dim + cfg.proj_dim, cfg.proj_dim], **head)

    def predict(self, h_x: Tensor, action: Tensor) -> Tensor:
        """Predicted embedding of the second view (B, proj_dim) from h_x (B, 512) and actions (B, A)."""
        return self.predictor(torch.cat([self.action_emb(action), self.projector(h_x)], dim=1))

    def training_step(self, batch: Batch) -> StepOutput:
        views, action = self.batch_views(batch, 2), self.batch_actions(batch)[:, 0]
        # Views 0 and 1 in two encoder calls, as upstream: BatchNorm statistics are per view.
        h_x, h_y = self.encoder(views[:, 0]), self.encoder(views[:, 1])
        loss = sen_loss(self.predict(h_x, action), self.projector(h_y), self.cfg.temperature)
        return StepOutput(loss, {"loss": float(loss.detach())})
