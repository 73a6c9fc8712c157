"""Typed, frozen run configuration: the dataclasses (commented defaults), their parsing from YAML and ``--set``,
where each setting came from (:class:`Overrides`) and the run identity (:func:`run_dir`).

Unknown keys and wrong types are rejected with a message that names the key, where it was set (the file,
``--set KEY=VALUE``, the flag, the ``per_method`` block) and the closest valid key. Every YAML file and ``--set``
value is read with YAML 1.2 numbers (``1e-3`` is a float; benchmark/infra/yamlio.py). How presets and user settings
combine into one RunConfig: benchmark/core/resolve.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmark.infra import yamlio
from benchmark.infra.errors import ConfigError


@dataclass(frozen=True)
class MiniConfig:
    """Generator settings of the embedded procedural 3diebench-mini (see benchmark/data/mini3d.py)."""

    classes: int = 8  # shape classes (<= 10 built in)
    objects_per_class: int = 40  # objects rendered per class (80 % train, 20 % val)
    views: int = 12  # renders per object (3DIEBench has 50)
    resolution: int = 64  # rendered JPEG size in pixels (3DIEBench: 256)
    seed: int = 0  # generator seed: same settings + seed -> byte-identical tree
    # "3diebench": every view draws all of 3DIEBench's latents (rotation, floor hue, spot light);
    # "pose-only": the same shapes and poses under one fixed scene and one set of part colours for all
    # objects, so only the pose changes between views (benchmark/configs/pattern.yaml; docs/pattern.md)
    variant: Literal["3diebench", "pose-only", "pose-mono", "pose-narrow"] = "3diebench"


@dataclass(frozen=True)
class AugConfig:
    """Augmentation sequences of cifar100 / tinyimagenet / stl10 (benchmark/data/augment.py, docs/protocol.md §4)."""

    condition: Literal["aug", "crop", "jitter", "blur"] = "aug"  # action = crop+jitter+blur (9) / crop (4) / ...
    blur: bool = True  # false = upstream --no-blur: no Gaussian blur, 8-d "aug" action
    # upstream L2-normalises each parameter across the views of a sequence (engine.py, quirk);
    # "image": crop [i, j, h, w] divided by the image side, other parameters raw
    param_norm: Literal["view-l2", "image"] = "view-l2"


@dataclass(frozen=True)
class SaccadeConfig:
    """Predictive learning across saccades, stl10-saccades (benchmark/data/saccades.py, docs/protocol.md §4)."""

    # precomputed = saliency_{unlabeled,train,test}.npy (the paper's DeepGaze IIE maps); the others need no weights
    saliency: Literal["precomputed", "spectral", "centre-surround", "uniform"] = "precomputed"
    saliency_dir: str | None = None  # folder holding the saliency arrays; None -> searched under data.root
    fovea: int = 32  # --fovea-size 32: glimpse side in image pixels (resampled to data.image_size)
    ior: bool = True  # --ior 1: inhibition of return around every fixation


@dataclass(frozen=True)
class ImageMiniConfig:
    """Generator settings of the *-mini image stand-ins (benchmark/data/image_mini.py)."""

    classes: int = 10  # procedurally drawn shape classes (<= 10)
    train_per_class: int = 60  # labelled training images per class
    test_per_class: int = 20  # held-out images per class
    unlabeled: int = 600  # STL-10 format only: unlabeled pre-training images
    seed: int = 0  # same settings + seed -> identical files


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # dataset root; None -> $SEQBENCH_DATA_ROOT (or the mini cache)
    seq_len: int = 3  # training sequence length M_tr (observed views; seq-JEPA adds one target view)
    image_size: int = 128  # views are resized to this (seq-JEPA, ContextSSL: 128; SIE: 256)
    latent_type: Literal["rot", "rotcolor", "all"] = "rot"  # action = quaternion (4) / +hues (6) / +all (8)
    canonical_quat: bool = False  # flip quaternions to w >= 0 (upstream does not)
    split_dir: str | None = None  # where train/val_{images,labels}.npy live if not in root
    fallback_split: bool = False  # opt-in deterministic split when the official split files are missing
    num_workers: int = 2  # DataLoader workers (does not change results)
    # 3diebench(-mini): read views from a uint8 cache decoded once at image_size (benchmark/data/view_cache.py);
    # items are bit-identical to decoding the JPEGs, so it does not change results
    decoded_cache: bool = False
    cache_dir: str | None = None  # where decoded caches live; None -> $SEQBENCH_CACHE/decoded
    mini: MiniConfig = field(default_factory=MiniConfig)
    stl10_pretrain: Literal["unlabeled", "train"] = "unlabeled"  # STL-10 split for SSL (paper: 100k unlabeled)
    aug: AugConfig = field(default_factory=AugConfig)
    saccade: SaccadeConfig = field(default_factory=SaccadeConfig)
    image_mini: ImageMiniConfig = field(default_factory=ImageMiniConfig)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000  # 0 = no pre-training: evaluate the randomly initialised encoder
    batch_size: int = 512
    optimizer_preset: Literal["paper", "upstream-code"] = "paper"  # see README "Decisions"
    lr: float | None = None  # None -> the preset's (4e-4 for both)
    weight_decay: float | None = None  # None -> the preset's (1e-3 paper, 0 upstream-code)
    warmup_epochs: int = 20  # linear warm-up from init_lr
    init_lr: float = 1e-5
    final_lr: float = 1e-5  # cosine end value (paper preset)
    max_steps: int | None = None  # cap on optimiser steps (smoke tests); recorded in the result
    checkpoint_every: int = 500  # steps between checkpoints (plus one at the end)
    log_every: int = 10  # steps between log.jsonl lines
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    # Fast paths (benchmark/core/fastpath.py; same computation up to float rounding, recorded in the result):
    channels_last: bool = True  # NHWC weights and views on CUDA (cuDNN tensor-core kernels); ignored on CPU
    fused_optimizer: bool = True  # fused Adam/AdamW kernel on CUDA (else torch's foreach default); ignored on CPU
    compile: bool = False  # torch.compile the training step (minutes of compilation at start-up)
    # Several GPUs: BatchNorm statistics over the global batch (nn.SyncBatchNorm), so N GPUs train what one GPU
    # trains on train.batch_size (as SIE's main.py; seq-JEPA's runs used one GPU). GPU-only: CPU ranks keep
    # per-rank statistics. No effect on one process. Recorded as provenance.batchnorm_statistics.
    sync_bn: bool = True
    progress: bool = True  # progress: a tqdm bar on a terminal, plain lines in a log file (benchmark/infra/progress.py)
    # Live monitoring of the log.jsonl values (benchmark/infra/monitor.py): "csv" = <run dir>/metrics.csv,
    # "tensorboard" = <run dir>/tensorboard/, "wandb" = Weights & Biases (offline unless $WANDB_MODE says otherwise)
    logger: Literal["none", "csv", "tensorboard", "wandb"] = "none"
    # Online probes (benchmark/probes/online.py): every N steps and before the first, held-out top-1, kNN top-1
    # and pair R^2 (rotation) of the current weights, fitted on a fixed monitor set, logged to log.jsonl.
    # Detached and RNG-neutral: they do not change the training, so they are not part of the run identity.
    online_probe_every: int = 0  # 0 = off
    online_probe_objects: int = 256  # monitor objects per split (training objects fit, held-out ones score)


# ``probe.preset``: how the probe heads are fitted, as one paper's evaluation code does it. The preset's values
# fill probe.optimizer / lr / weight_decay / batch_size; explicit settings of those keys win
# (benchmark/core/resolve.py).
PROBE_PRESETS: dict[str, dict] = {
    # facebookresearch/SIE README.md 57-73 and eval_classification.py 227 / eval_angle_prediction.py 229:
    # Adam lr 1e-3, weight decay 0 (on every parameter), batch 256, 300 epochs.
    "sie": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 256},
    # hafezgh/seq-jepa main_transformed_views.py 45, 49, 51 (defaults) and 246-255 (--is-eval): AdamW lr 4e-4,
    # weight decay 1e-3 on weights (none on biases), batch 512, 300 epochs (README); its heads are trained on one
    # summed loss, which per-parameter Adam(W) updates make identical to fitting them apart on the same minibatches.
    "seqjepa": {"optimizer": "adamw", "lr": 4e-4, "weight_decay": 1e-3, "batch_size": 512},
}


@dataclass(frozen=True)
class ProbeConfig:
    eval_seq_len: int | None = None  # inference length M_val for the headline top-1; None -> data.seq_len
    eval_seq_lens: tuple[int, ...] = ()  # extra M_val values (accuracy vs M_val, heatmaps)
    epochs: int = 300  # probe training epochs on frozen features (SIE / seq-JEPA README: 300)
    preset: Literal["sie", "seqjepa"] = "sie"  # fitting recipe (PROBE_PRESETS above): fills the next four keys
    optimizer: Literal["adam", "adamw"] = "adam"  # adam: decay on every parameter; adamw: on weights only
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_samples: int = 4  # sampled view sequences per training object (features are cached)
    val_samples: int = 2  # sampled view sequences per held-out object
    # View representations on datasets with a view bank (3DIEBench): "bank" caches bank_views views per object
    # and draws bank_draws fresh views / view pairs per object every probe epoch (upstream's fresh pairs);
    # "samples" probes them on the fixed sequences above, like the sequence representations.
    view_protocol: Literal["bank", "samples"] = "bank"
    bank_views: int = 12  # views per object in the bank (0 = all of them; 3DIEBench has 50)
    bank_draws: int = 1  # views / pairs drawn per training object per probe epoch (SIE, seq-JEPA: 1)
    hidden: int = 1024  # width of the MLP heads (rotation): in -> 1024 -> 1024 -> out
    # kNN top-1 (benchmark/probes/knn.py): k neighbours, temperature t (Wu et al. 2018; lightly, solo-learn: 200, 0.1)
    knn_k: int = 200
    knn_t: float = 0.1
    # Selection split (benchmark/probes/validation.py): hold this many training objects out (class-balanced), fit
    # the probes on the rest and score them on these -> val_* metrics, for choosing settings without the held-out
    # objects (benchmark/studies/selection.py). 0 = off.
    validation_objects: int = 0


@dataclass(frozen=True)
class RunConfig:
    method: str = "seqjepa"
    dataset: str = "3diebench-mini"
    seed: int = 0
    sweep: str | None = None  # optional sweep name; becomes the first run-directory component
    model: dict = field(default_factory=dict)  # the method's own Config, validated by the registry
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    device: str = "auto"  # cpu | cuda | auto (does not change the run identity)
    out: str = "results/runs"  # parent of run directories (does not change the run identity)

    def __post_init__(self) -> None:
        if self.sweep is not None and not SWEEP_NAME.fullmatch(self.sweep):
            raise ConfigError(f"sweep {self.sweep!r}: {SWEEP_RULE} (it names the first folder of the run directory "
                              f"under --out, so it cannot hold '/', '..' or an absolute path)")

    @property
    def eval_seq_len(self) -> int:
        return self.probe.eval_seq_len or self.data.seq_len


SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a sweep name is one folder name, never a path
SWEEP_RULE = "a sweep name must be letters, digits, '.', '_' or '-', starting with a letter or digit"


# Fields that do not change what is computed: excluded from the run identity hash. The data paths are
# here so that a run keeps its directory on another machine (another mount point); what they point at
# is fingerprinted instead (benchmark.core.runner.data_digests: split and saliency digests in the checkpoint and
# result.json), and a resume on other data is refused.
NON_SEMANTIC = {("device",), ("out",), ("data", "num_workers"), ("data", "root"), ("data", "split_dir"),
                ("data", "saccade", "saliency_dir"), ("train", "progress"), ("train", "log_every"),
                ("train", "checkpoint_every"), ("data", "decoded_cache"), ("data", "cache_dir"),
                ("train", "channels_last"), ("train", "fused_optimizer"), ("train", "compile"),
                ("train", "online_probe_every"), ("train", "online_probe_objects"), ("train", "logger")}


# ------------------------------------------------------------------------------------------ typed parsing
# Where a setting came from, for error messages: a fixed text ("benchmark/configs/x.yaml", "--set
# train.lr=1e-3") or a function of the dotted key (Overrides.source_of).
Source = str | Callable[[str], str]
# What a scalar annotation accepts (a bool is never a config integer or number), and its name in errors.
SCALARS: dict[Any, Any] = {bool: bool, int: int, float: (int, float), str: str, dict: dict}
WORDS = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
         dict: "a mapping"}
# Names people write for a key, -> the key (checked by the suggestion of an unknown key).
ALIASES = {"learning_rate": "lr", "learningrate": "lr", "wd": "weight_decay", "bs": "batch_size",
           "batchsize": "batch_size", "num_epochs": "epochs", "n_epochs": "epochs", "workers": "num_workers",
           "sequence_length": "seq_len", "seqlen": "seq_len", "img_size": "image_size", "resolution": "image_size"}


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _source(source: Source, key: str) -> str:
    return source(key) if callable(source) else source


@functools.cache  # resolving the annotations is most of the time a resolve takes
def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of the dataclass ``cls`` (do not modify)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _describe(tp: Any) -> str:
    """What a value of annotation ``tp`` is, in the words of the type errors."""
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(tp)))
    if typing.get_origin(tp) is tuple:
        return "a list"
    return f"a mapping of {tp.__name__} fields" if dataclasses.is_dataclass(tp) else WORDS.get(tp, str(tp))


def _got(value: Any) -> str:
    """``got 'ten'``, with a hint when a number arrived as a string (quoted in YAML, or spelled nan/inf)."""
    try:
        number = isinstance(value, str) and float(value) is not None
    except ValueError:
        number = False
    spelled = number and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity")
    hint = " (YAML spells them .nan, .inf, -.inf)" if spelled else " (a quoted string: drop the quotes)"
    return f"got {value!r}{hint if number else ''}"


def _coerce(value: Any, tp: Any, key: str, source: Source) -> Any:
    """``value`` (parsed YAML) checked against the annotation ``tp`` and typed (an int where a float is expected
    becomes a float, a list a tuple); else a ConfigError naming ``key`` (``train.lr``) and ``source``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    union = origin in (typing.Union, types.UnionType)
    if union:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                pass
    elif origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))} (in {_source(source, key)})")
    elif origin is tuple:  # tuple[X, ...]: a list, or one integer as a list of one
        items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(items, list | tuple):
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(items))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, key, source)
    elif tp in SCALARS:
        if isinstance(value, SCALARS[tp]) and (tp is bool or not isinstance(value, bool)):
            return float(value) if tp is float else dict(value) if tp is dict else value
    else:
        raise ConfigError(f"{key}: unsupported config type {tp!r}")  # a bug in a Config class
    expected = " or ".join(map(_describe, args if union else [tp]))
    raise ConfigError(f"{key}: expected {expected}, {_got(value)} (in {_source(source, key)})")


