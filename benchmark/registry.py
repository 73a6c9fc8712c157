"""Literal registries: method name -> class, dataset name -> builder and CPU/paper presets.

An unknown name fails listing the valid ones. Adding a method or dataset = one line here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from baselines.byol import BYOL
from baselines.cond_byol import CondBYOL
from baselines.simclr import SimCLR
from baselines.tx import BYOLTx, SimCLRTx, VICRegTx
from baselines.vicreg import VICReg
from baselines.vicreg_traj import VICRegTraj
from benchmark.config import RunConfig, from_dict, to_dict
from benchmark.data.base import SequenceDataset
from benchmark.data.mini3d import generate as generate_mini
from benchmark.data.rotations import ACTION_DIMS
from benchmark.data.threedie import ThreeDIEBench
from benchmark.errors import ConfigError
from methods.contract import DataSpec, Method
from methods.seqjepa import SeqJEPA

METHODS: dict[str, type[Method]] = {
    "seqjepa": SeqJEPA,
    "simclr": SimCLR,
    "byol": BYOL,
    "vicreg": VICReg,
    "cond-byol": CondBYOL,
    "vicreg-traj": VICRegTraj,
    "simclr+tx": SimCLRTx,
    "byol+tx": BYOLTx,
    "vicreg+tx": VICRegTx,
}


@dataclass(frozen=True)
class DatasetEntry:
    """``build(cfg, split, num_views, fixed)`` makes a split; ``spec(cfg)`` what a method must know."""

    build: Callable[[RunConfig, str, int, bool], SequenceDataset]
    spec: Callable[[RunConfig], DataSpec]
    defaults: dict = field(default_factory=dict)  # preset applied before the user's config
    description: str = ""


def _threedie_root(cfg: RunConfig) -> str | None:
    return cfg.data.root or os.environ.get("SEQBENCH_DATA_ROOT")


def _build_3diebench(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
    d = cfg.data
    return ThreeDIEBench(_threedie_root(cfg), split, num_views, d.image_size, d.latent_type, cfg.seed, fixed,
                         d.canonical_quat, d.split_dir, d.fallback_split)


def _build_mini(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
    d = cfg.data
    root = generate_mini(d.mini, cache_dir=d.root, progress=cfg.train.progress)
    ds = ThreeDIEBench(root, split, num_views, d.image_size, d.latent_type, cfg.seed, fixed, d.canonical_quat,
                       num_classes=d.mini.classes)
    ds.label_note = "3diebench-mini: embedded procedural stand-in, not comparable with published 3DIEBench numbers"
    return ds


def _spec_3die(classes: Callable[[RunConfig], int]) -> Callable[[RunConfig], DataSpec]:
    return lambda cfg: DataSpec(cfg.data.image_size, ACTION_DIMS[cfg.data.latent_type], classes(cfg))


DATASETS: dict[str, DatasetEntry] = {
    "3diebench": DatasetEntry(
        _build_3diebench, _spec_3die(lambda cfg: 55),
        # seq-JEPA's 3DIEBench script (seqjepa.md A.2): 1000 epochs, batch 512, 128 px, M_tr = 3.
        defaults={"data": {"image_size": 128, "seq_len": 3, "num_workers": 8},
                  "train": {"epochs": 1000, "batch_size": 512}},
        description="3DIEBench, official layout (--data-root or $SEQBENCH_DATA_ROOT)",
    ),
    "3diebench-mini": DatasetEntry(
        _build_mini, _spec_3die(lambda cfg: cfg.data.mini.classes),
        # Small enough for ~10 minutes on 2 CPU cores, generation included.
        defaults={"data": {"image_size": 64, "seq_len": 3, "num_workers": 1},
                  "train": {"epochs": 30, "batch_size": 32, "warmup_epochs": 2, "checkpoint_every": 100},
                  "probe": {"epochs": 100, "train_samples": 4, "val_samples": 4}},
        description="embedded procedural stand-in in the 3DIEBench layout (generated on first use)",
    ),
}


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; valid {what}s: {', '.join(sorted(registry))}")
    return registry[name]


def method_class(name: str) -> type[Method]:
    return _lookup(METHODS, name, "method")


def dataset_entry(name: str) -> DatasetEntry:
    return _lookup(DATASETS, name, "dataset")


def resolve(user: dict) -> RunConfig:
    """User overrides (nested dict) -> fully resolved RunConfig (dataset preset, method defaults)."""
    from benchmark.config import merge

    dataset = user.get("dataset", RunConfig.dataset)
    method = user.get("method", RunConfig.method)
    if not isinstance(dataset, str) or not isinstance(method, str):
        raise ConfigError("method and dataset must be names (strings)")
    entry = dataset_entry(dataset)
    cls = method_class(method)
    cfg = from_dict(RunConfig, merge(entry.defaults, user))
    model = from_dict(cls.Config, cfg.model, "model")  # type: ignore[attr-defined]
    cfg = replace(cfg, model=to_dict(model))
    check(cfg)
    return cfg


def check(cfg: RunConfig) -> None:
    """Value checks that types alone cannot express."""
    if cfg.data.seq_len < 1:
        raise ConfigError(f"data.seq_len (--seq-len) must be >= 1 observed view, got {cfg.data.seq_len}")
    for m in (cfg.eval_seq_len, *cfg.probe.eval_seq_lens):
        if m < 1:
            raise ConfigError(f"probe.eval_seq_len(s) must be >= 1, got {m}")
    positive = {"train.batch_size": cfg.train.batch_size, "data.image_size": cfg.data.image_size,
                "probe.epochs": cfg.probe.epochs, "probe.batch_size": cfg.probe.batch_size,
                "probe.train_samples": cfg.probe.train_samples, "probe.val_samples": cfg.probe.val_samples,
                "train.checkpoint_every": cfg.train.checkpoint_every, "train.log_every": cfg.train.log_every}
    for k, v in positive.items():
        if v < 1:
            raise ConfigError(f"{k} must be >= 1, got {v}")
    if cfg.train.epochs < 0:
        raise ConfigError(f"train.epochs must be >= 0 (0 = evaluate at random initialisation), got {cfg.train.epochs}")
    if cfg.device not in ("cpu", "cuda", "auto") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")


def build_method(cfg: RunConfig) -> tuple[Method, DataSpec]:
    cls = method_class(cfg.method)
    spec = dataset_entry(cfg.dataset).spec(cfg)
    try:
        method = cls(from_dict(cls.Config, cfg.model, "model"), spec)  # type: ignore[attr-defined]
    except ValueError as e:
        raise ConfigError(f"{cfg.method}: {e}") from None
    return method, spec
