"""Literal registries: method name -> class, dataset name -> builder and CPU/paper presets.

An unknown name fails listing the valid ones. Adding a method or dataset = one loader and one line here.
Both registries import their modules only when an entry is used (each entry has a zero-argument
loader), so listing names, ``--help`` and config errors about the run itself never import torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from benchmark.config import PROBE_PRESETS, Overrides, RunConfig, from_dict, layer, leaves, stack, to_dict
from benchmark.core import preflight
from benchmark.core.preflight import DataSizes
from benchmark.data import checks
from benchmark.infra.errors import ConfigError

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
    ``sizes(cfg)``: training samples and views per object, found without decoding (benchmark/core/preflight.py).
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
    from benchmark.data.view_cache import threedie_loader

    d = cfg.data
    return threedie_loader(cfg)(_threedie_root(cfg), split, num_views, d.image_size, d.latent_type, cfg.seed, fixed,
                                d.canonical_quat, d.split_dir, d.fallback_split)


def _build_mini(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
    from benchmark.data.mini3d import generate as generate_mini
    from benchmark.data.view_cache import threedie_loader

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