def from_dict(cls: type, data: dict, prefix: str = "", source: Source = "the config") -> Any:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys and bad types.

    ``prefix``: the dotted key of ``data`` itself ("" for a RunConfig, "model", "train"); ``source``:
    where the values came from (a text, or a function of the dotted key), named by every error.
    """
    fields = _fields(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        in_run = cls is RunConfig or prefix.partition(".")[0] in _fields(RunConfig)
        raise unknown_key_error(unknown, list(fields), prefix, source, in_run)
    return cls(**{k: _coerce(v, fields[k], _join(prefix, k), source) for k, v in data.items()})


def unknown_key_error(unknown: Sequence[str], valid: Sequence[str], prefix: str, source: Source,
                      run_config: bool = False) -> ConfigError:
    """``unknown key train.leraning_rate in FILE; did you mean train.lr? valid keys of train: ...``

    The guess is the valid key closest to the first unknown key (a typo, or one of the ALIASES); else, in a
    RunConfig (``run_config``), the same name in another top-level section (``train.seq_len`` -> ``data.seq_len``).
    """
    first, *others = [_join(prefix, k) for k in unknown]
    key = str(unknown[0]).lower()
    candidates = {name: name for name in valid}
    candidates.update({alias: name for alias, name in ALIASES.items() if name in candidates})
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    guess = ""
    if close:
        guess = _join(prefix, candidates[close[0]])
    elif run_config and "." not in prefix:
        name = ALIASES.get(key, str(unknown[0]))
        guess = " or ".join(k for k, _ in leaves(to_dict(RunConfig())) if k.rpartition(".")[2] == name
                            and k.rpartition(".")[0] != prefix)
    hint = f"; did you mean {guess}?" if guess else ";"
    also = f" (also unknown: {', '.join(others)})" if others else ""
    return ConfigError(f"unknown key {first} in {_source(source, first)}{hint} valid keys"
                       f"{' of ' + prefix if prefix else ''}: {', '.join(valid)}{also}")


def to_dict(cfg: Any) -> Any:
    """Plain nested dict (tuples as lists) of a config dataclass, for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return [to_dict(v) for v in cfg] if isinstance(cfg, list | tuple) else cfg


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins); neither input is modified."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def leaves(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value and every empty mapping of nested ``d``."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, _join(prefix, k))
        else:
            yield _join(prefix, k), v


