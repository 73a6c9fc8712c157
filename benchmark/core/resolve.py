"""User overrides -> a fully resolved, checked RunConfig (what every CLI, sweep and launcher runs).

Layers, later wins: dataclass defaults, the dataset's preset (benchmark/core/registry.py), the probe preset's
values (``probe.preset``, benchmark/config.py PROBE_PRESETS), the user's ``per_method`` block for this
method, the user's other keys (``--config`` files, then flags, then ``--set``: config.layered_overrides).
Errors name where the offending key was set (a config file, ``--set KEY=VALUE``, a flag, ``per_method block
'X' of FILE``, a preset).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter
from typing import TYPE_CHECKING

from benchmark.config import PROBE_PRESETS, Overrides, RunConfig, from_dict, layer, leaves, stack, to_dict
from benchmark.core.registry import dataset_entry, method_class
from benchmark.infra.errors import ConfigError

if TYPE_CHECKING:
    from benchmark.data.preflight import DataSizes

# Keys a per_method block cannot hold: they choose the method and the preset the block is merged above.
NOT_PER_METHOD = ("method", "dataset", "per_method")


def resolve(user: dict | Overrides, source: str = "the config") -> RunConfig:
    """User overrides (a nested dict from ``source``, or :class:`Overrides`) -> fully resolved RunConfig."""
    return resolve_with_sources(user, source)[0]


def resolve_with_sources(user: dict | Overrides, source: str = "the config") -> tuple[RunConfig, Callable[[str], str]]:
    """:func:`resolve`, also returning ``source_of``: dotted key -> where its value was set."""
    user = user if isinstance(user, Overrides) else layer(user, source)
    values = dict(user.values)
    method, dataset = values.get("method", RunConfig.method), values.get("dataset", RunConfig.dataset)
    if not isinstance(dataset, str) or not isinstance(method, str):
        raise ConfigError(f"method and dataset must be names (strings), got {method!r} (in "
                          f"{user.source_of('method')}) and {dataset!r} (in {user.source_of('dataset')})")
    entry = _named(dataset_entry, dataset, user.source_of("dataset"))
    cls = _named(method_class, method, user.source_of("method"))
    per_method = values.pop("per_method", None) or {}
    if not isinstance(per_method, dict) or not all(isinstance(v, dict) for v in per_method.values()):
        raise ConfigError(f"per_method must map method names to settings, e.g. per_method: {{seqjepa: {{model: "
                          f"{{ema_decay: 0.99}}}}}} (in {user.source_of('per_method')})")
    for name, block in per_method.items():  # every block is checked, used by this run or not
        where = f"per_method block {name!r} of {user.source_of(f'per_method.{name}')}"
        block_cls = _named(method_class, name, where)
        bad = [k for k in NOT_PER_METHOD if k in block]
        if bad:
            raise ConfigError(f"{', '.join(bad)} cannot be set in {where}: a block holds settings of its method's "
                              f"runs; set {', '.join(bad)} at the top level")
        in_block = _block_source(name, user)
        from_dict(RunConfig, block, source=in_block)
        from_dict(block_cls.Config, block.get("model") or {}, "model", in_block)
    # This method's block (e.g. benchmark/configs/pattern.yaml): above both presets, below all set directly.
    block = per_method.get(method, {})
    direct = Overrides(values, {k: s for k, s in user.origins.items() if k.partition(".")[0] != "per_method"})
    explicit = stack(Overrides(block, {k: _block_source(method, user)(k) for k, _ in leaves(block)}), direct)
    probe = explicit.values.get("probe")
    preset = (probe.get("preset") if isinstance(probe, dict) else None) or entry.defaults.get("probe", {}).get(
        "preset", "sie")
    if preset not in PROBE_PRESETS:
        raise ConfigError(f"probe.preset: {preset!r} is not one of {', '.join(map(repr, PROBE_PRESETS))} (in "
                          f"{explicit.source_of('probe.preset', f'the {dataset} preset')})")
    layers = stack(layer(entry.defaults, f"the {dataset} preset (benchmark/core/registry.py)"),
                   layer({"probe": PROBE_PRESETS[preset]}, f"probe.preset {preset!r}"), explicit)
    cfg = from_dict(RunConfig, layers.values, source=layers.source_of)
    cfg = replace(cfg, model=to_dict(from_dict(cls.Config, cfg.model, "model", layers.source_of)))
    check(cfg, layers.source_of)
    return cfg, layers.source_of


def _named(lookup: Callable, name: str, source: str):
    """``lookup(name)`` (a registry), its unknown-name error naming ``source``."""
    try:
        return lookup(name)
    except ConfigError as e:
        raise ConfigError(f"{e} (in {source})") from None


def _block_source(method: str, user: Overrides) -> Callable[[str], str]:
    return lambda key: f"per_method block {method!r} of {user.source_of(f'per_method.{method}.{key}')}"


# Settings that count things (>= 1).
POSITIVE = ("train.batch_size", "data.image_size", "probe.epochs", "probe.batch_size", "probe.train_samples",
            "probe.val_samples", "probe.bank_draws", "train.checkpoint_every", "train.log_every",
            "train.online_probe_objects", "probe.knn_k")
LEARNING_RATES = ("train.lr", "train.weight_decay", "train.init_lr", "train.final_lr")  # None or finite >= 0


def check(cfg: RunConfig, source_of: Callable[[str], str] | None = None) -> None:
    """Value checks that types alone cannot express; ``source_of`` (dotted key -> where it was set) names
    the source in the message."""
    d, t, p = cfg.data, cfg.train, cfg.probe
    lens = [("probe.eval_seq_len", p.eval_seq_len)] if p.eval_seq_len is not None else []
    lens += [(f"probe.eval_seq_lens[{i}]", m) for i, m in enumerate(p.eval_seq_lens)]
    value = {k: attrgetter(k)(cfg) for k in (*POSITIVE, *LEARNING_RATES)}
    rules = [  # (key, valid, message), checked in order
        ("data.seq_len", d.seq_len >= 1, f"data.seq_len (--seq-len) must be >= 1 observed view, got {d.seq_len}"),
        *((k, m >= 1, f"probe.eval_seq_len(s) must be >= 1, got {m}") for k, m in lens),
        ("probe.bank_views", p.bank_views == 0 or p.bank_views >= 2,
         f"probe.bank_views must be 0 (every view of an object) or >= 2, got {p.bank_views}"),
        *((k, value[k] >= 1, f"{k} must be >= 1, got {value[k]}") for k in POSITIVE),
        ("probe.lr", p.lr > 0, f"probe.lr must be > 0, got {p.lr}"),
        ("probe.weight_decay", p.weight_decay >= 0, f"probe.weight_decay must be >= 0, got {p.weight_decay}"),
        *((k, value[k] is None or (math.isfinite(value[k]) and value[k] >= 0),
           f"{k} must be a finite number >= 0, got {value[k]}") for k in LEARNING_RATES),
        ("probe.knn_t", p.knn_t > 0, f"probe.knn_t (the kNN temperature) must be > 0, got {p.knn_t}"),
        ("train.epochs", t.epochs >= 0,
         f"train.epochs must be >= 0 (0 = evaluate at random initialisation), got {t.epochs}"),
        ("train.warmup_epochs", t.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0, got {t.warmup_epochs}"),
        ("train.online_probe_every", t.online_probe_every >= 0,
         f"train.online_probe_every must be >= 0, got {t.online_probe_every}"),
        ("probe.validation_objects", p.validation_objects >= 0,
         f"probe.validation_objects must be >= 0 (0 = no selection split), got {p.validation_objects}"),
        ("device", cfg.device in ("cpu", "cuda", "auto") or cfg.device.startswith("cuda:"),
         f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}"),
        ("data.decoded_cache", not d.decoded_cache or cfg.dataset in ("3diebench", "3diebench-mini"),
         f"data.decoded_cache is implemented for 3diebench and 3diebench-mini only, not {cfg.dataset}; drop "
         f"--set data.decoded_cache=true"),
    ]
    for key, valid, message in rules:
        if not valid:
            raise ConfigError(f"{message} (in {source_of(key)})" if source_of else message)
    if t.logger == "wandb":
        from benchmark.infra.monitor import require_wandb

        require_wandb()


def check_fit(cfg: RunConfig, world_size: int = 1, source_of: Callable[[str], str] | None = None,
              sizes: DataSizes | None = None) -> None:
    """What the config and the dataset's cheap metadata can tell before any data is rendered: the batch vs
    the training samples and ``world_size`` processes, the method's views per sample
    (``Method.views_needed``) and the probe lengths vs views per object (benchmark/data/preflight.py).
    The CLI, ``--print-config`` and the launcher's dry run all ask this one function. ``sizes``: the
    dataset's facts if the caller already has them (the launcher reads them once per data setting)."""
    from benchmark.data import preflight

    if sizes is None:
        of = dataset_entry(cfg.dataset).sizes
        if of is None:
            return
        sizes = of(cfg)
    preflight.check(cfg, sizes, method_class(cfg.method).views_needed(cfg.data.seq_len), world_size, source_of)
