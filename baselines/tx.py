"""Transformer-augmented ("+tx") two-view baselines: the baseline's loss between sequence aggregates.

An architecture control for seq-JEPA (Ghaemi et al., arXiv:2505.03176): the same ResNet-18 followed by
the same aggregator as seq-JEPA (``methods.components.SequenceAggregator``: [AGG] token, no positional
embedding, 3 post-norm layers, 4 heads, FFN 4x, dropout 0.1, final LayerNorm), so a gap to seq-JEPA
cannot be blamed on the transformer alone. Neither the paper text we could read nor the released code
(``hafezgh/seq-jepa``) defines such variants, so this construction is ours (PROVENANCE.md):

    views 0..2L-1 of one object  ->  sequence A = views 0..L-1, sequence B = views L..2L-1
    z_i   = f(x_i)                          ResNet-18, 512-d per view ("encoder", probed for R^2)
    tok_i = z_i  or  [z_i, emb(a_i)]        act_cond: seq-JEPA tokens, last action slot zero (640-d)
    s_A   = g(tok_A),  s_B = g(tok_B)       ("aggregate", probed for top-1 at M_val views)
    loss  = Base.pair_loss(s_A, s_B)        SimCLR / BYOL / VICReg with their own heads on s

BYOL's EMA target copies the whole backbone, aggregator included. ``views_needed(L) = 2L`` (seq-JEPA
sees L + 1 views per sample), so seq_len means observations per sequence, as for seq-JEPA.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from baselines.byol import BYOL, BYOLConfig
from baselines.common import Backbone, BaselineMethod, ViewSequence, check_views
from baselines.simclr import SimCLR, SimCLRConfig
from baselines.vicreg import VICReg, VICRegConfig
from methods.components import ActionEmbedding, SequenceAggregator, backbone_dim, check_actions, encode_views
from methods.contract import Batch, DataSpec, Method, Representation, StepOutput


@dataclass(frozen=True)
class TxOptions:
    act_cond: bool = False  # tokens [z_i, emb(a_i)] as seq-JEPA (width 640); off: actions ignored (width 512)
    action_emb_dim: int = 128  # seq-JEPA --act-projdim 128
    layers: int = 3  # seq-JEPA --num-enc-layers 3
    heads: int = 4  # seq-JEPA --num-heads 4
    dropout: float = 0.1  # PyTorch default, kept by seq-JEPA


class SequencePool(nn.Module):
    """Per-view encodings z (B, L, D) [+ actions (B, L-1, A)] -> aggregate (B, width).

    With actions, token i is [z_i, emb(a_i)] and the last token's action slot is zero, as seq-JEPA's
    observation tokens (``methods/seqjepa.py``); emb = Linear(A -> 128, no bias) + BN(affine=False).
    """

    def __init__(self, action_dim: int, action_emb_dim: int, layers: int, heads: int, dropout: float,
                 dim: int = 512) -> None:
        super().__init__()
        self.action_emb = ActionEmbedding(action_dim, action_emb_dim) if action_emb_dim > 0 else None
        self.width = dim + max(action_emb_dim, 0)
        self.aggregator = SequenceAggregator(self.width, layers, heads, dropout=dropout)

    def forward(self, z: Tensor, actions: Tensor | None = None) -> Tensor:
        if self.action_emb is None:
            return self.aggregator(z)
        b, n = z.shape[:2]
        pad = z.new_zeros(b, 1, self.action_emb.dim)
        if n > 1:
            if actions is None or actions.shape[1] != n - 1:
                want = f"(B, {n - 1}, A)"
                raise ValueError(f"an action-conditioned aggregate of {n} views needs actions {want}")
            pad = torch.cat([self.action_emb(actions), pad], dim=1)
        return self.aggregator(torch.cat([z, pad], dim=-1))


class TxVariant(Method):
    """``Base`` (a two-view :class:`BaselineMethod`) on a backbone that ends in a :class:`SequencePool`."""

    Base: ClassVar[type[BaselineMethod]]
    # Classification reads the aggregate (as seq-JEPA's headline); R^2 probes the per-view encoder.
    headline = {"top1": "aggregate", "rotation_r2": "encoder", "color_r2": "encoder"}

    def __init__(self, cfg: Any, spec: DataSpec) -> None:
        """``cfg``: the variant's flat Config (the base's fields, ``backbone`` included, plus :class:`TxOptions`)."""
        if cfg.act_cond and spec.action_dim <= 0:
            raise ValueError(f"{self.name} with act_cond=true needs a dataset with actions (action_dim > 0)")
        super().__init__(cfg, spec)
        self.uses_actions = cfg.act_cond
        pool = SequencePool(spec.action_dim, cfg.action_emb_dim if cfg.act_cond else 0, cfg.layers, cfg.heads,
                            cfg.dropout, backbone_dim(cfg.backbone))
        # Hand the base its own part of the flat config.
        base_cfg = self.Base.Config(**{f.name: getattr(cfg, f.name) for f in fields(self.Base.Config)})
        self.base = self.Base(base_cfg, spec, Backbone(spec, pool, cfg.backbone))

    @property
    def pool(self) -> SequencePool:
        pool = self.base.backbone.aggregator
        assert isinstance(pool, SequencePool)
        return pool

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        return 2 * seq_len

    def representations(self) -> list[Representation]:
        return [Representation("encoder", self.base.backbone.encoder_dim, "view", "equivariant"),
                Representation("aggregate", self.pool.width, "sequence", "invariant")]

    def training_step(self, batch: Batch) -> StepOutput:
        views = check_views(self.name, batch.views, 2)
        n = views.shape[1] // 2
        if views.shape[1] != 2 * n:
            raise ValueError(f"{self.name} needs an even number of views (2 sequences), got {views.shape[1]}")
        acts_a = acts_b = None
        if self.cfg.act_cond:
            actions = check_actions(self.name, batch.actions, self.spec.action_dim, 2 * n)
            # actions[:, n - 1] links the last view of A to the first of B and belongs to neither sequence.
            acts_a, acts_b = actions[:, : n - 1], actions[:, n:]
        return self.base.pair_loss(ViewSequence(views[:, :n], acts_a), ViewSequence(views[:, n:], acts_b))

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        z = encode_views(self.base.backbone.encoder, views)
        if self.cfg.act_cond and views.shape[1] > 1:
            actions = check_actions(self.name, actions, self.spec.action_dim, views.shape[1])
        return {"encoder": z, "aggregate": self.pool(z, actions if self.cfg.act_cond else None)}

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.base.on_step_end(step, total_steps)

    def encoder_module(self) -> nn.Module:
        return self.base.backbone.encoder


@dataclass(frozen=True)
class SimCLRTxConfig(SimCLRConfig, TxOptions):
    pass


@dataclass(frozen=True)
class BYOLTxConfig(BYOLConfig, TxOptions):
    pass


@dataclass(frozen=True)
class VICRegTxConfig(VICRegConfig, TxOptions):
    pass


class SimCLRTx(TxVariant):
    name = "simclr+tx"
    family = "invariant"
    label = "SimCLR+Tx"
    Base = SimCLR
    Config = SimCLRTxConfig


class BYOLTx(TxVariant):
    name = "byol+tx"
    family = "invariant"
    label = "BYOL+Tx"
    Base = BYOL
    Config = BYOLTxConfig


class VICRegTx(TxVariant):
    name = "vicreg+tx"
    family = "invariant"
    label = "VICReg+Tx"
    Base = VICReg
    Config = VICRegTxConfig
