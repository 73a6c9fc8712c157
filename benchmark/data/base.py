"""What every dataset in seqbench provides: view sequences with actions, labels and probe targets."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.infra.errors import DataError
from methods.contract import Batch


def find_folder(root: str | Path | None, folder: str, dataset: str, get_it: str) -> Path:
    """``root/folder`` or ``root`` itself if it is named ``folder``; a clear DataError otherwise."""
    if root is None:
        raise DataError(f"no {dataset} root given. {get_it}")
    p = Path(root).expanduser()
    if (p / folder).is_dir():
        return p / folder
    if p.name == folder and p.is_dir():
        return p
    raise DataError(f"no {folder}/ folder found in {p}. {get_it}")


@dataclass(frozen=True)
class ProbeTarget:
    """An equivariance probe: regress ``name`` (metric ``{name}_r2``) from frozen features.

    kind "pair":   input = concat of the view representations of views 0 and 1 (relative targets).
    kind "single": input = the view representation of view 0 (absolute targets).
    """

    name: str
    kind: Literal["pair", "single"]
    head: Literal["linear", "mlp"]
    dim: int


class SequenceDataset(Dataset):
    """Base class: item i = one object/image seen as ``num_views`` views.

    ``__getitem__`` returns a dict with
      views   (V, C, H, W) float32, normalised
      actions (V-1, A) float32: relative action from view j to view j+1
      label   int64 scalar
      targets dict name -> float32 vector, one per :class:`ProbeTarget`
      abs_latents (V, A) float32: absolute parameters of each view in the layout of the actions
              (``methods.contract.Batch.latents``; every built-in dataset provides them)
      latents (V, L) float64 raw latents, only for datasets with ``view_bank``
    Randomness (which views, which augmentations) is a pure function of (seed, epoch, index), so a
    resumed run sees the same data and DataLoader workers need no seeding.
    """

    num_classes: int
    action_dim: int
    probe_targets: tuple[ProbeTarget, ...] = ()
    label_note: str = ""  # e.g. "embedded procedural stand-in, not comparable with published numbers"
    # Datasets whose objects have a finite set of views with latents (3DIEBench) set this, add "latents"
    # (V, L) to their items and implement ``bank_targets``: the probes then cache every view's features
    # once and draw fresh view pairs every probe epoch (benchmark/probes/bank.py).
    view_bank: bool = False
    views_per_object: int = 0  # with view_bank: how many distinct views each object has
    # How consecutive actions compose into the displacement from the first to the last view, for the
    # path-integration probe (benchmark/probes/path_integration.py): "sum" or "quaternion"; None = no such probe.
    path_composition: str | None = None

    def __init__(self, num_views: int, seed: int, fixed: bool) -> None:
        self.num_views, self.seed, self.fixed = num_views, seed, fixed
        self.epoch = 0
        self.repeats = 1  # probes draw several view sequences per object: item k -> object k % num_items

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_items(self) -> int:
        """Number of distinct objects/images."""
        raise NotImplementedError

    def item(self, index: int, rng: np.random.Generator) -> dict:
        """The sample of object ``index`` drawn with ``rng``."""
        raise NotImplementedError

    def labels_of(self) -> np.ndarray:
        """Class label of every object (used for checks and balanced summaries)."""
        raise NotImplementedError

    def bank_targets(self, first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
        """Probe targets of N view pairs from their (N, L) latents, one (N, dim) array per ProbeTarget
        (a "single" target reads ``first``). Only for datasets with ``view_bank``."""
        raise NotImplementedError(f"{type(self).__name__} has no view bank")

    def with_views(self, num_views: int) -> SequenceDataset:
        """A shallow copy drawing ``num_views`` views per item, one item per object."""
        ds = copy.copy(self)
        ds.num_views, ds.repeats = num_views, 1
        return ds

    def __len__(self) -> int:
        return self.num_items() * self.repeats

    def __getitem__(self, index: int) -> dict:
        # Per-item generator; ``fixed`` datasets (probe features) ignore the epoch.
        rng = np.random.default_rng([self.seed, 0 if self.fixed else self.epoch + 1, index])
        return self.item(index % self.num_items(), rng)


def collate(items: list[dict]) -> dict:
    out = {
        "views": torch.stack([it["views"] for it in items]),
        "actions": torch.stack([it["actions"] for it in items]),
        "label": torch.as_tensor([it["label"] for it in items], dtype=torch.long),
    }
    for key in ("latents", "abs_latents"):  # optional: present in all items of a dataset or in none
        if key in items[0]:
            out[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    names = items[0]["targets"].keys()
    out["targets"] = {n: torch.stack([torch.as_tensor(it["targets"][n]) for it in items]) for n in names}
    return out


def to_batch(d: dict) -> Batch:
    """A collated dict -> :class:`Batch`; ``Batch.latents`` = the absolute per-view parameters, or None."""
    return Batch(views=d["views"], actions=d["actions"], labels=d["label"], latents=d.get("abs_latents"))


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask (a SLURM allocation, taskset, a cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """DataLoader worker processes to start: ``data.num_workers`` capped at the cores available here.

    The presets ask for 8; on a smaller machine (or SLURM allocation) more workers than cores only
    contend with the training process. Not part of the run identity: items do not depend on it.
    """
    return max(0, min(requested, available_cpus()))
