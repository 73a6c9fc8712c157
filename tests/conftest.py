"""Shared test fixtures: a tiny 3diebench-mini in a per-session cache and CLI args for fast runs."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # 2-core CI machine: one thread per test process keeps the suite predictable

# Smallest mini dataset and budget that still exercise every code path (seconds on a CPU).
TINY_SETS = {
    "data.mini.classes": 3, "data.mini.objects_per_class": 5, "data.mini.views": 6, "data.mini.resolution": 32,
    "data.num_workers": 0, "train.progress": "false", "train.warmup_epochs": 0,
    "probe.epochs": 2, "probe.train_samples": 1, "probe.val_samples": 1, "probe.hidden": 32,
}


def tiny_args(out, **overrides) -> list[str]:
    """CLI arguments for a seconds-long run on the tiny mini dataset, writing under ``out``."""
    sets = {**TINY_SETS, **overrides}
    args = ["--dataset", "3diebench-mini", "--image-size", "32", "--batch-size", "4", "--epochs", "1",
            "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


@pytest.fixture(scope="session", autouse=True)
def _seqbench_cache(tmp_path_factory):
    """Keep generated datasets out of the user's cache; shared by all tests of a session."""
    old = os.environ.get("SEQBENCH_CACHE")
    os.environ["SEQBENCH_CACHE"] = str(tmp_path_factory.mktemp("seqbench-cache"))
    yield
    if old is None:
        os.environ.pop("SEQBENCH_CACHE", None)
    else:
        os.environ["SEQBENCH_CACHE"] = old
