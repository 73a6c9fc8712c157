"""Shared building blocks: backbone, action embedding, sequence aggregator, EMA target.

Every method builds itself from these so that architecture differences between methods are only
the ones their papers define (same ResNet-18, same aggregator size for the "+tx" variants).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torchvision
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

RESNET18_DIM = 512

# ``model.backbone`` of every method: name -> output width. "resnet18" is the paper's backbone; the narrow
# ResNet-18s keep its topology (BasicBlock, [2, 2, 2, 2], same strides) with widths (w, 2w, 4w, 8w), sized
# for CPU runs; resnet50 (2048-d, Bottleneck) is for GPU users.
BackboneName = Literal["resnet18", "resnet18-w32", "resnet18-w16", "resnet50"]
BACKBONE_DIMS: dict[str, int] = {"resnet18": 512, "resnet18-w32": 256, "resnet18-w16": 128, "resnet50": 2048}
_NARROW_WIDTH = {"resnet18-w32": 32, "resnet18-w16": 16}


def backbone_dim(name: str) -> int:
    """Output width of backbone ``name`` (a :data:`BACKBONE_DIMS` key)."""
    if name not in BACKBONE_DIMS:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONE_DIMS)}")
    return BACKBONE_DIMS[name]


def build_backbone(name: str = "resnet18", small_images: bool = False, zero_init_residual: bool = True) -> nn.Module:
    """A torchvision ResNet without its fc layer: images (B, C, H, W) -> (B, backbone_dim(name)).

    ``zero_init_residual=True`` as seq-JEPA's encoder (the last BN of every residual block starts at 0).
    ``small_images`` swaps in the CIFAR stem (3x3/1 conv1, no max-pool) that seq-JEPA's ``--cifar-resnet``
    uses for 32-96 px inputs.
    """
    dim = backbone_dim(name)
    if name == "resnet50":
        net = torchvision.models.resnet50(weights=None, zero_init_residual=zero_init_residual)
    else:
        net = torchvision.models.resnet18(weights=None, zero_init_residual=zero_init_residual)
        if name in _NARROW_WIDTH:
            _narrow(net, _NARROW_WIDTH[name], zero_init_residual)
    net.fc = nn.Identity()
    if small_images:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.out_dim = dim  # type: ignore[assignment]
    return net


def _narrow(net: torchvision.models.ResNet, width: int, zero_init_residual: bool) -> None:
    """Rebuild a torchvision ResNet-18 in place with stage widths (w, 2w, 4w, 8w), initialised as torchvision."""
    block = torchvision.models.resnet.BasicBlock
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for i, stage in enumerate(("layer1", "layer2", "layer3", "layer4")):
        setattr(net, stage, net._make_layer(block, width * 2**i, 2, stride=1 if i == 0 else 2))
    for m in net.modules():  # torchvision ResNet.__init__'s initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, block):
                nn.init.constant_(m.bn2.weight, 0)


def resnet18_backbone(small_images: bool = False) -> nn.Module:
    """The paper's backbone: ``build_backbone("resnet18", small_images)`` (512-d)."""
    return build_backbone("resnet18", small_images)


def encode_views(encoder: nn.Module, views: Tensor) -> Tensor:
    """Apply a per-image encoder to (B, V, C, H, W) views -> (B, V, D) in one batched call."""
    b, v = views.shape[:2]
    return encoder(views.flatten(0, 1)).unflatten(0, (b, v))


class ActionEmbedding(nn.Module):
    """seq-JEPA's action embedding: Linear(A -> dim, no bias) + BatchNorm1d(dim, affine=False).

    Accepts any leading shape (..., A) -> (..., dim). One instance is shared by the observation
    tokens and the predictor (upstream ``action_proj``).
    """

    def __init__(self, action_dim: int, dim: int = 128) -> None:
        super().__init__()
        self.action_dim, self.dim = action_dim, dim
        self.proj = nn.Linear(action_dim, dim, bias=False)
        self.norm = nn.BatchNorm1d(dim, affine=False)

    def forward(self, a: Tensor) -> Tensor:
        lead = a.shape[:-1]
        return self.norm(self.proj(a.reshape(-1, self.action_dim))).reshape(*lead, self.dim)


class SequenceAggregator(nn.Module):
    """Transformer encoder with a learnable [AGG] token and no positional embedding.

    Matches seq-JEPA's ``TransformerEncoder_``: post-norm ``nn.TransformerEncoderLayer`` layers
    (ReLU, dropout 0.1, FFN = 4 x width), a final LayerNorm, [AGG] initialised to zeros.
    Input tokens (B, N, width) -> aggregate (B, width) read at the [AGG] position.
    """

    def __init__(self, width: int, layers: int = 3, heads: int = 4, mlp_ratio: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"aggregator width {width} is not divisible by {heads} heads")
        self.width = width
        self.agg_token = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(width, heads, width * mlp_ratio, dropout=dropout, batch_first=True)
        # enable_nested_tensor only matters for padding masks, which we never use.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        agg = self.agg_token.expand(tokens.shape[0], -1, -1)
        return self.norm(self.encoder(torch.cat([agg, tokens], dim=1)))[:, 0]


def mlp(dims: list[int], *, last_bn: bool = False, last_bn_affine: bool = True, bias_last: bool = True,
        hidden_bias: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU stack: dims [d0, d1, ..., dn]; no BN/ReLU after the last Linear unless ``last_bn``."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias_last if last else hidden_bias))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=last_bn_affine))
    return nn.Sequential(*layers)


def make_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` to be moved by :func:`ema_update` only."""
    target = copy.deepcopy(online)
    deactivate_requires_grad(target)
    return target


def ema_tau(step: int, total_steps: int, base: float) -> float:
    """Cosine EMA schedule base -> 1 (BYOL; seq-JEPA applies it per epoch, we per step).

    ``step`` counts optimiser steps from 1 (``on_step_end``); lightly's schedule counts from 0, so the
    first update uses ``base`` and the last one 1.
    """
    if total_steps <= 1:
        return base
    return float(cosine_schedule(max(0, min(step, total_steps) - 1), total_steps, base, 1.0))


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, on parameters (lightly ``update_momentum``).

    Buffers (BatchNorm running statistics) are copied: the target is only ever run in train mode
    during training, where they are unused, and this keeps eval-mode targets sensible.
    """
    update_momentum(online, target, m=tau)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b_o)


def cosine_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - cos(pred, stop_grad(target)), averaged over the batch (seq-JEPA's only loss)."""
    return 1.0 - nn.functional.cosine_similarity(pred, target.detach(), dim=-1).mean()


def check_actions(name: str, actions: Tensor | None, expected_dim: int, views: int) -> Tensor:
    """Fail clearly when an action-conditioned method gets missing or mis-shaped actions."""
    if actions is None:
        raise ValueError(f"{name} is action-conditioned but got no actions; use a dataset that provides them")
    want = (views - 1, expected_dim)
    if actions.ndim != 3 or tuple(actions.shape[1:]) != want:
        raise ValueError(
            f"{name}: actions must have shape (B, {want[0]}, {want[1]}) for {views} views of action "
            f"dim {expected_dim}, got {tuple(actions.shape)}; check data.latent_type matches the model"
        )
    if not torch.isfinite(actions).all():
        raise ValueError(f"{name}: actions contain NaN/inf")
    return actions


def warmup_cosine(step: int, total: int, warmup: int, base: float, start: float, final: float) -> float:
    """Linear warm-up start -> base over ``warmup`` steps, then cosine base -> final."""
    if warmup > 0 and step < warmup:
        return start + (base - start) * step / warmup
    if total <= warmup:
        return base
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * t))
