"""Typed configs: YAML 1.2 numbers everywhere, unknown keys and bad types rejected naming their source,
run identity is deterministic."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.config import (
    RunConfig,
    config_hash,
    from_dict,
    layer,
    layered_overrides,
    load_yaml,
    parse_set,
    run_dir,
    set_overrides,
    stack,
)
from benchmark.core import sweeps
from benchmark.core.resolve import resolve
from benchmark.infra import yamlio
from benchmark.infra.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "benchmark" / "configs"


def test_unknown_key_lists_valid_ones_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key train.epochz in the config; did you mean train.epochs\? "
                                          r"valid keys of train: epochs, batch_size"):
        resolve({"train": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"unknown key train.leraning_rate .*did you mean train.lr\?"):
        resolve({"train": {"leraning_rate": 1e-3}})
    with pytest.raises(ConfigError, match=r"unknown key train.seq_len .*did you mean data.seq_len\?"):
        resolve({"train": {"seq_len": 2}})
    with pytest.raises(ConfigError, match=r"unknown key train.zzz in the config; valid keys of train"):
        resolve({"train": {"zzz": 2}})


def test_unknown_model_key_is_checked_against_the_method_config():
    with pytest.raises(ConfigError, match=r"unknown key model.act_cnd in the config; did you mean model.act_cond\? "
                                          r"valid keys of model: act_cond"):
        resolve({"model": {"act_cnd": False}})


# ---------------------------------------------------------------------------------------- YAML 1.2 numbers
@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("5e-4", 5e-4), ("1.0e5", 1e5), ("-2E+2", -200.0), (".5", 0.5), ("-.5", -0.5), ("1.5", 1.5),
    (".inf", math.inf), ("-.inf", -math.inf), ("5", 5), ("-3", -3), ("0x10", 16), ("1_000", 1000),
    ("1e-3abc", "1e-3abc"), ("nan", "nan"), ("inf", "inf"), ("e3", "e3"), ("3.1.4", "3.1.4"), ("true", True),
    ("null", None), ("[1e-3, 2]", [1e-3, 2]), ("'1e-3'", "1e-3"),
])
def test_the_loader_reads_yaml_1_2_floats_and_nothing_else_changes(text, value):
    got = yamlio.load(text)
    assert got == value and type(got) is type(value)


def test_nan_and_round_trip_of_the_dumper():
    assert math.isnan(yamlio.load(".nan"))
    data = {"lr": 1e-5, "name": "1e3", "paths": ["2e2", "x"], "n": 3, "big": math.inf}
    assert yamlio.load(yamlio.dump(data)) == data  # "1e3" the string stays a string


def test_set_reads_yaml_1_2_floats():
    assert parse_set(["train.lr=1e-3", "probe.lr=5e-4", "train.epochs=5"]) == {
        "train": {"lr": 0.001, "epochs": 5}, "probe": {"lr": 0.0005}}
    cfg = resolve(set_overrides(["train.lr=1e-3", "train.weight_decay=.0", "probe.weight_decay=1e-6"]))
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float) and cfg.probe.weight_decay == 1e-6
    assert isinstance(cfg.train.epochs, int)
    with pytest.raises(ConfigError, match=r"train.lr: expected a number or null, got '1e-3abc' \(in --set "
                                          r"train.lr=1e-3abc\)"):
        resolve(set_overrides(["train.lr=1e-3abc"]))
    with pytest.raises(ConfigError, match=r"got 'nan' \(YAML spells them .nan, .inf, -.inf\)"):
        resolve(set_overrides(["probe.lr=nan"]))
    with pytest.raises(ConfigError, match=r"train.lr must be a finite number >= 0, got inf \(in --set train.lr=.inf\)"):
        resolve(set_overrides(["train.lr=.inf"]))


def test_config_file_with_exponent_floats(tmp_path):
    f = tmp_path / "lr.yaml"
    f.write_text("train:\n  lr: 1e-3\n  weight_decay: 5e-4\nprobe:\n  lr: 5e-4\n  weight_decay: 1E-6\n")
    cfg = resolve(layered_overrides([str(f)], {}, []))
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.probe.lr, cfg.probe.weight_decay) == (1e-3, 5e-4, 5e-4, 1e-6)


def test_sweep_file_with_exponent_floats(tmp_path):
    f = tmp_path / "lrs.yaml"
    f.write_text("fixed: {dataset: 3diebench-mini, train.weight_decay: 1e-4}\nruns: {train.lr: [1e-3, 5e-4]}\n")
    sweep = sweeps.load(str(f))
    assert [r["train.lr"] for r in sweep.runs] == [1e-3, 5e-4]
    cfgs = sweep.configs({"out": str(tmp_path / "runs")})
    assert [c.train.lr for c in cfgs] == [1e-3, 5e-4] and cfgs[0].train.weight_decay == 1e-4
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: {train.lr: [1e-3, fast]}\n")
    with pytest.raises(ConfigError, match=rf"run 1 \(train.lr=fast\): train.lr: expected a number or null, got "
                                          rf"'fast' \(in sweep file {bad}\)"):
        sweeps.load(str(bad)).configs({})
    with pytest.raises(ConfigError, match=rf"unknown key sed in sweep file {bad} .*did you mean seeds\?"):
        bad.write_text("sed: 2\n")
        sweeps.load(str(bad))


def test_every_preset_config_file_resolves():
    for f in sorted(CONFIGS.glob("*.yaml")):
        cfg = resolve(layered_overrides([str(f)], {}, []))
        assert cfg.dataset and cfg.method, f


# ---------------------------------------------------------------------------------------- error sources
def test_unknown_key_in_a_file_names_the_file_and_suggests(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("train:\n  leraning_rate: 1e-3\n")
    with pytest.raises(ConfigError, match=rf"unknown key train.leraning_rate in {f}; did you mean train.lr\? "
                                          r"valid keys of train: epochs, batch_size"):
        resolve(layered_overrides([str(f)], {}, []))


def test_unknown_key_via_set_names_the_set():
    with pytest.raises(ConfigError, match=r"unknown key data.seq_lne in --set data.seq_lne=3; did you mean "
                                          r"data.seq_len\?"):
        resolve(layered_overrides([], {}, ["data.seq_lne=3"]))


def test_later_layers_win_and_errors_name_the_layer_that_set_the_value(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {epochs: ten, batch_size: 8}\n")
    b.write_text("train: {epochs: 3}\n")
    both = resolve(layered_overrides([str(a), str(b)], {}, []))  # b replaces a's bad value
    assert both.train.epochs == 3 and both.train.batch_size == 8
    assert resolve(layered_overrides([str(a), str(b)], {}, ["train.epochs=4"])).train.epochs == 4
    with pytest.raises(ConfigError, match=rf"train.epochs: expected an integer, got 'ten' \(in {a}\)"):
        resolve(layered_overrides([str(a)], {}, []))
    user = layered_overrides([str(a)], {"train": {"epochs": 2, "batch_size": None}}, [], {"train.epochs": "--epochs"})
    assert resolve(user).train.epochs == 2 and resolve(user).train.batch_size == 8
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 1, got 0 \(in --batch-size\)"):
        resolve(layered_overrides([str(b)], {"train": {"batch_size": 0}}, [], {"train.batch_size": "--batch-size"}))
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; .* \(in --set dataset=imagenet\)"):
        resolve(layered_overrides([str(b)], {}, ["dataset=imagenet"]))


def test_type_error_names_file_key_type_and_value(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("data:\n  image_size: big\n")
    with pytest.raises(ConfigError, match=rf"data.image_size: expected an integer, got 'big' \(in {f}\)"):
        resolve(layered_overrides([str(f)], {}, []))
    f.write_text("probe:\n  eval_seq_lens: [1, x]\n")
    with pytest.raises(ConfigError, match=rf"probe.eval_seq_lens\[1\]: expected an integer, got 'x' \(in {f}\)"):
        resolve(layered_overrides([str(f)], {}, []))
    f.write_text("train:\n  lr: '1e-3'\n")  # quoted: a string
    with pytest.raises(ConfigError, match=rf"train.lr: expected a number or null, got '1e-3' \(a quoted string: "
                                          rf"drop the quotes\) \(in {f}\)"):
        resolve(layered_overrides([str(f)], {}, []))


def test_per_method_errors_name_the_block_and_its_file(tmp_path):
    f = tmp_path / "regime.yaml"
    f.write_text("per_method:\n  simclr:\n    model: {temprature: 0.2}\n")
    # every block is checked, also those of the other methods
    with pytest.raises(ConfigError, match=rf"unknown key model.temprature in per_method block 'simclr' of {f}; "
                                          r"did you mean model.temperature\?"):
        resolve(layered_overrides([str(f)], {"method": "seqjepa"}, []))
    f.write_text("per_method:\n  seqjepa:\n    train: {lr: fast}\n")
    with pytest.raises(ConfigError, match=rf"train.lr: expected a number or null, got 'fast' \(in per_method block "
                                          rf"'seqjepa' of {f}\)"):
        resolve(layered_overrides([str(f)], {}, []))
    f.write_text("per_method:\n  seqjepa:\n    dataset: 3diebench\n")
    with pytest.raises(ConfigError, match=rf"dataset cannot be set in per_method block 'seqjepa' of {f}"):
        resolve(layered_overrides([str(f)], {}, []))
    f.write_text("per_method:\n  seqjepa:\n    train: {lr: 1e-3}\n")
    assert resolve(layered_overrides([str(f)], {}, [])).train.lr == 1e-3
    # a block's setting from --set names the --set
    with pytest.raises(ConfigError, match=r"in per_method block 'seqjepa' of --set per_method.seqjepa.model.emma=1"):
        resolve(stack(layer({}, "x"), set_overrides(["per_method.seqjepa.model.emma=1"])))


def test_cluster_preset_errors_name_the_file_and_suggest(tmp_path):
    from slurm.launch import load_preset

    f = tmp_path / "c.yaml"
    base = load_yaml(Path(__file__).resolve().parent.parent / "slurm" / "clusters" / "local.yaml")
    f.write_text(yamlio.dump({**base, "partiton": "gpu"}))
    with pytest.raises(ConfigError, match=rf"unknown key partiton in cluster preset {f}; did you mean partition\?"):
        load_preset(str(f), {})
    f.write_text(yamlio.dump({**base, "mem_gb": "lots"}))
    with pytest.raises(ConfigError, match=rf"mem_gb: expected an integer, got 'lots' \(in cluster preset {f}\)"):
        load_preset(str(f), {})


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
    with pytest.raises(ConfigError, match="--set train.epochs: expected KEY=VALUE"):
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


@pytest.mark.parametrize("user, message", [
    ({"lr": 1}, "unknown key lr in the config; did you mean train.lr or probe.lr? valid keys: method, dataset,"),
    ({"seq_len": 2}, "unknown key seq_len in the config; did you mean data.seq_len? valid keys: method,"),
    ({"data": {"resolution": 2}}, "unknown key data.resolution in the config; did you mean data.image_size? valid "
                                  "keys of data: root, seq_len,"),
    ({"train": {"bs": 3, "wd": 2}}, "unknown key train.bs in the config; did you mean train.batch_size?"),
    ({"data": {"mini": 3}}, "data.mini: expected a mapping of MiniConfig fields, got 3 (in the config)"),
    ({"model": 3}, "model: expected a mapping, got 3 (in the config)"),
    ({"sweep": 3}, "sweep: expected a string or null, got 3 (in the config)"),
    ({"seed": "1"}, "seed: expected an integer, got '1' (a quoted string: drop the quotes) (in the config)"),
    ({"data": {"aug": {"condition": None}}}, "data.aug.condition: None is not one of 'aug', 'crop', 'jitter', "
                                             "'blur' (in the config)"),
    ({"method": "contextssl", "model": {"env_ratio": "x"}}, "model.env_ratio: expected a list or null, got 'x'"),
    ({"method": 3}, "method and dataset must be names (strings), got 3 (in the config) and '3diebench-mini' (in the "
                    "config)"),
    ({"per_method": {"seqjepa": 3}}, "per_method must map method names to settings, e.g. per_method: {seqjepa: "
                                     "{model: {ema_decay: 0.99}}} (in the config)"),
    ({"per_method": {"sjepa": {}}}, "unknown method 'sjepa'; valid methods: "),
    ({"probe": {"preset": "x"}}, "probe.preset: 'x' is not one of 'sie', 'seqjepa' (in the config)"),
    ({"device": "tpu"}, "device must be cpu, cuda, cuda:N or auto, got 'tpu' (in the config)"),
    ({"dataset": "cifar100", "data": {"decoded_cache": True}}, "data.decoded_cache is implemented for 3diebench and "
                                                               "3diebench-mini only, not cifar100;"),
])
def test_messages_of_more_mistakes(user, message):
    """Exact messages (as the registry gave them before the resolution moved to benchmark/core/resolve.py)."""
    with pytest.raises(ConfigError) as e:
        resolve(user)
    assert str(e.value).startswith(message), str(e.value)
