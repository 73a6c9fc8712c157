"""Literal registries: method name -> class, dataset name -> builder and CPU/paper presets.

An unknown name fails listing the valid ones. Adding a method or dataset = one loader and one line here.
Both registries import their modules only when an entry is used (each entry has a zero-argument
loader), so listing names, ``--help`` and config errors about the run itself never import torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from benchmark import preflight
from benchmark.config import RunConfig, from_dict
from benchmark.data import checks
from benchmark.errors import ConfigError
from benchmark.preflight import DataSizes

if TYPE_CHECKING:
    from benchmark.data.base import SequenceDataset
    from methods.contract import DataSpec, Method

T = TypeVar("T")


class Lazy(Mapping[str, T], Generic[T]):
    """A literal ``{name: loader}`` dict read as ``{name: loader()}``: a value is imported when first looked up."""

    def __init__(self, loaders: dict[str, Callable[[], T]]) -> None:
        self._loaders = loaders

    def __getitem__(self, name: str) -> T:
        return self._loaders[name]()

    def __contains__(self, name: object) -> bool:  # without loading (Mapping's default would load)
        return name in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


# ------------------------------------------------------------------------------------------ methods
def _seqjepa():
    from methods.seqjepa import SeqJEPA
    return SeqJEPA


def _simclr():
    from baselines.simclr import SimCLR
    return SimCLR


def _byol():
    from baselines.byol import BYOL
    return BYOL


def _vicreg():
    from baselines.vicreg import VICReg
    return VICReg


def _cond_byol():
    from baselines.cond_byol import CondBYOL
    return CondBYOL


def _vicreg_traj():
    from baselines.vicreg_traj import VICRegTraj
    return VICRegTraj


def _tx():
    from baselines import tx
    return tx


def _equimod():
    from baselines.equimod import EquiMod
    return EquiMod


def _sie():
    from baselines.sie import SIE
    return SIE


def _sen():
    from baselines.sen import SEN
    return SEN


def _contextssl():
    from baselines.contextssl import ContextSSL
    return ContextSSL


def _conv_ijepa():
    from baselines.conv_ijepa import ConvIJEPA
    return ConvIJEPA


METHODS: Lazy[type[Method]] = Lazy({
    "seqjepa": _seqjepa,
    "simclr": _simclr,
    "byol": _byol,
    "vicreg": _vicreg,
    "cond-byol": _cond_byol,
    "vicreg-traj": _vicreg_traj,
    "simclr+tx": lambda: _tx().SimCLRTx,
    "byol+tx": lambda: _tx().BYOLTx,
    "vicreg+tx": lambda: _tx().VICRegTx,
    "equimod": _equimod,
    "sie": _sie,
    "sen": _sen,
    "contextssl": _contextssl,
    "conv-ijepa": _conv_ijepa,
})


# ----------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetEntry:
    """``build(cfg, split, num_views, fixed)`` makes a split; ``spec(cfg)`` what a method must know.

    ``load()`` imports the dataset's code and returns an object with those two functions. ``check(cfg)``
    (None for generated datasets) raises a DataError if the files a run needs are not where it will look.
    ``sizes(cfg)``: training samples and views per object, found without decoding (benchmark/preflight.py).
    """

    load: Callable[[], Any]
    defaults: dict = field(default_factory=dict)  # preset applied before the user's config
    description: str = ""
    check: Callable[[RunConfig], None] | None = None
    sizes: Callable[[RunConfig], DataSizes] | None = None

    def build(self, cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
        return self.load().build(cfg, split, num_views, fixed)

    def spec(self, cfg: RunConfig) -> DataSpec:
        return self.load().spec(cfg)


def _threedie_root(cfg: RunConfig) -> str | None:
    return cfg.data.root or os.environ.get("SEQBENCH_DATA_ROOT")


def _build_3diebench(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
    from benchmark.data.cache import threedie_loader

    d = cfg.data
    return threedie_loader(cfg)(_threedie_root(cfg), split, num_views, d.image_size, d.latent_type, cfg.seed, fixed,
                                d.canonical_quat, d.split_dir, d.fallback_split)


def _build_mini(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
    from benchmark.data.cache import threedie_loader
    from benchmark.data.mini3d import generate as generate_mini

    d = cfg.data
    root = generate_mini(d.mini, cache_dir=d.root, progress=cfg.train.progress)
    ds = threedie_loader(cfg)(root, split, num_views, d.image_size, d.latent_type, cfg.seed, fixed, d.canonical_quat,
                              num_classes=d.mini.classes)
    ds.label_note = "3diebench-mini: embedded procedural stand-in, not comparable with published 3DIEBench numbers"
    return ds


def _spec_3die(classes: Callable[[RunConfig], int]) -> Callable[[RunConfig], DataSpec]:
    def spec(cfg: RunConfig) -> DataSpec:
        from benchmark.data.rotations import ACTION_DIMS
        from methods.contract import DataSpec

        return DataSpec(cfg.data.image_size, ACTION_DIMS[cfg.data.latent_type], classes(cfg))
    return spec


def _3diebench():
    return SimpleNamespace(build=_build_3diebench, spec=_spec_3die(lambda cfg: 55))


def _3diebench_mini():
    return SimpleNamespace(build=_build_mini, spec=_spec_3die(lambda cfg: cfg.data.mini.classes))


def _cifar100():
    from benchmark.data import cifar100
    return cifar100


def _tinyimagenet():
    from benchmark.data import tinyimagenet
    return tinyimagenet


def _stl10():
    from benchmark.data import stl10
    return stl10


def _saccades():
    from benchmark.data import saccades
    return saccades


def _image_mini(name: str) -> Callable[[], Any]:
    def load():
        from benchmark.data import image_mini
        return SimpleNamespace(build=image_mini.mini_build(name), spec=image_mini.mini_spec(name))
    return load


def _image_mini_defaults(image_size: int, seq_len: int, epochs: int) -> dict:
    """CPU-sized preset shared by the image-dataset stand-ins (~240 steps of batch 32)."""
    return {"data": {"image_size": image_size, "seq_len": seq_len, "num_workers": 1},
            "train": {"epochs": epochs, "batch_size": 32, "warmup_epochs": 1, "checkpoint_every": 100},
            "probe": {"epochs": 100, "train_samples": 2, "val_samples": 2}}


DATASETS: dict[str, DatasetEntry] = {
    "3diebench": DatasetEntry(
        _3diebench,
        # seq-JEPA's 3DIEBench script (docs/protocol.md §2): 1000 epochs, batch 512, 128 px, M_tr = 3. The probes draw
        # from every view of an object (bank_views 0 = all 50), as SIE's and seq-JEPA's evaluations do.
        defaults={"data": {"image_size": 128, "seq_len": 3, "num_workers": 8},
                  "train": {"epochs": 1000, "batch_size": 512}, "probe": {"bank_views": 0}},
        description="3DIEBench, official layout (--data-root or $SEQBENCH_DATA_ROOT)",
        check=checks.check_3diebench,
        sizes=preflight.threedie_sizes,
    ),
    "3diebench-mini": DatasetEntry(
        _3diebench_mini,
        # Small enough for ~10 minutes on 2 CPU cores, generation included.
        defaults={"data": {"image_size": 64, "seq_len": 3, "num_workers": 1},
                  "train": {"epochs": 27, "batch_size": 32, "warmup_epochs": 2, "checkpoint_every": 100},
                  "probe": {"epochs": 100, "train_samples": 4, "val_samples": 4}},
        description="embedded procedural stand-in in the 3DIEBench layout (generated on first use)",
        sizes=preflight.mini3d_sizes,
    ),
    # Image datasets with augmentation / saccade actions (benchmark/data/{augment,saccades}.py, docs/protocol.md §4).
    "cifar100": DatasetEntry(
        _cifar100,
        # seq-JEPA README's CIFAR100 example: 2000 epochs, batch 256, 32 px, M_tr = 3, --cifar-resnet.
        defaults={"data": {"image_size": 32, "seq_len": 3, "num_workers": 8},
                  "train": {"epochs": 2000, "batch_size": 256}},
        description="CIFAR-100 python batches (--data-root: the folder holding cifar-100-python/)",
        check=checks.check_cifar100,
        sizes=preflight.fixed_sizes(50_000, "CIFAR-100's 50000 training images"),
    ),
    "tinyimagenet": DatasetEntry(
        _tinyimagenet,
        # No released Tiny ImageNet script: the CIFAR100 example's budget at 64 px (uncertain).
        defaults={"data": {"image_size": 64, "seq_len": 3, "num_workers": 8},
                  "train": {"epochs": 2000, "batch_size": 256}},
        description="Tiny ImageNet (--data-root: the folder holding tiny-imagenet-200/)",
        check=checks.check_tinyimagenet,
        sizes=preflight.fixed_sizes(100_000, "Tiny ImageNet's 100000 training images"),
    ),
    "stl10": DatasetEntry(
        _stl10,
        # Not in the paper: 96 px augmentation sequences with the CIFAR100 recipe and budget.
        defaults={"data": {"image_size": 96, "seq_len": 3, "num_workers": 8},
                  "train": {"epochs": 2000, "batch_size": 256}},
        description="STL-10 binaries as augmentation sequences (--data-root: the folder holding stl10_binary/)",
        check=checks.check_stl10,
        sizes=preflight.stl10_sizes,
    ),
    "stl10-saccades": DatasetEntry(
        _saccades,
        # scripts/script_pls.sh: 2000 epochs, batch 512, 5 saccades (M_tr = 4), fovea 32, DeepGaze saliency.
        defaults={"data": {"image_size": 32, "seq_len": 4, "num_workers": 8},
                  "train": {"epochs": 2000, "batch_size": 512}},
        description="STL-10 PLS glimpse sequences (--data-root: stl10_binary/ + salmap-stl10/ saliency arrays)",
        check=checks.check_stl10_saccades,
        sizes=preflight.stl10_sizes,
    ),
    # Generated stand-ins in the official formats. Views are smaller than the formats' native sizes (the CIFAR
    # stem at 32 px costs 4x a 64 px ImageNet-stem view on a CPU) so that each default run costs about as much
    # as 3diebench-mini's (216 steps of batch 32): ~240 steps of batch 32.
    "cifar100-mini": DatasetEntry(
        _image_mini("cifar100"),
        defaults=_image_mini_defaults(image_size=16, seq_len=3, epochs=12),
        description="embedded procedural stand-in written as cifar-100-python/ (generated on first use)",
        sizes=preflight.image_mini_sizes(stl10=False),
    ),
    "tinyimagenet-mini": DatasetEntry(
        _image_mini("tinyimagenet"),
        defaults=_image_mini_defaults(image_size=16, seq_len=3, epochs=12),
        description="embedded procedural stand-in written as tiny-imagenet-200/ (generated on first use)",
        sizes=preflight.image_mini_sizes(stl10=False),
    ),
    "stl10-mini": DatasetEntry(
        _image_mini("stl10"),
        defaults=_image_mini_defaults(image_size=48, seq_len=3, epochs=12),
        description="embedded procedural stand-in written as stl10_binary/ (generated on first use)",
        sizes=preflight.image_mini_sizes(stl10=True),
    ),
    "stl10-saccades-mini": DatasetEntry(
        _image_mini("stl10-saccades"),
        defaults=_image_mini_defaults(image_size=16, seq_len=4, epochs=10),
        description="stl10-mini with spectral-residual saliency arrays in the paper's salmap-stl10/ layout",
        sizes=preflight.image_mini_sizes(stl10=True),
    ),
}


def _lookup(registry: Mapping, name: str, what: str):
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; valid {what}s: {', '.join(sorted(registry))}")
    return registry[name]


def method_class(name: str) -> type[Method]:
    return _lookup(METHODS, name, "method")


def dataset_entry(name: str) -> DatasetEntry:
    return _lookup(DATASETS, name, "dataset")


def build_method(cfg: RunConfig) -> tuple[Method, DataSpec]:
    cls = method_class(cfg.method)
    spec = dataset_entry(cfg.dataset).spec(cfg)
    try:
        method = cls(from_dict(cls.Config, cfg.model, "model"), spec)
    except ValueError as e:
        raise ConfigError(f"{cfg.method}: {e}") from None
    return method, spec
