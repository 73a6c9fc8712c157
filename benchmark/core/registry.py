"""Literal registries: method name -> class, dataset name -> :class:`DatasetEntry` (``benchmark/data/entry.py``).

An unknown name fails listing the valid ones. Plugins describe themselves: a method class declares its
``family`` and ``label``, a dataset module exports ``ENTRY`` (builder, spec, checks, sizes, preset, table).
Adding a method or dataset = its one file, plus one loader and one line here. Both registries import
their modules only when an entry is looked up (each entry has a zero-argument loader), so importing this
module, listing names and ``--help`` never import torch or any method's or dataset's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Generic, TypeVar

from benchmark.config import PROBE_PRESETS, Overrides, RunConfig, from_dict, layer, leaves, stack, to_dict
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


def probe_name(entry: DatasetEntry, user: dict) -> str:
    """The selected ``probe.preset``: the user's, else the dataset's, else "sie"."""
    probe = user.get("probe")
    name = (probe or {}).get("preset") if isinstance(probe, dict) else None
    return name or entry.defaults.get("probe", {}).get("preset", "sie")


def probe_preset(entry: DatasetEntry, user: dict, source: str = "the config") -> dict:
    """The ``probe`` values of the selected ``probe.preset``; ``source``: where the preset was chosen."""
    name = probe_name(entry, user)
    if name not in PROBE_PRESETS:
        raise ConfigError(f"probe.preset: {name!r} is not one of {', '.join(map(repr, PROBE_PRESETS))} (in {source})")
    return {"probe": PROBE_PRESETS[name]}


# Keys a per_method block cannot hold: they choose the method and the preset the block is merged above.
NOT_PER_METHOD = ("method", "dataset", "per_method")


def resolve(user: dict | Overrides, source: str = "the config") -> RunConfig:
    """User overrides (a nested dict from ``source``, or :class:`Overrides`) -> fully resolved RunConfig.

    Layers, later wins: dataclass defaults, the dataset's preset, the probe preset's values, the user's
    ``per_method`` block for this method, the user's other keys. Errors name where the offending key
    was set (a config file, ``--set KEY=VALUE``, ``per_method block 'X' of FILE``, a preset).
    """
    return resolve_with_sources(user, source)[0]


def resolve_with_sources(user: dict | Overrides, source: str = "the config") -> tuple[RunConfig, Callable[[str], str]]:
    """:func:`resolve`, also returning ``source_of``: dotted key -> where its value was set."""
    user = user if isinstance(user, Overrides) else layer(user, source)
    values = dict(user.values)
    dataset = values.get("dataset", RunConfig.dataset)
    method = values.get("method", RunConfig.method)
    if not isinstance(dataset, str) or not isinstance(method, str):
        raise ConfigError(f"method and dataset must be names (strings), got {method!r} (in "
                          f"{user.source_of('method')}) and {dataset!r} (in {user.source_of('dataset')})")
    entry = _named(dataset_entry, dataset, user.source_of("dataset"))
    cls = _named(method_class, method, user.source_of("method"))
    per_method = values.pop("per_method", None) or {}
    if not isinstance(per_method, dict) or not all(isinstance(v, dict) for v in per_method.values()):
        raise ConfigError(f"per_method must map method names to settings, e.g. per_method: {{seqjepa: {{model: "
                          f"{{ema_decay: 0.99}}}}}} (in {user.source_of('per_method')})")
    for name, block in per_method.items():
        _check_block(name, block, user)
    # A regime's settings for one method (e.g. benchmark/configs/pattern.yaml): above the dataset preset and the
    # probe preset, below everything set directly.
    block = per_method.get(method, {})
    direct = Overrides(values, {k: s for k, s in user.origins.items() if k.partition(".")[0] != "per_method"})
    explicit = stack(Overrides(block, {k: _block_source(method, k, user) for k, _ in leaves(block)}), direct)
    probe = probe_preset(entry, explicit.values, explicit.source_of("probe.preset", f"the {dataset} preset"))
    layers = stack(layer(entry.defaults, f"the {dataset} preset (benchmark/core/registry.py)"),
                   layer(probe, f"probe.preset {probe_name(entry, explicit.values)!r}"), explicit)
    cfg = from_dict(RunConfig, layers.values, source=layers.source_of)
    model = from_dict(cls.Config, cfg.model, "model", layers.source_of)
    cfg = replace(cfg, model=to_dict(model))
    check(cfg, layers.source_of)
    return cfg, layers.source_of


def _named(lookup: Callable[[str], T], name: str, source: str) -> T:
    try:
        return lookup(name)
    except ConfigError as e:
        raise ConfigError(f"{e} (in {source})") from None


def _block_source(method: str, key: str, user: Overrides) -> str:
    return f"per_method block {method!r} of {user.source_of(f'per_method.{method}.{key}')}"


def _check_block(name: str, block: dict, user: Overrides) -> None:
    """Keys and types of the ``per_method`` block of method ``name`` (every block, used by this run or not)."""
    where = f"per_method block {name!r} of {user.source_of(f'per_method.{name}')}"
    block_cls = _named(method_class, name, where)
    bad = [k for k in NOT_PER_METHOD if k in block]
    if bad:
        raise ConfigError(f"{', '.join(bad)} cannot be set in {where}: a block holds settings of its method's runs; "
                          f"set {', '.join(bad)} at the top level")
    source = lambda key: _block_source(name, key, user)  # noqa: E731
    from_dict(RunConfig, block, source=source)
    from_dict(block_cls.Config, block.get("model") or {}, "model", source)


def check(cfg: RunConfig, source_of: Callable[[str], str] | None = None) -> None:
    """Value checks that types alone cannot express; ``source_of`` (dotted key -> where it was set) names
    the source in the message."""
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{message} (in {source_of(key)})" if source_of else message)

    if cfg.data.seq_len < 1:
        raise fail("data.seq_len", f"data.seq_len (--seq-len) must be >= 1 observed view, got {cfg.data.seq_len}")
    lens = {"probe.eval_seq_len": cfg.probe.eval_seq_len} if cfg.probe.eval_seq_len is not None else {}
    lens.update({f"probe.eval_seq_lens[{i}]": m for i, m in enumerate(cfg.probe.eval_seq_lens)})
    for k, m in lens.items():
        if m < 1:
            raise fail(k, f"probe.eval_seq_len(s) must be >= 1, got {m}")
    positive = {"train.batch_size": cfg.train.batch_size, "data.image_size": cfg.data.image_size,
                "probe.epochs": cfg.probe.epochs, "probe.batch_size": cfg.probe.batch_size,
                "probe.train_samples": cfg.probe.train_samples, "probe.val_samples": cfg.probe.val_samples,
                "probe.bank_draws": cfg.probe.bank_draws, "train.checkpoint_every": cfg.train.checkpoint_every,
                "train.log_every": cfg.train.log_every, "train.online_probe_objects": cfg.train.online_probe_objects,
                "probe.knn_k": cfg.probe.knn_k}
    if cfg.probe.bank_views == 1 or cfg.probe.bank_views < 0:
        raise fail("probe.bank_views", f"probe.bank_views must be 0 (every view of an object) or >= 2, got "
                                       f"{cfg.probe.bank_views}")
    for k, v in positive.items():
        if v < 1:
            raise fail(k, f"{k} must be >= 1, got {v}")
    if not cfg.probe.lr > 0:
        raise fail("probe.lr", f"probe.lr must be > 0, got {cfg.probe.lr}")
    if not cfg.probe.weight_decay >= 0:
        raise fail("probe.weight_decay", f"probe.weight_decay must be >= 0, got {cfg.probe.weight_decay}")
    for k in ("lr", "weight_decay", "init_lr", "final_lr"):
        v = getattr(cfg.train, k)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise fail(f"train.{k}", f"train.{k} must be a finite number >= 0, got {v}")
    if not cfg.probe.knn_t > 0:
        raise fail("probe.knn_t", f"probe.knn_t (the kNN temperature) must be > 0, got {cfg.probe.knn_t}")
    if cfg.train.logger == "wandb":
        from benchmark.infra.monitor import require_wandb

        require_wandb()
    if cfg.train.epochs < 0:
        raise fail("train.epochs", f"train.epochs must be >= 0 (0 = evaluate at random initialisation), got "
                                   f"{cfg.train.epochs}")
    if cfg.train.warmup_epochs < 0 or cfg.train.online_probe_every < 0:
        k = "train.warmup_epochs" if cfg.train.warmup_epochs < 0 else "train.online_probe_every"
        raise fail(k, f"{k} must be >= 0, got {getattr(cfg.train, k.partition('.')[2])}")
    if cfg.device not in ("cpu", "cuda", "auto") and not cfg.device.startswith("cuda:"):
        raise fail("device", f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    if cfg.data.decoded_cache and cfg.dataset not in ("3diebench", "3diebench-mini"):
        raise fail("data.decoded_cache", f"data.decoded_cache is implemented for 3diebench and 3diebench-mini only, "
                                         f"not {cfg.dataset}; drop --set data.decoded_cache=true")


def build_method(cfg: RunConfig) -> tuple[Method, DataSpec]:
    cls = method_class(cfg.method)
    spec = dataset_entry(cfg.dataset).spec(cfg)
    try:
        method = cls(from_dict(cls.Config, cfg.model, "model"), spec)
    except ValueError as e:
        raise ConfigError(f"{cfg.method}: {e}") from None
    return method, spec
