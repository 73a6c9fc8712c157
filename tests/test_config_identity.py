"""Run identity is pinned: every dataset x method, dataset x a few settings, the config files and every named
sweep's runs resolve to the same config and run directory as recorded in tests/fixtures/config_identity.json.

A refactoring of the config code must not move a run directory (finished runs would be trained again) or change
a resolved value. A deliberate change (a new semantic key, a new preset value) regenerates the fixture with
``python -m tests.test_config_identity --write`` and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmark.config import RunConfig, layer, layered_overrides, run_dir, to_dict
from benchmark.core import sweeps
from benchmark.core.registry import DATASETS, METHODS
from benchmark.core.resolve import resolve

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "config_identity.json"
CONFIGS = Path(__file__).resolve().parent.parent / "benchmark" / "configs"
EXTRAS = ({"probe": {"preset": "seqjepa"}}, {"data": {"seq_len": 1}, "probe": {"eval_seq_lens": [1, 3, 5]}},
          {"data": {"latent_type": "all"}, "train": {"lr": 1e-3, "optimizer_preset": "upstream-code"}},
          {"probe": {"preset": "seqjepa", "lr": 0.01}, "seed": 3, "sweep": "x", "device": "cpu"})


def cases() -> Iterator[tuple[str, Callable[[], RunConfig]]]:
    """(label, resolve it) for every pinned config."""
    for ds in DATASETS:
        for m in METHODS:
            yield f"user {ds} {m}", lambda d={"dataset": ds, "method": m}: resolve(layer(d, "the config"))
        for extra in EXTRAS:
            yield f"user {ds} seqjepa {extra}", lambda d={"dataset": ds, **extra}: resolve(layer(d, "the config"))
    for f in sorted(CONFIGS.glob("*.yaml")):
        for flag, names in (("method", METHODS), ("dataset", DATASETS)):
            for name in names:
                label = f"file {f.name} {name}" if flag == "method" else f"file {f.name} ds={name}"
                yield label, lambda f=f, flags={flag: name}: resolve(layered_overrides([str(f)], flags, []))
    for sweep_name, sweep in sweeps.SWEEPS.items():
        for i in range(len(sweep)):
            yield f"sweep {sweep_name}[{i}]", lambda s=sweep, i=i: s.config(i, {"out": "runs", "device": "cpu"})


def identity(cfg: RunConfig) -> list[str]:
    """[run directory, digest of the whole resolved config]."""
    return [str(run_dir(cfg)), hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]]


def current() -> dict[str, list[str]]:
    out = {}
    for label, make in cases():
        try:
            out[label] = identity(make())
        except Exception as e:  # a combination the config rejects is pinned as rejected
            out[label] = [f"rejected: {type(e).__name__}"]
    return out


def test_resolved_configs_and_run_directories_are_unchanged():
    pinned, now = json.loads(FIXTURE.read_text()), current()
    assert sum(len(v) == 2 for v in pinned.values()) > 300  # hundreds of accepted configs, not only rejections
    changed = [f"{k}: {pinned[k]} -> {now.get(k)}" for k in pinned if now.get(k) != pinned[k]]
    assert not changed, f"{len(changed)} of {len(pinned)} configs changed, e.g. " + "; ".join(changed[:5])


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_config_identity --write  (regenerates the fixture)")
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(current().items())]
    FIXTURE.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one config a line: readable diffs
