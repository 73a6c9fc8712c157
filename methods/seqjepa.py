"""seq-JEPA: world modelling with a sequence of transformed views.

Ghaemi, Muller, Bakhtiari, "seq-JEPA: Autoregressive Predictive Learning of Invariant-Equivariant
World Models", NeurIPS 2025, arXiv:2505.03176. Follows ``hafezgh/seq-jepa:seq-jepa/src/models.py``
class ``SeqJEPA_Transforms`` (see docs/protocol.md §1):

    z_i   = f(x_i)                               i = 1..M   (ResNet-18, 512-d; equivariant rep.)
    tok_i = [z_i, emb(a_i)] for i < M, [z_M, 0]  (emb: Linear(A->128, no bias) + BN(affine=False))
    z_AGG = g([AGG], tok_1..tok_M)               (3-layer post-norm transformer, 4 heads; invariant rep.)
    z^_{M+1} = h([z_AGG, emb(a_M)])              (Linear-BN-ReLU-Linear, 768 -> 1024 -> 512)
    loss  = 1 - cos(z^_{M+1}, sg(f_EMA(x_{M+1})))

``a_i`` is the relative action from view i to view i+1, so the last observation token carries no
action and the predictor is told the action to the target view. No positional embedding: the
aggregator accepts any number of observations, so inference length M_val can differ from M_tr.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from methods.components import (
    ActionEmbedding,
    BackboneName,
    SequenceAggregator,
    build_backbone,
    check_actions,
    cosine_loss,
    ema_tau,
    ema_update,
    encode_views,
    make_target,
    mlp,
)
from methods.contract import Batch, DataSpec, Method, Representation, StepOutput


@dataclass(frozen=True)
class SeqJEPAConfig:
    act_cond: bool = True  # condition tokens and predictor on actions (the paper's ablation turns it off)
    action_emb_dim: int = 128  # --act-projdim 128
    layers: int = 3  # --num-enc-layers 3
    heads: int = 4  # --num-heads 4
    dropout: float = 0.1  # PyTorch default, kept by upstream
    pred_hidden: int = 1024  # --pred-hidden 1024 (<= 0: a single Linear + BN)
    ema_decay: float = 0.996  # base of the cosine EMA schedule 0.996 -> 1
    backbone: BackboneName = "resnet18"  # the paper's ResNet-18 (512-d); narrower ones for CPU runs


class SeqJEPA(Method):
    name = "seqjepa"
    family = "seq-JEPA"
    label = "seq-JEPA"
    Config = SeqJEPAConfig
    headline = {"top1": "aggregate", "rotation_r2": "encoder", "color_r2": "encoder"}

    def __init__(self, cfg: SeqJEPAConfig, spec: DataSpec) -> None:
        if cfg.act_cond and spec.action_dim <= 0:
            raise ValueError("seqjepa with act_cond=true needs a dataset with actions (action_dim > 0)")
        super().__init__(cfg, spec)
        self.uses_actions = cfg.act_cond
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.dim: int = self.encoder.out_dim
        self.target_encoder = make_target(self.encoder)
        emb = cfg.action_emb_dim if cfg.act_cond else 0
        self.width = self.dim + emb
        self.action_emb = ActionEmbedding(spec.action_dim, emb) if cfg.act_cond else None
        self.aggregator = SequenceAggregator(self.width, cfg.layers, cfg.heads, dropout=cfg.dropout)
        pred_in = self.width + emb
        if cfg.pred_hidden > 0:
            self.predictor = mlp([pred_in, cfg.pred_hidden, self.dim])
        else:
            self.predictor = mlp([pred_in, self.dim], last_bn=True, last_bias=False)

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        return seq_len + 1  # M observations + 1 target

    def representations(self) -> list[Representation]:
        return [
            Representation("encoder", self.dim, "view", "equivariant"),
            Representation("aggregate", self.width, "sequence", "invariant"),
        ]

    def _aggregate(self, z_obs: Tensor, actions: Tensor | None) -> Tensor:
        """Tokens from (B, M, D) encodings and (B, M, A) actions (the M-th is zeroed) -> z_AGG."""
        if self.action_emb is None:
            return self.aggregator(z_obs)
        b, m = z_obs.shape[:2]
        if actions is None or actions.shape[1] == 0:
            emb = z_obs.new_zeros(b, m, self.action_emb.dim)
        else:
            emb = self.action_emb(actions)
            # The last observation's action slot is zero (upstream sets it after projection).
            emb = torch.cat([emb[:, : m - 1], torch.zeros_like(emb[:, :1])], dim=1)
        return self.aggregator(torch.cat([z_obs, emb], dim=-1))

    def training_step(self, batch: Batch) -> StepOutput:
        views = batch.views
        m = views.shape[1] - 1
        if m < 1:
            raise ValueError(f"seqjepa needs at least 2 views per sample (M >= 1 observations), got {m + 1}")
        actions = check_actions(self.name, batch.actions, self.spec.action_dim, m + 1) if self.cfg.act_cond else None
        z_obs = encode_views(self.encoder, views[:, :m])
        with torch.no_grad():
            z_target = self.target_encoder(views[:, m])
        # Separate embedding call for the predictor's action (own BatchNorm batch), made before the tokens' one
        # as upstream: the order sets the BatchNorm running statistics that eval-mode aggregates use.
        pred_action = self.action_emb(actions[:, m - 1]) if self.action_emb is not None else None
        z_agg = self._aggregate(z_obs, actions)
        if pred_action is not None:
            z_agg = torch.cat([z_agg, pred_action], dim=-1)
        pred = self.predictor(z_agg)
        loss = cosine_loss(pred, z_target)
        # The loss of a predictor that ignores its input and always says the batch-mean target: a loss that
        # stays at this level means the predictions carry no view-specific information (yet).
        with torch.no_grad():
            baseline = cosine_loss(z_target.mean(0, keepdim=True).expand_as(z_target), z_target)
        logged, base = torch.stack([loss.detach(), baseline]).tolist()  # one host sync for both
        return StepOutput(loss, {"loss": logged, "baseline_loss": base})

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        z = encode_views(self.encoder, views)
        if self.cfg.act_cond and views.shape[1] > 1:
            check_actions(self.name, actions, self.spec.action_dim, views.shape[1])
            # Pad so that M observations carry M action slots; _aggregate zeroes the last one.
            actions = torch.cat([actions, torch.zeros_like(actions[:, :1])], dim=1)
        return {"encoder": z, "aggregate": self._aggregate(z, actions)}

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(self.encoder, self.target_encoder, ema_tau(step, total_steps, self.cfg.ema_decay))
