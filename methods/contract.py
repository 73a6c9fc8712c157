"""The method contract: what every SSL method in seqbench implements.

A method is an ``nn.Module`` that owns its encoder, heads, target networks and loss. Everything the harness
(``benchmark/``) relies on is declared on :class:`Method`:

* the class attributes ``name``, ``Config`` (the frozen dataclass of its ``model.*`` options) and ``headline``,
  and how the tables and plots present it: ``family`` and ``label``;
* the constructor ``Method(cfg, spec)`` (a ``Config`` instance and a :class:`DataSpec`), kept as ``self.cfg``
  and ``self.spec``;
* what it needs from the data: ``uses_actions`` (``batch.actions``), ``needs_latents`` (absolute per-view
  latents) and ``views_needed(seq_len)``;
* ``training_step(batch)``  -> :class:`StepOutput` (forward + loss; the harness calls backward);
* ``representations()`` and ``encode(views, actions)`` -> named frozen representations the probes read;
* ``param_groups(weight_decay)`` -> optimiser parameter groups;
* ``on_step_end(step, total_steps)`` -> per-step hook, called after ``optimizer.step()`` (EMA updates);
* ``encoder_module()`` -> the online backbone (exported, compared across methods).

Shapes use ``B`` batch, ``V`` views per sample, ``C, H, W`` image, ``A`` action dimension, ``D`` feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

RepKind = Literal["view", "sequence"]
RepRole = Literal["invariant", "equivariant", "both"]
# The families the tables group and order methods by, and the plots colour them by (benchmark/reporting/tables.py).
Family = Literal["invariant", "equivariant", "seq-JEPA", "external"]


@dataclass(frozen=True)
class DataSpec:
    """What a method needs to know about the data to build itself."""

    image_size: int  # H == W of every view fed to the encoder
    action_dim: int  # A: width of the relative action between consecutive views (0 = no actions)
    num_classes: int
    channels: int = 3
    small_images: bool = False  # True -> CIFAR-style ResNet stem (3x3/1 conv1, no max-pool)


@dataclass(frozen=True)
class Batch:
    """One training batch of view sequences.

    views:   (B, V, C, H, W) views of one object/image per row, in sequence order.
    actions: (B, V-1, A) relative action from view i to view i+1 (``actions[:, i]``).
    labels:  (B,) class labels (never used by the SSL losses; carried for online diagnostics).
    latents: optional (B, V, A) ABSOLUTE parameters of each view, in the layout of the actions (same width
             A, same components): 3DIEBench / mini the view's rotation quaternion R_i (scalar-last, x y z w) and
             the non-rotation latents the actions carry (rotcolor: floor and spot hue); augmentation
             datasets the view's normalised augmentation vector (the actions are its differences); saccades
             the fixation (row, col) / image side. ``actions[:, i]`` relates ``latents[:, i]`` and ``latents[:, i+1]``.
             None when the dataset has none; a method that needs them raises a ValueError then.
    """

    views: Tensor
    actions: Tensor
    labels: Tensor
    latents: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(None if t is None else t.to(device, non_blocking=non_blocking)
                       for t in (self.views, self.actions, self.labels, self.latents)))


@dataclass
class StepOutput:
    """Result of one training step. ``loss`` carries the graph; ``logs`` are detached floats."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Representation:
    """A frozen representation the probes can read.

    kind "view":     ``encode`` returns (B, V, dim): one vector per input view, a function of that view
                     alone (the probes cache view features once and pair them freely; classification
                     reads single views, relative-transformation probes concatenations of two).
    kind "sequence": ``encode`` returns (B, dim): one vector for the whole observed sequence.
    """

    name: str
    dim: int
    kind: RepKind
    role: RepRole


class Method(nn.Module):
    """Base class of every method (seq-JEPA and the baselines).

    Subclasses set ``name``, ``family``, ``label``, ``Config`` and ``headline``, call
    ``super().__init__(cfg, spec)`` and implement the members below. ``training_step`` may mutate only module
    state that a forward pass mutates (BatchNorm running statistics); target networks move only in
    ``on_step_end``.
    """

    name: ClassVar[str]
    # Family of the method (tables order rows by it, plots colour by it) and its name as the papers print it
    # (e.g. "Conditional BYOL" for "cond-byol"); read through benchmark.core.registry.METHODS, never a second list.
    family: ClassVar[Family]
    label: ClassVar[str]
    # The frozen dataclass of the method's options; the registry validates ``model.*`` against it and
    # constructs the method as ``cls(cls.Config(**model), spec)``.
    Config: ClassVar[type[Any]]
    # Which representation each headline metric reads ("top1", "rotation_r2", "color_r2").
    headline: ClassVar[dict[str, str]]
    # True if the loss consumes ``batch.actions`` (may depend on the config, so set per instance):
    # the harness then refuses data without actions.
    uses_actions: bool = False
    # True if the loss consumes absolute per-view latents (``batch.latents``, (B, V, A)); the method raises
    # a ValueError naming them when a batch has none.
    needs_latents: bool = False

    def __init__(self, cfg: Any, spec: DataSpec) -> None:
        super().__init__()
        self.cfg = cfg  # an instance of ``Config``
        self.spec = spec  # the data it was built for (action width, image size, classes)

    @classmethod
    def views_needed(cls, seq_len: int) -> int:
        """Views per training sample for training sequence length ``seq_len`` (default: a pair). A class
        method: the launcher and preflight ask it before any model is built."""
        return 2

    def representations(self) -> list[Representation]:
        raise NotImplementedError

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, views: Tensor, actions: Tensor | None = None) -> dict[str, Tensor]:
        """Frozen representations of ``views`` (B, V, C, H, W) with ``actions`` (B, V-1, A).

        Returns one entry per :meth:`representations` item: (B, V, dim) for view kinds, (B, dim) for
        sequence kinds (aggregating all V views as observations). Called in eval mode.
        """
        raise NotImplementedError

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Default: weight decay on weights of rank >= 2, none on biases and norm parameters."""
        return split_decay_groups(self, weight_decay)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called once after every optimiser step (``step`` counts from 1)."""

    def encoder_module(self) -> nn.Module:
        """The online backbone (ResNet-18 without fc); exported and compared across methods."""
        return self.get_submodule("encoder")  # methods that keep it elsewhere override this


def split_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Parameters with ndim >= 2 get ``weight_decay``; biases and norm scales get 0 (seq-JEPA PLS code)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
