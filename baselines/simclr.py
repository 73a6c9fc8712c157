"""SimCLR: contrastive learning of invariant representations from two views.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, arXiv:2002.05709 (official code: google-research/simclr).
This adapter follows seq-JEPA's re-implementation used for its 3DIEBench table,
``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``SimCLR`` (docs/baselines.md §4):

    h_i = f(x_i)                       ResNet-18, 512-d (probed)          x_1, x_2 = views 0, 1
    z_i = g(h_i)                       512 -> 2048 -> 2048 -> 2048, BN, last BN affine=False
    loss = NT-Xent(z_1, z_2; tau=0.5)  2N-way cross-entropy, positives = the other view

The action is ignored. NT-Xent is lightly's ``NTXentLoss`` (same math as SimCLR's and upstream's
``NTXent_loss``; see tests/test_parity_invariant.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightly.loss import NTXentLoss
from torch import Tensor

from baselines.common import Backbone, BaselineMethod, ViewSequence
from methods.components import BackboneName, mlp
from methods.contract import DataSpec, StepOutput


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.5  # seq-JEPA --temp 0.5 (SimCLR paper: 0.5 for CIFAR-10)
    proj_hidden: int = 2048  # seq-JEPA models.py SimCLR projector 512-2048-2048-2048
    proj_dim: int = 2048
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class SimCLR(BaselineMethod):
    name = "simclr"
    family = "invariant"
    label = "SimCLR"
    Config = SimCLRConfig

    def __init__(self, cfg: SimCLRConfig, spec: DataSpec, backbone: Backbone | None = None) -> None:
        if cfg.temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {cfg.temperature}")
        super().__init__(cfg, spec, backbone)
        self.projector = mlp([self.backbone.dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim],
                             last_bias=False, last_bn=True, last_bn_affine=False)
        # Negatives from every data-parallel rank (seq-JEPA NTXent_loss gathers them; lightly's gather keeps
        # the gradient): the loss does not change with the number of GPUs.
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=True)

    def pair_loss(self, x1: Tensor | ViewSequence, x2: Tensor | ViewSequence) -> StepOutput:
        # Two encoder passes (BN statistics per view), as upstream; SimCLR's TF code batches both views.
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        loss = self.criterion(z1, z2)
        return StepOutput(loss, {"loss": float(loss.detach())})
