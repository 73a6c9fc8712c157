"""SIE: Split Invariant-Equivariant representations with a hypernetwork predictor.

Garrido, Najman, LeCun, "Self-supervised learning of Split Invariant Equivariant representations",
ICML 2023, arXiv:2302.10283. Follows ``facebookresearch/SIE:src/models.py`` class ``SIE`` with
``src/hypernetwork.py`` (``--hypernetwork linear``), the architecture that seq-JEPA's re-implementation
(``hafezgh/seq-jepa:seq-jepa/src/models.py`` class ``SIE``) copies; see docs/baselines.md §1.
Two views x, y of one object with relative action a (x -> y):

    h = f(x) (B, 512);  h_inv = h[:, :256],  h_equi = h[:, 256:]        (same split for y)
    p_inv  = g_inv(h_inv),  p_equi = g_equi(h_equi)                    (256 -> 1024 -> 1024 -> 1024 each)
    W(a)   = reshape(Linear(A -> 1024*1024, no bias)(a))               (hypernetwork: one matrix per sample)
    p^_y   = W(a) p_equi(x)                                            (no bias, no activation)
    loss   = sim * MSE(p_inv(x), p_inv(y)) + equi_factor * sim * MSE(p^_y, p_equi(y))
           + std * [v(x_cat) + v(y_cat)] / 2 + std * v(p^_y) / 2 + cov * [c(x_cat) + c(y_cat)]

where x_cat = [p_inv(x), p_equi(x)] (2048-d), v is VICReg's variance hinge and c its covariance
penalty normalised by the width (lightly ``variance_loss`` / ``covariance_loss``).

Probes: "encoder" is the whole 512-d output (seq-JEPA's baseline protocol: "Probes use the first
view's 512-d encoder output"), and the headline metrics read it; "inv" and "equi" expose the two parts
(SIE's own evaluation probes them separately); their numbers are in ``metrics.per_representation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss.vicreg_loss import covariance_loss, variance_loss
from torch import Tensor, nn

from baselines.common import EncoderMethod, gather_rows
from methods.components import BackboneName, backbone_dim, build_backbone, encode_views, mlp
from methods.contract import Batch, DataSpec, Representation, StepOutput


@dataclass(frozen=True)
class SIEConfig:
    """Defaults: seq-JEPA's re-implementation (its main-script flags --inv-coeff 25 --var-coeff 25
    --cov-coeff 1 --equi-factor 1.0), which is what seq-JEPA's table compares against.

    Alternative, not default: the official 3DIEBench command (``facebookresearch/SIE:README.md``) uses
    ``--sim-coeff 10 --std-coeff 10 --cov-coeff 1 --equi-factor 0.45`` (i.e. sim_coeff=10,
    std_coeff=10, equi_factor=0.45), batch 1024, Adam 1e-3, 256 px. Which coefficients seq-JEPA's
    paper actually used is uncertain (docs/baselines.md §1). Not implemented: the ``mlp`` predictor type,
    the ``deep`` hypernetwork, and the SIENoVar / SIEOnlyEqui variants.
    """

    # --equi 256: the LAST 256 dims of the 512-d representation are equivariant; None -> half the backbone's width
    equi_dim: int | None = None
    expander: tuple[int, ...] = (2048, 2048, 2048)  # --mlp 2048-2048-2048, scaled by each part's share
    sim_coeff: float = 25.0  # seq-JEPA --inv-coeff 25 (official --sim-coeff 10)
    std_coeff: float = 25.0  # seq-JEPA --var-coeff 25 (official --std-coeff 10)
    cov_coeff: float = 1.0  # both
    equi_factor: float = 1.0  # seq-JEPA --equi-factor 1.0 (official 0.45)
    backbone: BackboneName = "resnet18"  # model.backbone (methods/components.py BACKBONE_DIMS)


def sie_loss(x_inv: Tensor, y_inv: Tensor, x_equi: Tensor, y_equi: Tensor, pred_y_equi: Tensor, sim_coeff: float,
             std_coeff: float, cov_coeff: float, equi_factor: float) -> tuple[Tensor, dict[str, Tensor]]:
    """SIE's loss from projected (B, D_inv) / (B, D_equi) embeddings; returns (total, terms).

    As ``facebookresearch/SIE:src/models.py`` 395-418: the two MSE terms on this rank's samples, the
    variance and covariance terms on the rows of every data-parallel rank (``FullGatherLayer`` there,
    :func:`baselines.common.gather_rows` here), so the covariance is normalised by the global batch size.
    """
    x_cat, y_cat = torch.cat([x_inv, x_equi], dim=1), torch.cat([y_inv, y_equi], dim=1)
    repr_loss_inv, repr_loss_equi = F.mse_loss(x_inv, y_inv), F.mse_loss(pred_y_equi, y_equi)
    x_cat, y_cat, pred_all = gather_rows(x_cat), gather_rows(y_cat), gather_rows(pred_y_equi)
    terms = {
        "repr_loss_inv": repr_loss_inv,
        "repr_loss_equi": repr_loss_equi,
        # Regularising the concatenation also decorrelates the inv and equi parts from each other.
        "std_loss": (variance_loss(x_cat) + variance_loss(y_cat)) / 2,
        "pred_std_loss": variance_loss(pred_all) / 2,
        "cov_loss": covariance_loss(x_cat) + covariance_loss(y_cat),
    }
    total = (sim_coeff * terms["repr_loss_inv"] + equi_factor * sim_coeff * terms["repr_loss_equi"]
             + std_coeff * (terms["std_loss"] + terms["pred_std_loss"]) + cov_coeff * terms["cov_loss"])
    return total, terms


class HyperPredictor(nn.Module):
    """``ParametrizedNet`` with a linear hypernetwork: p^ = W(a) p, W(a) = reshape(Linear(A -> D*D)(a)).

    (B, D) embeddings and (B, A) actions -> (B, D). No bias (``--bias-pred`` off) and no activation.
    """

    def __init__(self, dim: int, action_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.hypernet = nn.Linear(action_dim, dim * dim, bias=False)  # --bias-hypernet off

    def forward(self, p: Tensor, action: Tensor) -> Tensor:
        w = self.hypernet(action).view(-1, self.dim, self.dim)  # (B, out, in), as nn.Linear weights
        return torch.einsum("boi,bi->bo", w, p)


def _expander(in_dim: int, dims: tuple[int, ...], share: float) -> nn.Sequential:
    """SIE ``Projector``: Linear(+bias)-BN-ReLU hidden layers, last Linear without bias, widths scaled."""
    return mlp([in_dim, *(round(d * share) for d in dims)], hidden_bias=True, last_bias=False)


class SIE(EncoderMethod):
    name = "sie"
    family = "equivariant"
    label = "SIE"
    Config = SIEConfig
    role = "both"

    def __init__(self, cfg: SIEConfig, spec: DataSpec) -> None:
        if spec.action_dim <= 0:
            raise ValueError("sie conditions its predictor on the action; use a dataset with actions (action_dim > 0)")
        dim = backbone_dim(cfg.backbone)
        equi_dim = cfg.equi_dim if cfg.equi_dim is not None else dim // 2
        if not 0 < equi_dim < dim:
            raise ValueError(f"sie: model.equi_dim must lie in 1..{dim - 1} for backbone {cfg.backbone}, "
                             f"got {equi_dim}")
        if not cfg.expander:
            raise ValueError("sie: model.expander needs at least one width, e.g. [2048, 2048, 2048]")
        super().__init__(cfg, spec)
        self.uses_actions = True
        self.dim = dim
        self.equi_dim = equi_dim
        self.inv_dim = self.dim - equi_dim
        self.encoder = build_backbone(cfg.backbone, spec.small_images)
        self.projector_inv = _expander(self.inv_dim, cfg.expander, self.inv_dim / self.dim)
        self.projector_equi = _expander(equi_dim, cfg.expander, equi_dim / self.dim)
        self.predictor = HyperPredictor(round(cfg.expander[-1] * equi_dim / self.dim), spec.action_dim)

    def representations(self) -> list[Representation]:
        return [
            Representation("encoder", self.dim, "view", "both"),
            Representation("inv", self.inv_dim, "view", "invariant"),
            Representation("equi", self.equi_dim, "view", "equivariant"),
        ]

    def predict(self, h_x: Tensor, action: Tensor) -> Tensor:
        """p^_y (B, D_equi) from the full encodings h_x (B, 512) and actions (B, A)."""
        return self.predictor(self.projector_equi(h_x[:, self.inv_dim:]), action)

    def training_step(self, batch: Batch) -> StepOutput:
        views, action = self.batch_views(batch, 2), self.batch_actions(batch)[:, 0]
        # Views 0 and 1 in two encoder calls, as upstream: BatchNorm statistics are per view.
        h_x, h_y = self.encoder(views[:, 0]), self.encoder(views[:, 1])
        c = self.cfg
        x_equi = self.projector_equi(h_x[:, self.inv_dim:])
        loss, terms = sie_loss(self.projector_inv(h_x[:, :self.inv_dim]), self.projector_inv(h_y[:, :self.inv_dim]),
                               x_equi, self.projector_equi(h_y[:, self.inv_dim:]), self.predictor(x_equi, action),
                               c.sim_coeff, c.std_coeff, c.cov_coeff, c.equi_factor)
        return StepOutput(loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        h = encode_views(self.encoder, views)
        return {"encoder": h, "inv": h[..., :self.inv_dim], "equi": h[..., self.inv_dim:]}
