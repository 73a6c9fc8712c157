"""Sweeps: a name -> a deterministic, indexable list of runs (run i = SLURM array task i).

A run is a flat dict of dotted config keys (``{"method": "seqjepa", "data.seq_len": 3, "seed": 0}``),
the same keys ``--set`` takes. Sweeps are built from axes with ``product`` (first axis varies
slowest), ``zipped`` and ``chain``, as disentanglement_lib's ``hyperparams.py`` does; seeds are the
replicate index 0..n-1 (not random), the outermost axis, so every method gets the same seeds and the
first n/len(seeds) runs already form one complete table. Each run resolves through
``benchmark.core.resolve.resolve`` like a CLI run, so a sweep can only name what the CLI accepts, and its
run directory is ``{out}/{sweep}/{method}/{dataset}/L{seq_len}/seed{seed}-{hash}``.

Named sweeps live in :data:`SWEEPS`; a YAML file defines others (:func:`from_yaml`, format in
slurm/README.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import (
    SWEEP_NAME,
    SWEEP_RULE,
    Overrides,
    RunConfig,
    layer,
    load_yaml,
    run_dir,
    set_dotted,
    stack,
    unknown_key_error,
)
from benchmark.core.resolve import resolve
from benchmark.infra.errors import ConfigError, SeqbenchError

Run = dict[str, Any]  # dotted config key -> value


# ---------------------------------------------------------------------------------------- combinators
def axis(key: str, values: Iterable[Any]) -> list[Run]:
    """One run per value of ``key``."""
    return [{key: v} for v in values]


def fixed(settings: Run) -> list[Run]:
    """A single run holding ``settings`` (shared by every run it is combined with in a product)."""
    return [dict(settings)]


def product(*parts: list[Run]) -> list[Run]:
    """Every combination; the first part varies slowest. Later parts win on a shared key."""
    return [_union(combo) for combo in itertools.product(*parts)]


def zipped(*parts: list[Run]) -> list[Run]:
    """Run i combines run i of every part (all parts must have the same length)."""
    lengths = {len(p) for p in parts}
    if len(lengths) > 1:
        raise ConfigError(f"zip needs parts of equal length, got lengths {[len(p) for p in parts]}")
    return [_union(combo) for combo in zip(*parts, strict=True)]


def chain(*parts: list[Run]) -> list[Run]:
    """The runs of each part, one part after the other."""
    return [dict(r) for p in parts for r in p]


def replicates(n: int) -> list[Run]:
    """Seeds 0..n-1: derived from the replicate index, identical for every method (paired comparison)."""
    return axis("seed", range(n))


def _union(runs: Iterable[Run]) -> Run:
    out: Run = {}
    for r in runs:
        out.update(r)
    return out


# ---------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    runs: tuple[Run, ...]
    source: str = "benchmark/core/sweeps.py"  # where the runs are defined: named in config errors

    def __post_init__(self) -> None:
        if not SWEEP_NAME.fullmatch(self.name):
            raise ConfigError(f"sweep name {self.name!r}: {SWEEP_RULE} (it names a folder)")
        if not self.runs:
            raise ConfigError(f"sweep {self.name!r} has no runs")

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> Run:
        return self.runs[index]

    def varying_keys(self) -> list[str]:
        """Keys whose value differs between runs (what the dry-run table shows), in first-seen order."""
        keys = dict.fromkeys(k for r in self.runs for k in r)
        return [k for k in keys if len({repr(r.get(k)) for r in self.runs}) > 1]

    def config(self, index: int, overrides: dict | Overrides | None = None) -> RunConfig:
        """Run ``index`` resolved to a full RunConfig; ``overrides`` (nested, e.g. out/device) apply last."""
        run = self.runs[index]
        extra = overrides if isinstance(overrides, Overrides) else layer(overrides or {}, "the launch overrides")
        try:
            return resolve(stack(layer(nest(run), self.source), layer({"sweep": self.name}, self.source), extra))
        except SeqbenchError as e:
            raise ConfigError(f"sweep {self.name!r} run {index} ({describe(run, self.varying_keys())}): {e}") from None

    def configs(self, overrides: dict | Overrides | None = None,
                indices: Sequence[int] | None = None) -> list[RunConfig]:
        """Runs ``indices`` (default all) resolved, or a ConfigError naming the first bad one; two runs may
        not share a run directory (an override such as ``--set method=x`` can erase an axis)."""
        indices = range(len(self)) if indices is None else indices
        cfgs = [self.config(i, overrides) for i in indices]
        seen: dict[Path, int] = {}
        for i, c in zip(indices, cfgs, strict=True):
            d = run_dir(c)
            if d in seen:
                raise ConfigError(f"sweep {self.name!r}: runs {seen[d]} and {i} resolve to the same run directory "
                                  f"{d}; make them differ in a setting (an override may have erased an axis)")
            seen[d] = i
        return cfgs


def nest(run: Run) -> dict:
    """``{"data.seq_len": 3}`` -> ``{"data": {"seq_len": 3}}``."""
    out: dict = {}
    for key, value in run.items():
        set_dotted(out, key, value, f"sweep key {key!r}")
    return out


def flatten(d: dict, prefix: str = "") -> Run:
    """Inverse of :func:`nest` (a nested mapping of settings -> dotted keys)."""
    out: Run = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def describe(run: Run, keys: Sequence[str] | None = None) -> str:
    """``method=seqjepa data.seq_len=3`` for the given keys (default: all)."""
    keys = list(run) if keys is None else keys
    return " ".join(f"{k}={_short(run[k])}" for k in keys if k in run)


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return "[" + ",".join(map(_short, v)) + "]"
    return str(v)


# ---------------------------------------------------------------------------------------- YAML sweeps
def from_yaml(path: str | Path) -> Sweep:
    """A sweep from a YAML file: ``name``, ``description``, ``seeds``, ``fixed``, ``runs`` (slurm/README.md)."""
    data = load_yaml(path)
    known = ["name", "description", "seeds", "fixed", "runs"]
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        raise unknown_key_error(unknown, known, "", f"sweep file {path} (a sweep file's top level)")
    name = data.get("name") or Path(path).stem
    seeds = data.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seed_axis = replicates(seeds)
    elif isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        seed_axis = axis("seed", seeds)
    else:
        raise ConfigError(f"sweep file {path}: seeds must be a count >= 1 or a list of integers, got {seeds!r}")
    shared = data.get("fixed") or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"sweep file {path}: fixed must be a mapping of settings, got {shared!r}")
    runs = _node(data.get("runs", {}), f"{path}: runs")
    return Sweep(str(name), str(data.get("description", "")), tuple(product(seed_axis, [flatten(shared)], runs)),
                 f"sweep file {path}")


def _node(node: Any, where: str) -> list[Run]:
    """``{product|zip|chain: [node, ...]}`` or ``{key: [values], ...}`` (one axis per key, product)."""
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: expected a mapping (product/zip/chain or key: [values]), got {node!r}")
    ops = {"product": product, "zip": zipped, "chain": chain}
    if len(node) == 1 and next(iter(node)) in ops:
        op, parts = next(iter(node.items()))
        if isinstance(parts, dict):  # product: {a: [..], b: [..]} == product: [{a: [..]}, {b: [..]}]
            parts = [{k: v} for k, v in parts.items()]
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"{where}.{op}: expected a non-empty list of nodes, got {parts!r}")
        return ops[op](*(_node(p, f"{where}.{op}[{i}]") for i, p in enumerate(parts)))
    axes = []
    for key, values in node.items():
        if isinstance(values, dict):
            raise ConfigError(f"{where}.{key}: axis values must be a list (write nested keys dotted: data.seq_len)")
        values = values if isinstance(values, list) else [values]  # a scalar is a one-value axis
        if not values:
            raise ConfigError(f"{where}.{key}: empty list of values")
        axes.append(axis(str(key), values))
    return product(*axes) if axes else [{}]


# ---------------------------------------------------------------------------------------- named sweeps
# Two-view baselines (paper Table 1 rows; baselines/): one observation + one target, so L1.
PAIR_BASELINES = ("simclr", "byol", "vicreg", "sen", "equimod", "sie", "cond-byol", "vicreg-traj")
# The transformer-augmented controls (baselines/tx.py): seq_len = observations per sequence.
TX_BASELINES = ("simclr+tx", "byol+tx", "vicreg+tx")
TABLE1_EVAL_LENS = [1, 3, 5]  # Table 1 reports seq-JEPA at M_val 1, 3 (M_tr=1) and 3, 5 (M_tr=3)
HEATMAP_TRAIN_LENS = [1, 2, 3, 4, 5]  # 3db_rotation_heatmap.pdf columns (benchmark/reporting/paper_results.yaml)
HEATMAP_EVAL_LENS = list(range(1, 9))  # its rows: M_val = 1..8, probed from each run (no retraining)

# Settings of the embedded tiny dataset used by tests and CI: seconds per run on one CPU core.
SMOKE_SETTINGS = {
    "dataset": "3diebench-mini", "data.image_size": 32, "data.seq_len": 2, "data.num_workers": 1,
    "data.mini.classes": 3, "data.mini.objects_per_class": 5, "data.mini.views": 6, "data.mini.resolution": 32,
    "train.batch_size": 4, "train.epochs": 8, "train.warmup_epochs": 1, "train.checkpoint_every": 10,
    "train.log_every": 1, "train.progress": False,
    "probe.epochs": 2, "probe.train_samples": 1, "probe.val_samples": 1, "probe.hidden": 32,
}


def _paper_3diebench() -> Sweep:
    # The 3DIEBench preset is seq-JEPA's script: 1000 epochs, batch 512, 128 px (benchmark/core/registry.py).
    seqjepa = {"method": "seqjepa", "probe.eval_seq_lens": TABLE1_EVAL_LENS}
    runs = product(replicates(3), fixed({"dataset": "3diebench"}), chain(
        product(axis("method", PAIR_BASELINES), fixed({"data.seq_len": 1})),
        fixed({**contextssl_environment({}), "data.seq_len": 1}),
        product(fixed(seqjepa), axis("data.seq_len", [1, 3])),
        fixed({**seqjepa, "model.act_cond": False, "data.seq_len": 3}),
    ))
    return Sweep("paper-3diebench", "Table 1 of seq-JEPA: every method on 3DIEBench at the paper's settings, "
                 "3 seeds", tuple(runs))


def _seqlen_ablation() -> Sweep:
    runs = product(replicates(1), fixed({"dataset": "3diebench", "probe.eval_seq_lens": HEATMAP_EVAL_LENS}),
                   axis("method", ("seqjepa", *TX_BASELINES)), axis("data.seq_len", HEATMAP_TRAIN_LENS))
    return Sweep("seqlen-ablation", "training length M_tr 1..5 for seq-JEPA and the +tx baselines, each probed "
                 "at inference lengths M_val 1..8 (the 3DIEBench heatmap)", tuple(runs))


def _action_ablation() -> Sweep:
    shared = {"dataset": "3diebench", "method": "seqjepa", "data.seq_len": 3, "probe.eval_seq_lens": TABLE1_EVAL_LENS}
    runs = product(replicates(3), fixed(shared), axis("model.act_cond", [True, False]))
    return Sweep("action-ablation", "seq-JEPA with and without action conditioning (M_tr = 3), 3 seeds",
                 tuple(runs))


def _smoke() -> Sweep:
    runs = product(replicates(1), fixed({**SMOKE_SETTINGS, "method": "seqjepa"}),
                   axis("model.act_cond", [True, False]))
    return Sweep("smoke", "two tiny seq-JEPA runs on a 3-class 3diebench-mini (tests, CI, a first try of a "
                 "cluster)", tuple(runs))


# The invariance/equivariance pattern study (docs/pattern.md): each method at one shared regime given by a
# config file, seq-JEPA also without actions and at random initialisation (the reference of its gains).
PATTERN_METHODS = ("seqjepa", "simclr", "byol", "vicreg", "sie", "equimod", "sen", "cond-byol", "contextssl")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def contextssl_environment(regime: Run) -> Run:
    """ContextSSL's run in a sweep whose shared settings are ``regime``: its authors' environments and actions
    (benchmark/configs/contextssl-upstream.yaml: rotation and colour actions, ``data.latent_type=rotcolor``, the rot
    and colour environments drawn 0.5 / 0.5 per batch; one (x, x+) pair per object, ``data.seq_len`` unused in
    training), except on the pose-only mini: its colour never changes, so a colour environment would hold zero
    actions and a constant auxiliary target; there it trains in the rotation environment only
    (``data.latent_type=rot``, env_ratio resolves to [1, 0, 0]; docs/baselines.md §3)."""
    if regime.get("data.mini.variant") == "pose-only":
        return {"method": "contextssl", "data.latent_type": "rot"}
    return flatten(load_yaml(CONFIGS / "contextssl-upstream.yaml"))


def _pattern(name: str, config: str, description: str) -> Sweep:
    regime = flatten(load_yaml(CONFIGS / config))
    runs = product(replicates(2), fixed(regime), chain(
        [contextssl_environment(regime) if m == "contextssl" else {"method": m} for m in PATTERN_METHODS],
        fixed({"method": "seqjepa", "model.act_cond": False}),
        fixed({"method": "seqjepa", "train.epochs": 0}),
    ))
    return Sweep(name, description, tuple(runs),
                 f"sweep {name!r} (benchmark/core/sweeps.py, benchmark/configs/{config})")


# The per-method selection grid of the pattern study (docs/pattern.md, "Per-method choices"): seed 0, the CPU
# regime, every method at two learning rates, SIE also at 1/50 of its equivariance weight; scored on the
# selection split (probe.validation_objects in pattern.yaml) by python -m benchmark.studies.selection. The methods that
# collapse at the shared setting come first, so that a partial grid already answers for them.
PATTERN_GRID_METHODS = ("byol", "cond-byol", "sie", "seqjepa", "simclr", "vicreg", "equimod", "sen", "contextssl")
PATTERN_GRID_LRS = [4e-4, 2e-3]


def _pattern_select() -> Sweep:
    regime = flatten(load_yaml(CONFIGS / "pattern.yaml"))
    runs = product(replicates(1), fixed(regime), chain(
        product(axis("method", PATTERN_GRID_METHODS), axis("train.lr", PATTERN_GRID_LRS)),
        product(fixed({"method": "sie", "model.equi_factor": 0.02}), axis("train.lr", PATTERN_GRID_LRS)),
    ))
    return Sweep("pattern-select", "the pattern study's per-method grid (learning rate; SIE's equivariance weight), "
                 "seed 0, scored on the selection split carved from the training objects (docs/pattern.md)",
                 tuple(runs), "sweep 'pattern-select' (benchmark/core/sweeps.py, benchmark/configs/pattern.yaml)")


SWEEPS: dict[str, Sweep] = {s.name: s for s in (
    _paper_3diebench(), _seqlen_ablation(), _action_ablation(), _smoke(),
    _pattern("pattern", "pattern.yaml", "the invariance/equivariance pattern on 2 CPU cores: 9 methods, seq-JEPA "
             "without actions and at random init, 2 seeds, on the pose-only 3diebench-mini (docs/pattern.md)"),
    _pattern("pattern-gpu", "pattern-gpu.yaml", "the pattern study at the paper's backbone and resolution, sized "
             "for one GPU in under an hour (docs/pattern.md)"),
    _pattern_select(),
)}


def load(name_or_path: str) -> Sweep:
    """A named sweep, or one defined in a YAML file."""
    if name_or_path in SWEEPS:
        return SWEEPS[name_or_path]
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"sweep file {p} does not exist")
        return from_yaml(p)
    raise ConfigError(f"unknown sweep {name_or_path!r}; named sweeps: {', '.join(SWEEPS)} "
                      f"(or give the path of a sweep YAML file, see slurm/README.md)")
