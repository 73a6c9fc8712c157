"""Conv-IJEPA: the paper's PLS baseline, a convolutional I-JEPA that predicts each glimpse's target alone.

seq-JEPA (Ghaemi et al. 2025, arXiv:2505.03176) compares PLS against a convolutional I-JEPA (Assran et al.,
CVPR 2023, with a ResNet-18 instead of a ViT). Follows ``hafezgh/seq-jepa:seq-jepa/src/models.py`` class
``Conv_IJEPA`` (docs/protocol.md §4, Conv-IJEPA):

    z_i  = f(x_i)                 i = 1..M observations (ResNet-18, 512-d; the probed representation)
    y_i  = g(z_i)                 projector 512 -> 2048 -> 128, BN (affine=False) on the output
    y'   = g'(f'(x_{M+1}))        EMA target encoder + projector, no gradient
    y^_i = h([emb(a_{i->M+1}), y_i])   predictor 256 -> 1024 -> 128; emb = Linear(A->128, no bias) + BN
    loss = mean_i (1 - cos(y^_i, y'))

There is no aggregator: every observation predicts the target on its own, told the displacement
a_{i->M+1} = pos_{M+1} - pos_i. Our batches carry consecutive actions a_j (view j -> j+1), so
a_{i->M+1} = sum_{j >= i} a_j: exact for additive actions (saccade positions, augmentation-parameter
differences); on 3DIEBench quaternions the sum is not the composed rotation (the paper never runs
Conv-IJEPA there). As upstream, each observation's action embedding and prediction is its own call
(own BatchNorm batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.common import EncoderMethod
from methods.components import (
    ActionEmbedding,
    BackboneName,
    build_backbone,
    cosine_loss,
    ema_tau,
    ema_update,
    encode_views,
    make_target,
    mlp,
)
from methods.contract import Batch, DataSpec, StepOutput


@dataclass(frozen=True)
class ConvIJEPAConfig:
    proj_hidden: int = 2048  # models.py Conv_IJEPA projector 512 -> 2048 -> 128
    proj_dim: int = 128
    action_emb_dim: int = 128  # --act-projdim 128
    pred_hidden: int = 1024  # --pred-hidden 1024 (scripts/script_pls.sh)
    ema_decay: float = 0.996  # --ema-decay 0.996, cosine schedule to 1
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class ConvIJEPA(EncoderMethod):
    name = "conv-ijepa"
    family = "seq-JEPA"
    label = "Conv-IJEPA"
    Config = ConvIJEPAConfig
    role = "both"
    uses_actions = True

    def __init__(self, cfg: ConvIJEPAConfig, spec: DataSpec) -> None:
        if spec.action_dim <= 0:
            raise ValueError("conv-ijepa predicts from the action to the target view; use a dataset with actions")
        if not 0.0 <= cfg.ema_decay <= 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1], got {cfg.ema_decay}")
        super().__init__(cfg, spec)
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.dim: int = self.encoder.out_dim
        self.projector = mlp([self.dim, cfg.proj_hidden, cfg.proj_dim], last_bn=True, last_bn_affine=False,
                             last_bias=False)
        self.target_encoder = make_target(self.encoder)
        self.target_projector = make_target(self.projector)
        self.action_emb = ActionEmbedding(spec.action_dim, cfg.action_emb_dim)
        self.predictor = mlp([cfg.action_emb_dim + cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim])

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        return seq_len + 1  # M observations + 1 target, as seq-JEPA

    def training_step(self, batch: Batch) -> StepOutput:
        views = self.batch_views(batch, 2)
        b, v = views.shape[:2]
        m = v - 1
        actions = self.batch_actions(batch)
        # a_{i -> M+1} = a_i + ... + a_M (reverse cumulative sum over the consecutive actions).
        to_target = actions.flip(1).cumsum(1).flip(1)  # (B, M, A)
        y = self.projector(encode_views(self.encoder, views[:, :m]).flatten(0, 1)).unflatten(0, (b, m))
        with torch.no_grad():
            target = self.target_projector(self.target_encoder(views[:, m]))
        loss = views.new_zeros(())
        for i in range(m):
            pred = self.predictor(torch.cat([self.action_emb(to_target[:, i]), y[:, i]], dim=-1))
            loss = loss + cosine_loss(pred, target)
        loss = loss / m
        return StepOutput(loss, {"loss": float(loss.detach())})

    def on_step_end(self, step: int, total_steps: int) -> None:
        tau = ema_tau(step, total_steps, self.cfg.ema_decay)
        ema_update(self.encoder, self.target_encoder, tau)
        ema_update(self.projector, self.target_projector, tau)
