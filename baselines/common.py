"""Blocks shared by the baseline adapters: a swappable backbone, MLP heads, the VICReg terms.

Every baseline owns a :class:`Backbone`. For the two-view baselines it is the ResNet-18 alone
(image (B, C, H, W) -> (B, 512)); the "+tx" variants (``baselines/tx.py``) hand the same adapter a
backbone that also holds a sequence aggregator (:class:`ViewSequence` -> (B, width)). Because the
loss code only ever calls ``self.backbone(x)``, and EMA targets deep-copy ``self.backbone``, one
adapter serves both without knowing which it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from methods.components import build_backbone, encode_views
from methods.contract import Batch, DataSpec, Method, Representation, RepRole, StepOutput

# Two-view baselines are probed on the 512-d encoder output only (seq-JEPA models.py add_probes:
# res_classifier on view 1, regressors on concat(view 1, view 2)).
ENCODER_HEADLINE = {"top1": "encoder", "rotation_r2": "encoder", "color_r2": "encoder"}


@dataclass(frozen=True)
class ViewSequence:
    """Input of a sequence backbone: views (B, L, C, H, W) and in-sequence actions (B, L-1, A) or None."""

    views: Tensor
    actions: Tensor | None = None


class Backbone(nn.Module):
    """A ResNet (``methods.components.build_backbone(name)``, D = 512 for the paper's ResNet-18), optionally
    followed by an aggregator.

    Without ``aggregator``: x (B, C, H, W) -> (B, D).
    With one (a module with a ``width`` attribute, called as ``aggregator(z, actions)`` on per-view
    encodings z (B, L, D)): :class:`ViewSequence` -> (B, width).
    """

    def __init__(self, spec: DataSpec, aggregator: nn.Module | None = None, name: str = "resnet18") -> None:
        super().__init__()
        self.encoder = build_backbone(name, spec.small_images)
        self.encoder_dim: int = self.encoder.out_dim
        self.aggregator = aggregator
        self.dim: int = int(aggregator.width) if aggregator is not None else self.encoder_dim

    def forward(self, x: Tensor | ViewSequence) -> Tensor:
        if self.aggregator is None:
            if not isinstance(x, Tensor):
                raise TypeError("a backbone without aggregator takes an image batch (B, C, H, W)")
            return self.encoder(x)
        if not isinstance(x, ViewSequence):
            raise TypeError("a backbone with an aggregator takes a ViewSequence")
        return self.aggregator(encode_views(self.encoder, x.views), x.actions)


def mlp_head(dims: list[int], *, hidden_bias: bool = False, last_bias: bool = True,
             last_bn: bool = False, last_bn_affine: bool = True) -> ProjectionHead:
    """Linear-BN-ReLU blocks then a last Linear (+ optional BN), as lightly ``ProjectionHead`` blocks.

    ``dims`` [d0, ..., dn]; the bias flags are explicit because upstream heads differ (VICReg keeps
    biases before BN, SimCLR/BYOL drop them) and lightly's default ties bias to the absence of BN.
    """
    blocks: list[tuple[int, int, nn.Module | None, nn.Module | None, bool]] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if i < len(dims) - 2:
            blocks.append((a, b, nn.BatchNorm1d(b), nn.ReLU(inplace=True), hidden_bias))
        else:
            norm = nn.BatchNorm1d(b, affine=last_bn_affine) if last_bn else None
            blocks.append((a, b, norm, None, last_bias))
    return ProjectionHead(blocks)


def vicreg_terms(za: Tensor, zb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """VICReg's (invariance, variance, covariance) terms of embeddings (B, D), as in
    ``facebookresearch/vicreg:main_vicreg.py`` VICReg.forward (also lightly ``VICRegLoss``):
    MSE(za, zb); mean hinge(1 - sqrt(var + 1e-4)) averaged over both branches; sum of squared
    off-diagonal covariances / D, summed over both branches. Weighting is left to the caller.
    """
    inv = invariance_loss(za, zb)
    var = 0.5 * (variance_loss(za) + variance_loss(zb))
    cov = covariance_loss(za) + covariance_loss(zb)
    return inv, var, cov


def check_views(name: str, views: Tensor, need: int) -> Tensor:
    """Fail clearly on a batch with fewer views than a method consumes."""
    if views.ndim != 5 or views.shape[1] < need:
        raise ValueError(f"{name} needs views of shape (B, >= {need}, C, H, W), got {tuple(views.shape)}")
    return views


class BaselineMethod(Method):
    """Shared part of the baselines: probes read the encoder output of every view.

    Subclasses build ``self.backbone`` (a :class:`Backbone`) and either implement
    :meth:`pair_loss` (two-view methods: the default ``training_step`` applies it to views 0 and 1,
    and ``baselines/tx.py`` can wrap them) or override ``training_step``.
    """

    Config: ClassVar[type]  # frozen dataclass of the method's options (registry: ``model.*``)
    headline = ENCODER_HEADLINE
    role: ClassVar[RepRole] = "invariant"
    backbone: Backbone

    def pair_loss(self, x1: Tensor | ViewSequence, x2: Tensor | ViewSequence) -> StepOutput:
        """The method's loss between two backbone inputs (images or view sequences)."""
        raise NotImplementedError(f"{self.name} has no action-free two-view loss")

    def training_step(self, batch: Batch) -> StepOutput:
        views = check_views(self.name, batch.views, 2)
        return self.pair_loss(views[:, 0], views[:, 1])

    def representations(self) -> list[Representation]:
        return [Representation("encoder", self.backbone.encoder_dim, "view", self.role)]

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        return {"encoder": encode_views(self.backbone.encoder, views)}

    def encoder_module(self) -> nn.Module:
        return self.backbone.encoder
