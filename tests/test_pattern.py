"""The CPU pattern regime: per-method blocks in config files, benchmark/configs/pattern.yaml and the
``pattern`` sweep."""

from __future__ import annotations

import pytest

from benchmark.errors import ConfigError
from benchmark.registry import resolve


def test_per_method_block_applies_to_its_method_only() -> None:
    user = {"per_method": {"seqjepa": {"model": {"ema_decay": 0.9}, "train": {"lr": 1e-3}}}}
    assert resolve({**user, "method": "seqjepa"}).model["ema_decay"] == 0.9
    assert resolve({**user, "method": "seqjepa"}).train.lr == 1e-3
    simclr = resolve({**user, "method": "simclr"})
    assert "ema_decay" not in simclr.model and simclr.train.lr is None
    # anything set directly wins over the block
    assert resolve({**user, "method": "seqjepa", "model": {"ema_decay": 0.5}}).model["ema_decay"] == 0.5


def test_per_method_block_errors() -> None:
    with pytest.raises(ConfigError, match="unknown method 'seqjpa'"):
        resolve({"per_method": {"seqjpa": {"model": {}}}})
    with pytest.raises(ConfigError, match="per_method must map method names"):
        resolve({"per_method": {"seqjepa": 3}})
    with pytest.raises(ConfigError, match="ema_decy"):
        resolve({"per_method": {"seqjepa": {"model": {"ema_decy": 0.9}}}})
