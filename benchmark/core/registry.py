"""Literal registries: method name -> class, dataset name -> :class:`DatasetEntry` (``benchmark/data/entry.py``).

An unknown name fails listing the valid ones. Plugins describe themselves: a method class declares its
``family`` and ``label``, a dataset module exports ``ENTRY`` (builder, spec, checks, sizes, preset, table).
Adding a method or dataset = its one file, plus one loader and one line here. Both registries import
their modules only when an entry is looked up (each entry has a zero-argument loader), so importing this
module, listing names and ``--help`` never import torch or any method's or dataset's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from benchmark.config import RunConfig, from_dict
from benchmark.data.entry import DatasetEntry
from benchmark.infra.errors import ConfigError

if TYPE_CHECKING:
    from methods.contract import DataSpec, Method

T = TypeVar("T")


class Lazy(Mapping[str, T], Generic[T]):
    """A literal ``{name: loader}`` dict read as ``{name: loader()}``: a value is imported when first looked up.

    ``loaders`` is that dict itself (a test registers a plugin with ``monkeypatch.setitem(X.loaders, ...)``).
    """

    def __init__(self, loaders: dict[str, Callable[[], T]]) -> None:
        self.loaders = loaders

    def __getitem__(self, name: str) -> T:
        return self.loaders[name]()

    def __contains__(self, name: object) -> bool:  # without loading (Mapping's default would load)
        return name in self.loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self.loaders)

    def __len__(self) -> int:
        return len(self.loaders)


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
# Each dataset's entry module exports ENTRY (benchmark/data/entry.py): builder, spec, checks, sizes, preset, table.
def _threedie():
    from benchmark.data import threedie_entry
    return threedie_entry


def _mini3d():
    from benchmark.data import mini3d_entry
    return mini3d_entry


def _cifar100():
    from benchmark.data import cifar100_entry
    return cifar100_entry


def _tinyimagenet():
    from benchmark.data import tinyimagenet_entry
    return tinyimagenet_entry


def _stl10():
    from benchmark.data import stl10_entry
    return stl10_entry


def _saccades():
    from benchmark.data import saccades_entry
    return saccades_entry


def _image_mini():
    from benchmark.data import image_mini_entry
    return image_mini_entry


DATASETS: Lazy[DatasetEntry] = Lazy({
    "3diebench": lambda: _threedie().ENTRY,
    "3diebench-mini": lambda: _mini3d().ENTRY,
    # Image datasets with augmentation / saccade actions (benchmark/data/{augment,saccades}.py, docs/protocol.md §4).
    "cifar100": lambda: _cifar100().ENTRY,
    "tinyimagenet": lambda: _tinyimagenet().ENTRY,
    "stl10": lambda: _stl10().ENTRY,
    "stl10-saccades": lambda: _saccades().ENTRY,
    # Generated stand-ins in the official formats, read back by the real loaders.
    "cifar100-mini": lambda: _image_mini().ENTRIES["cifar100-mini"],
    "tinyimagenet-mini": lambda: _image_mini().ENTRIES["tinyimagenet-mini"],
    "stl10-mini": lambda: _image_mini().ENTRIES["stl10-mini"],
    "stl10-saccades-mini": lambda: _image_mini().ENTRIES["stl10-saccades-mini"],
})


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
