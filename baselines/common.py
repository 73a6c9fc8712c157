"""Blocks shared by the baseline adapters: the encoder-only base class, a swappable backbone, the VICReg
terms and the cross-rank gather of the batch-statistics losses.

Every baseline owns a :class:`Backbone`. For the two-view baselines it is the ResNet-18 alone
(image (B, C, H, W) -> (B, 512)); the "+tx" variants (``baselines/tx.py``) hand the same adapter a
backbone that also holds a sequence aggregator (:class:`ViewSequence` -> (B, width)). Because the
loss code only ever calls ``self.backbone(x)``, and EMA targets deep-copy ``self.backbone``, one
adapter serves both without knowing which it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from lightly.utils.dist import gather
from torch import Tensor, nn

from methods.components import build_backbone, check_actions, encode_views
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


def gather_rows(x: Tensor) -> Tensor:
    """``x`` (b, ...) of every data-parallel rank, concatenated in rank order (N b, ...); ``x`` itself
    without a process group.

    lightly's ``GatherLayer``: the backward pass sums the gradient over ranks and returns each rank its
    rows, so with DDP's gradient averaging the update equals the single-process one on the global batch
    (as SIE's ``FullGatherLayer``, ``facebookresearch/SIE:src/models.py`` 1688-1704).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(gather(x), dim=0)


def vicreg_terms(za: Tensor, zb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """VICReg's (invariance, variance, covariance) terms of embeddings (B, D), as in
    ``facebookresearch/vicreg:main_vicreg.py`` VICReg.forward (also lightly ``VICRegLoss``):
    MSE(za, zb); mean hinge(1 - sqrt(var + 1e-4)) averaged over both branches; sum of squared
    off-diagonal covariances / D, summed over both branches. Weighting is left to the caller.

    Under data parallelism the variance and covariance terms see the global batch (:func:`gather_rows`,
    as main_vicreg.py, seq-JEPA's ``gather_from_all`` and lightly ``VICRegLoss(gather_distributed=True)``);
    the invariance term is per-sample, so DDP's averaging of the ranks' means already gives the global mean.
    """
    inv = invariance_loss(za, zb)
    za, zb = gather_rows(za), gather_rows(zb)
    var = 0.5 * (variance_loss(za) + variance_loss(zb))
    cov = covariance_loss(za) + covariance_loss(zb)
    return inv, var, cov


def check_views(name: str, views: Tensor, need: int) -> Tensor:
    """Fail clearly on a batch with fewer views than a method consumes."""
    if views.ndim != 5 or views.shape[1] < need:
        raise ValueError(f"{name} needs views of shape (B, >= {need}, C, H, W), got {tuple(views.shape)}")
    return views


class EncoderMethod(Method):
    """Base of the baselines whose only representation is the ResNet output of each view.

    seq-JEPA's baseline protocol (``hafezgh/seq-jepa:seq-jepa/src/models.py`` ``add_probes``): every probe
    reads the per-view encoder output (classifier on one view, regressors on the concatenation of two), so
    every headline metric reads ``encoder``. Subclasses keep their ResNet at ``self.encoder`` or override
    :meth:`encoder_module`; ``role`` says what the representation is trained to be.
    """

    headline: ClassVar[dict[str, str]] = ENCODER_HEADLINE
    role: ClassVar[RepRole] = "invariant"

    @property
    def encoder_dim(self) -> int:
        return int(self.encoder_module().out_dim)

    def representations(self) -> list[Representation]:
        return [Representation("encoder", self.encoder_dim, "view", self.role)]

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        return {"encoder": encode_views(self.encoder_module(), views)}

    def batch_views(self, batch: Batch, need: int) -> Tensor:
        """``batch.views`` (B, >= need, C, H, W), or a ValueError naming the method."""
        return check_views(self.name, batch.views, need)

    def batch_actions(self, batch: Batch) -> Tensor:
        """``batch.actions`` checked against the spec's action width and the batch's view count."""
        return check_actions(self.name, batch.actions, self.spec.action_dim, batch.views.shape[1])


class BaselineMethod(EncoderMethod):
    """An :class:`EncoderMethod` whose ResNet sits in a swappable :class:`Backbone` (``self.backbone``).

    Subclasses implement :meth:`pair_loss` (two-view methods: the default ``training_step`` applies it to
    views 0 and 1, and ``baselines/tx.py`` hands them a backbone that ends in a sequence aggregator) or
    override ``training_step``.
    """

    backbone: Backbone

    def __init__(self, cfg: Any, spec: DataSpec, backbone: Backbone | None = None) -> None:
        super().__init__(cfg, spec)
        self.backbone = backbone if backbone is not None else Backbone(spec, name=cfg.backbone)

    def pair_loss(self, x1: Tensor | ViewSequence, x2: Tensor | ViewSequence) -> StepOutput:
        """The method's loss between two backbone inputs (images or view sequences)."""
        raise NotImplementedError(f"{self.name} has no action-free two-view loss")

    def training_step(self, batch: Batch) -> StepOutput:
        views = self.batch_views(batch, 2)
        return self.pair_loss(views[:, 0], views[:, 1])

    def encoder_module(self) -> nn.Module:
        return self.backbone.encoder
