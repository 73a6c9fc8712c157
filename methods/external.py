"""An encoder trained elsewhere, evaluated frozen through the same probes as the trained methods.

``ExternalEncoder`` wraps a ResNet-18 (fc removed, 512-d output) whose weights come from a checkpoint
(solo-learn, torchvision or an encoder-only seqbench export; see ``benchmark/tools/checkpoint_formats.py``). It has
one representation, ``encoder`` (one 512-d vector per view), which every headline metric reads, and no
training objective: without an aggregator there is nothing sequence-aware to probe.

Stems (the only architectural difference between the layouts):

* ``imagenet``:   torchvision's 7x7/2 conv1 + 3x3/2 max-pool.
* ``cifar``:      seqbench's small-image stem (``methods.components.resnet18_backbone(small_images=True)``):
                  3x3/1 conv1 with padding 1, no max-pool.
* ``solo-cifar``: solo-learn's CIFAR stem (``vturrisi/solo-learn:solo/methods/base.py``, ``BaseMethod``):
                  3x3/1 conv1 with *padding 2*, no max-pool. Same weight shapes as ``cifar``; the
                  padding changes the feature maps (32 px -> 34 px), so it is kept to match solo-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn

from methods.components import RESNET18_DIM, encode_views
from methods.contract import Batch, DataSpec, Method, Representation, StepOutput

Stem = Literal["imagenet", "cifar", "solo-cifar"]
STEM_PADDING = {"cifar": 1, "solo-cifar": 2}  # conv1 padding of the 3x3/1 stems (see module docstring)


def resnet18_encoder(stem: Stem) -> nn.Module:
    """torchvision ResNet-18 with ``fc = Identity`` and the given stem; input (N, 3, H, W) -> (N, 512)."""
    if stem not in ("imagenet", *STEM_PADDING):
        raise ValueError(f"unknown ResNet stem {stem!r}; valid: imagenet, {', '.join(STEM_PADDING)}")
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    if stem != "imagenet":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=STEM_PADDING[stem], bias=False)
        net.maxpool = nn.Identity()
    return net


@dataclass(frozen=True)
class ExternalEncoderConfig:
    """Identity of an external encoder; recorded as ``config.model`` of its result.json."""

    format: str = "torchvision"  # checkpoint layout it was read from: solo-learn | torchvision | seqbench
    stem: Stem = "imagenet"  # detected from the conv1 weight shape (and the layout, for the padding)
    sha256: str = ""  # of the checkpoint file: two different files never share a run directory
    source_method: str | None = None  # seqbench checkpoints: the method it was trained as
    source_model: dict = field(default_factory=dict)  # seqbench checkpoints: that method's model config


class ExternalEncoder(Method):
    """A frozen ResNet-18 from a checkpoint. Representation ``encoder``: (B, V, 512) per view."""

    name = "external"
    family = "external"
    label = "external encoder"
    Config = ExternalEncoderConfig
    headline = {"top1": "encoder", "rotation_r2": "encoder", "color_r2": "encoder"}

    def __init__(self, cfg: ExternalEncoderConfig, spec: DataSpec | None = None) -> None:
        # It consumes nothing from the data; without a spec it declares no actions and no classes.
        super().__init__(cfg, spec if spec is not None else DataSpec(image_size=0, action_dim=0, num_classes=0))
        self.uses_actions = False
        self.encoder = resnet18_encoder(cfg.stem)
        self.encoder.requires_grad_(False)  # evaluated frozen; never trained here

    def load_encoder_state(self, state: dict[str, Tensor]) -> None:
        """Load a checked ResNet-18 state dict (torchvision key names, no ``fc.*``)."""
        # strict=False only tolerates BatchNorm ``num_batches_tracked`` counters that some savers drop;
        # benchmark.tools.checkpoint_formats has already compared every other key and shape with this encoder.
        result = self.encoder.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ValueError(f"encoder state does not match the {self.cfg.stem} ResNet-18: missing "
                             f"{missing}, unexpected {result.unexpected_keys}")

    def representations(self) -> list[Representation]:
        return [Representation("encoder", RESNET18_DIM, "view", "both")]

    def training_step(self, batch: Batch) -> StepOutput:
        raise RuntimeError("an external encoder is evaluated frozen; it has no training objective "
                           "(use python -m benchmark.evaluate, not benchmark.core.runner)")

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        """(B, V, C, H, W) views -> {"encoder": (B, V, 512)}; actions are ignored."""
        return {"encoder": encode_views(self.encoder, views)}
