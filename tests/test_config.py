"""Typed configs: unknown keys and bad types are rejected clearly; run identity is deterministic."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmark.config import RunConfig, config_hash, from_dict, parse_set, run_dir
from benchmark.errors import ConfigError
from benchmark.registry import resolve


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key epochz in train; valid keys: epochs, batch_size"):
        resolve({"train": {"epochz": 3}})


def test_unknown_model_key_is_checked_against_the_method_config():
    with pytest.raises(ConfigError, match="unknown key act_cnd in model; valid keys: act_cond"):
        resolve({"model": {"act_cnd": False}})


@pytest.mark.parametrize("key,value,msg", [
    ("train", {"epochs": "ten"}, "train.epochs: expected an integer, got 'ten'"),
    ("train", {"epochs": True}, "train.epochs: expected an integer"),
    ("model", {"act_cond": "yes"}, "model.act_cond: expected true or false"),
    ("data", {"latent_type": "euler"}, "data.latent_type: 'euler' is not one of 'rot', 'rotcolor', 'all'"),
    ("probe", {"eval_seq_lens": ["a"]}, r"probe.eval_seq_lens\[0\]: expected an integer"),
])
def test_wrong_types_are_rejected(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve({key: value})


def test_value_checks():
    with pytest.raises(ConfigError, match="data.seq_len .* must be >= 1"):
        resolve({"data": {"seq_len": 0}})
    with pytest.raises(ConfigError, match="unknown method 'sjepa'; valid methods: .*seqjepa"):
        resolve({"method": "sjepa"})
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; valid datasets: .*3diebench"):
        resolve({"dataset": "imagenet"})
    with pytest.raises(ConfigError, match=r"probe.bank_views must be 0 \(every view of an object\) or >= 2, got 1"):
        resolve({"probe": {"bank_views": 1}})
    with pytest.raises(ConfigError, match="probe.bank_draws must be >= 1, got 0"):
        resolve({"probe": {"bank_draws": 0}})
    with pytest.raises(ConfigError, match="probe.view_protocol"):
        resolve({"probe": {"view_protocol": "fresh"}})


def test_set_parsing_is_nested_and_typed():
    assert parse_set(["train.epochs=5", "model.act_cond=false", "probe.eval_seq_lens=[1, 3]", "sweep=x"]) == {
        "train": {"epochs": 5}, "model": {"act_cond": False}, "probe": {"eval_seq_lens": [1, 3]}, "sweep": "x"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["train.epochs"])


def test_resolution_order_and_method_defaults():
    cfg = resolve({"dataset": "3diebench", "train": {"epochs": 7}})
    assert cfg.data.image_size == 128 and cfg.train.batch_size == 512  # dataset preset (paper)
    assert cfg.train.epochs == 7  # user wins over preset
    assert cfg.model["ema_decay"] == 0.996 and cfg.model["act_cond"] is True  # method defaults filled in
    assert cfg.probe.eval_seq_lens == () and cfg.eval_seq_len == cfg.data.seq_len
    assert from_dict(RunConfig, {"probe": {"eval_seq_lens": 4}}).probe.eval_seq_lens == (4,)


def test_run_dir_is_deterministic_and_ignores_non_semantic_fields():
    cfg = resolve({"dataset": "3diebench-mini"})
    same = replace(cfg, device="cpu", data=replace(cfg.data, num_workers=7))
    assert config_hash(cfg) == config_hash(same) and run_dir(cfg) == run_dir(same)
    other = replace(cfg, seed=1)
    assert run_dir(other) != run_dir(cfg)
    assert str(run_dir(cfg)).startswith("results/runs/seqjepa/3diebench-mini/L3/seed0-")
    assert run_dir(replace(cfg, sweep="smoke")).parts[2] == "smoke"