# ---------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Overrides:
    """User settings (a nested dict in the ``to_dict`` layout) and where each one came from.

    ``origins`` maps dotted keys to their source: a config file's path, ``--set KEY=VALUE``, a flag,
    ``per_method block 'X' of FILE``. Built by :func:`layer` and :func:`set_overrides`, combined by
    :func:`stack` (later wins).
    """

    values: dict
    origins: dict[str, str] = field(default_factory=dict)

    def source_of(self, key: str, default: str = "the config") -> str:
        """Where dotted ``key`` (``train.lr``, ``probe.eval_seq_lens[0]``) was set: the key, its section, or a
        key inside it (for a section); ``default`` if nowhere."""
        key = re.sub(r"\[\d+\]", "", key)
        part = key
        while part:
            if part in self.origins:
                return self.origins[part]
            part = part.rpartition(".")[0]
        inside = [s for k, s in self.origins.items() if k.startswith(key + ".")]
        return inside[-1] if inside else default


def layer(values: dict, source: str) -> Overrides:
    """Every key of ``values`` set by ``source``."""
    return Overrides(values, {k: source for k, _ in leaves(values)})


def stack(*layers: Overrides | dict) -> Overrides:
    """Layers merged in order (later wins, as :func:`merge`); a plain dict is a layer from "the config"."""
    values: dict = {}
    origins: dict[str, str] = {}
    for lay in layers:
        lay = lay if isinstance(lay, Overrides) else layer(lay, "the config")
        values = merge(values, lay.values)
        for key, value in leaves(lay.values):
            if not isinstance(value, dict):  # a value replaces the whole section it lands on
                origins = {k: s for k, s in origins.items() if not k.startswith(key + ".")}
        origins.update(lay.origins)
    return Overrides(values, origins)


