"""``probe.preset``: SIE's or seq-JEPA's probe-fitting recipe, resolved into the config, applied by the heads'
optimiser and recorded in result.json; the 3diebench preset probes every view."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.config import PROBE_PRESETS, ProbeConfig
from benchmark.core.resolve import resolve
from benchmark.infra.errors import ConfigError
from benchmark.probes.heads import fit_head, make_head, make_optimizer
from benchmark.probes.suite import probe_record


def test_presets_fill_the_fitting_keys_and_explicit_keys_win() -> None:
    sie = resolve({}).probe
    assert (sie.preset, sie.optimizer, sie.lr, sie.weight_decay, sie.batch_size) == ("sie", "adam", 1e-3, 0.0, 256)
    sj = resolve({"probe": {"preset": "seqjepa"}}).probe
    assert (sj.optimizer, sj.lr, sj.weight_decay, sj.batch_size, sj.epochs) == ("adamw", 4e-4, 1e-3, 512, 100)
    mixed = resolve({"probe": {"preset": "seqjepa", "lr": 1e-3}}).probe
    assert (mixed.lr, mixed.optimizer) == (1e-3, "adamw")
    assert probe_record(mixed)["probe_fit"]["overrides"] == ["lr"]
    # The dataclass defaults are the default preset, so a config built without the registry agrees.
    assert {k: getattr(ProbeConfig(), k) for k in PROBE_PRESETS["sie"]} == PROBE_PRESETS["sie"]


def test_unknown_preset_or_bad_fit_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="probe.preset: 'simclr' is not one of 'sie', 'seqjepa'"):
        resolve({"probe": {"preset": "simclr"}})
    with pytest.raises(ConfigError, match="probe.optimizer: 'sgd' is not one of 'adam', 'adamw'"):
        resolve({"probe": {"optimizer": "sgd"}})
    with pytest.raises(ConfigError, match="probe.lr must be > 0"):
        resolve({"probe": {"preset": "seqjepa", "lr": 0}})


def test_3diebench_probes_every_view_under_both_presets() -> None:
    for preset in PROBE_PRESETS:
        assert resolve({"dataset": "3diebench", "probe": {"preset": preset}}).probe.bank_views == 0
    assert resolve({"dataset": "3diebench-mini"}).probe.bank_views == 12  # CPU-sized bank on the mini


def test_adamw_decays_weights_only_adam_everything() -> None:
    head = make_head("mlp", 8, 3, 16)
    opt = make_optimizer(head, resolve({"probe": {"preset": "seqjepa"}}).probe)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 4e-4
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-3 for p in g["params"]}
    assert decay == {id(p) for p in head.parameters() if p.ndim == 2}
    assert all(g["weight_decay"] in (0.0, 1e-3) for g in opt.param_groups)
    opt = make_optimizer(head, ProbeConfig(weight_decay=0.5))
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.5
    assert len(opt.param_groups[0]["params"]) == len(list(head.parameters()))


def test_adamw_leaves_biases_undecayed_in_training() -> None:
    """With zero gradients AdamW only decays: weights shrink by lr * wd per step, biases stay put."""
    head = nn.Linear(4, 2)
    w, b = head.weight.detach().clone(), head.bias.detach().clone()
    cfg = ProbeConfig(optimizer="adamw", lr=0.1, weight_decay=0.5, epochs=3, batch_size=4)
    fit_head(head, lambda epoch: (torch.zeros(4, 4), torch.zeros(4, 2)), lambda out, y: (out * 0).sum(), cfg, 0)
    assert torch.allclose(head.weight, w * (1 - 0.1 * 0.5) ** 3) and torch.equal(head.bias, b)


def test_protocol_line_names_the_optimiser_the_heads_were_fitted_with() -> None:
    from benchmark.probes.suite import protocol

    for preset, name in (("sie", "with Adam on"), ("seqjepa", "with AdamW on")):
        p = resolve({"dataset": "3diebench-mini", "probe": {"preset": preset}}).probe
        assert name in protocol(p, banked=False)
        assert protocol(p, banked=True).startswith(protocol(p, banked=False) + "; view representations")
