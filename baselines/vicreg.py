"""VICReg: variance-invariance-covariance regularisation of two views.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, arXiv:2105.04906; official code ``facebookresearch/vicreg:main_vicreg.py``.
This adapter follows seq-JEPA's re-implementation used for its 3DIEBench table,
``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``VICReg`` (docs/baselines.md §4):

    y_i  = g(f(x_i))     f ResNet-18 (512-d, probed); g 512 -> 2048 -> 2048 -> 2048 (Linear+bias, BN,
                         ReLU; last Linear without bias), the "Projector" of main_vicreg.py
    loss = 25 MSE(y_1, y_2) + 25 [hinge(std y_1) + hinge(std y_2)] / 2
           + 1 [offdiag(cov y_1)^2 + offdiag(cov y_2)^2] / 2048

The action is ignored. The terms are lightly's ``vicreg_loss`` functions (same math as
main_vicreg.py; see tests/test_parity_invariant.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from baselines.common import Backbone, BaselineMethod, ViewSequence, vicreg_terms
from methods.components import BackboneName, mlp
from methods.contract import DataSpec, StepOutput


@dataclass(frozen=True)
class VICRegConfig:
    inv_coeff: float = 25.0  # --inv-coeff 25 (VICReg paper lambda)
    var_coeff: float = 25.0  # --var-coeff 25 (mu)
    cov_coeff: float = 1.0  # --cov-coeff 1 (nu)
    proj_hidden: int = 2048  # seq-JEPA models.py VICReg projector 512-2048-2048-2048
    proj_dim: int = 2048
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class VICReg(BaselineMethod):
    name = "vicreg"
    family = "invariant"
    label = "VICReg"
    Config = VICRegConfig

    def __init__(self, cfg: VICRegConfig, spec: DataSpec, backbone: Backbone | None = None) -> None:
        super().__init__(cfg, spec, backbone)
        self.projector = mlp([self.backbone.dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim],
                             hidden_bias=True, last_bias=False)

    def pair_loss(self, x1: Tensor | ViewSequence, x2: Tensor | ViewSequence) -> StepOutput:
        y1 = self.projector(self.backbone(x1))
        y2 = self.projector(self.backbone(x2))
        inv, var, cov = vicreg_terms(y1, y2)
        c = self.cfg
        loss = c.inv_coeff * inv + c.var_coeff * var + c.cov_coeff * cov
        return StepOutput(loss, {"loss": float(loss.detach()), "inv": float(inv.detach()),
                                 "var": float(var.detach()), "cov": float(cov.detach())})