def set_overrides(items: list[str]) -> Overrides:
    """``["train.lr=1e-3", ...]`` -> nested values (YAML 1.2 scalars), each from ``--set KEY=VALUE``."""
    out: dict = {}
    origins: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=5")
        where = f"--set {item}"
        try:
            value = yamlio.load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: the value is not valid YAML ({e})") from None
        set_dotted(out, key, value, where)
        origins = {k: s for k, s in origins.items() if not k.startswith(key + ".")}
        origins[key] = where
    return Overrides(out, origins)


def parse_set(items: list[str]) -> dict:
    """``["train.epochs=5", "model.act_cond=false"]`` -> nested dict, values parsed as YAML 1.2 scalars."""
    return set_overrides(items).values


def set_dotted(out: dict, key: str, value: Any, where: str) -> None:
    """``out["a"]["b"] = value`` for ``key`` "a.b", creating sections; ``where`` names the source in errors."""
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {p} is set both as a value and as a section")
    node[leaf] = value


def layered_overrides(config_files: list[str], flags: dict, sets: list[str],
                      flag_names: dict[str, str] | None = None) -> Overrides:
    """User overrides in resolution order: YAML files, then CLI flags (None = not given), then --set.

    ``flag_names``: dotted key -> the flag that sets it (``{"train.batch_size": "--batch-size"}``), for errors.
    """
    def drop_none(d: dict) -> dict:
        kept = {k: drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}

    flags = drop_none(flags)
    names = flag_names or {}
    from_flags = Overrides(flags, {k: names.get(k, "a command-line flag") for k, _ in leaves(flags)})
    return stack(*(layer(load_yaml(f), str(f)) for f in config_files), from_flags, set_overrides(sets))


