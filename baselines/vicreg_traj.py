"""VICReg-Traj: VICReg plus a viewpoint-trajectory regulariser on three views.

Wang, Chen, Yu, "Pose-Aware Self-Supervised Learning with Viewpoint Trajectory Regularization",
ECCV 2024, arXiv:2403.14973 (code announced at pwang.pw/trajSSL, not read: not in our index).
This adapter follows seq-JEPA's re-implementation used for its 3DIEBench comparison,
``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``VICReg_Traj`` (docs/baselines.md §4):

    y_l, y_c, y_r = g(f(x_0)), g(f(x_1)), g(f(x_2))     one batched pass over the 3 views
                                                         (f ResNet-18, 512-d, probed; g as VICReg)
    u_1 = v_1 - <v_1, y_c> y_c,  v_1 = y_c - y_l          "tangent" components of the two steps
    u_2 = v_2 - <v_2, y_c> y_c,  v_2 = y_r - y_c
    loss = VICReg(y_l, y_c) [25 / 25 / 1] - alpha * mean cos(u_1, u_2)      alpha = 1

The trajectory term rewards a straight (low-curvature) path l -> c -> r in embedding space. Upstream
projects with an UNNORMALISED y_c, but the tangent-plane formula is exact only for unit vectors: with
||y_c|| >> 1 (2048-d projector outputs) u_i is dominated by -<v_i, y_c> y_c, so cos(u_1, u_2) is
about +-1 (measured -1.0 at initialisation) and the term mostly asks the projection on y_c to change
monotonically. We keep upstream's formula as the default; ``traj_normalize=true`` L2-normalises the
three embeddings for this term only (our reading of the paper's sphere geometry; see PROVENANCE.md).
Actions are ignored; views 0, 1, 2 are three random views in sequence order.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from baselines.common import BaselineMethod, vicreg_terms
from methods.components import BackboneName, encode_views, mlp
from methods.contract import Batch, DataSpec, StepOutput


def trajectory_loss(y_l: Tensor, y_c: Tensor, y_r: Tensor, normalize: bool = False) -> Tensor:
    """-mean cos(u_1, u_2) of the steps l -> c -> r projected off y_c; inputs (B, D), as upstream.

    ``normalize`` first puts the three embeddings on the unit sphere (not done upstream).
    """
    if normalize:
        y_l, y_c, y_r = (nn.functional.normalize(y, dim=1) for y in (y_l, y_c, y_r))
    v1, v2 = y_c - y_l, y_r - y_c
    u1 = v1 - (v1 * y_c).sum(dim=1, keepdim=True) * y_c
    u2 = v2 - (v2 * y_c).sum(dim=1, keepdim=True) * y_c
    return -nn.functional.cosine_similarity(u1, u2, dim=1).mean()


@dataclass(frozen=True)
class VICRegTrajConfig:
    inv_coeff: float = 25.0  # --inv-coeff 25
    var_coeff: float = 25.0  # --var-coeff 25
    cov_coeff: float = 1.0  # --cov-coeff 1
    alpha: float = 1.0  # --alpha 1.0, weight of the trajectory term
    traj_normalize: bool = False  # L2-normalise before the trajectory term (upstream: no; see docstring)
    proj_hidden: int = 2048  # models.py VICReg_Traj projector 512-2048-2048-2048
    proj_dim: int = 2048
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


class VICRegTraj(BaselineMethod):
    name = "vicreg-traj"
    family = "equivariant"
    label = "VICReg-Traj"
    Config = VICRegTrajConfig

    def __init__(self, cfg: VICRegTrajConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.projector = mlp([self.backbone.dim, cfg.proj_hidden, cfg.proj_hidden, cfg.proj_dim],
                             hidden_bias=True, last_bias=False)

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        return 3  # a triplet (l, c, r), whatever the sequence length

    def training_step(self, batch: Batch) -> StepOutput:
        views = self.batch_views(batch, 3)[:, :3]
        # One pass over all 3B images (BN statistics over the triplet), as upstream.
        h = encode_views(self.backbone.encoder, views)  # (B, 3, 512)
        y = self.projector(h.flatten(0, 1)).unflatten(0, (views.shape[0], 3))
        y_l, y_c, y_r = y.unbind(dim=1)
        traj = trajectory_loss(y_l, y_c, y_r, self.cfg.traj_normalize)
        inv, var, cov = vicreg_terms(y_l, y_c)  # VICReg on the first two views only, as upstream
        c = self.cfg
        loss = c.inv_coeff * inv + c.var_coeff * var + c.cov_coeff * cov + c.alpha * traj
        logs = {"loss": loss, "inv": inv, "var": var, "cov": cov, "traj": traj}
        return StepOutput(loss, {k: float(v.detach()) for k, v in logs.items()})