def load_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping (config, sweep, cluster preset), YAML 1.2 floats (benchmark/infra/yamlio.py)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yamlio.load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of config keys at the top level")
    return data


# ---------------------------------------------------------------------------------------- run identity
def semantic(d: dict) -> dict:
    """A config dict (``to_dict`` layout) without the NON_SEMANTIC fields: what the run identity covers."""
    d = json.loads(json.dumps(d))  # a deep copy that also turns tuples into lists
    for path in NON_SEMANTIC:
        node = d
        for p in path[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def config_diff(old: dict, new: dict, old_name: str = "before", new_name: str = "now") -> list[str]:
    """``["train.lr: 0.0004 (before) vs 0.001 (now)", ...]`` for every dotted key whose value differs."""
    a, b = dict(leaves(old)), dict(leaves(new))

    def show(d: dict, key: str) -> str:
        return json.dumps(d[key]) if key in d else "(absent)"
    return [f"{k}: {show(a, k)} ({old_name}) vs {show(b, k)} ({new_name})"
            for k in sorted(a.keys() | b.keys()) if k not in a or k not in b or a[k] != b[k]]


def config_hash(cfg: RunConfig) -> str:
    """Stable 8-hex-digit identity of everything that changes the computation."""
    return hashlib.sha256(json.dumps(semantic(to_dict(cfg)), sort_keys=True).encode()).hexdigest()[:8]


def run_dir(cfg: RunConfig) -> Path:
    """Deterministic run directory: ``{out}/[{sweep}/]{method}/{dataset}/L{seq_len}/seed{seed}-{hash}``."""
    parts = [cfg.sweep] if cfg.sweep else []
    parts += [cfg.method.replace(":", "_"), cfg.dataset, f"L{cfg.data.seq_len}", f"seed{cfg.seed}-{config_hash(cfg)}"]
    return Path(cfg.out).joinpath(*parts)
