"""Learning visible while it trains: online probes (benchmark/probes/online.py) and seq-JEPA's
constant-predictor baseline in log.jsonl."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.config import RunConfig
from benchmark.core.registry import dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.runner import main as run_main
from benchmark.data.rotations import rotations
from benchmark.probes import bank
from benchmark.probes.online import OnlineProbes
from methods.components import cosine_loss
from methods.contract import Batch, DataSpec
from methods.seqjepa import SeqJEPA, SeqJEPAConfig
from tests.conftest import TINY_SETS, tiny_args


def _log(run: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def _tiny_cfg(tmp_path, **sets) -> RunConfig:
    from benchmark.config import merge, parse_set
    user = merge(parse_set([f"{k}={v}" for k, v in {**TINY_SETS, **sets}.items()]),
                 {"dataset": "3diebench-mini", "out": str(tmp_path), "data": {"image_size": 32}})
    return resolve(user)


def test_constant_predictor_baseline_is_logged() -> None:
    """seq-JEPA logs 1 - cos(batch-mean target, target): the loss of a predictor that ignores its input."""
    torch.manual_seed(0)
    spec = DataSpec(image_size=32, action_dim=4, num_classes=3)
    method = SeqJEPA(SeqJEPAConfig(backbone="resnet18-w16"), spec)
    views = torch.randn(6, 4, 3, 32, 32)
    out = method.training_step(Batch(views, torch.randn(6, 3, 4), torch.zeros(6, dtype=torch.long)))
    with torch.no_grad():
        target = method.target_encoder(views[:, 3])
    want = float(cosine_loss(target.mean(0, keepdim=True).expand_as(target), target))
    assert out.logs["baseline_loss"] == pytest.approx(want, abs=1e-6)
    assert out.logs["loss"] == pytest.approx(float(out.loss.detach()), abs=1e-6)


def test_online_probes_known_answer(tmp_path, monkeypatch) -> None:
    """Features that are the views' rotation matrices give online rotation R^2 near 1, constant features
    near 0 (fresh view pairs from the monitor banks, as the final probes); one-hot labels give top-1 100."""
    cfg = _tiny_cfg(tmp_path, **{"data.mini.objects_per_class": 12, "probe.epochs": 100, "probe.hidden": 128})
    entry = dataset_entry(cfg.dataset)
    tr, va = entry.build(cfg, "train", 3, True), entry.build(cfg, "val", 3, True)
    method = SeqJEPA(SeqJEPAConfig(backbone="resnet18-w16"), entry.spec(cfg))
    probes = OnlineProbes(method, cfg, tr, va, torch.device("cpu"))
    probes.probe_cfg = dataclasses.replace(probes.probe_cfg, epochs=200, lr=3e-3)  # the heads, not the budget
    real = bank.extract_bank

    def features(kind: str):
        def extract(*args, **kwargs) -> bank.Bank:
            b = real(*args, **kwargs)
            n, k = b.shape
            mats = rotations(b.latents.reshape(n * k, -1)).as_matrix().reshape(n, k, 9)
            x = torch.from_numpy(mats).float() if kind == "rotation" else torch.ones(n, k, 9)
            return bank.Bank({**b.feats, "encoder": x}, b.latents, b.labels)
        return extract

    monkeypatch.setattr(bank, "extract_bank", features("rotation"))
    good = probes()
    assert good["online_rotation_r2"] > 0.8 and good["online_indiv_rotation_r2"] > 0.8
    monkeypatch.setattr(bank, "extract_bank", features("constant"))
    bad = probes()
    assert abs(bad["online_rotation_r2"]) < 0.05
    assert {"online_top1", "online_knn_top1", "online_color_r2", "online_effective_rank", "online_std",
            "online_collapsed"} <= set(bad)
    # Health of a view top-1 representation, read from the monitor bank: constant features collapse (rank 0,
    # std 0), the views' rotation matrices (9-d, 3 classes: threshold 1) do not.
    probes.top1_rep = "encoder"
    budget, probes.probe_cfg = probes.probe_cfg, dataclasses.replace(probes.probe_cfg, epochs=1)  # heads aside
    flat = probes()
    assert (flat["online_effective_rank"], flat["online_std"], flat["online_collapsed"]) == (0.0, 0.0, 1)
    monkeypatch.setattr(bank, "extract_bank", features("rotation"))
    rot = probes()
    assert rot["online_collapsed"] == 0 and rot["online_effective_rank"] > 3 and rot["online_std"] > 0.1
    probes.top1_rep, probes.probe_cfg = "aggregate", budget
    labels_tr, labels_va = torch.arange(24) % 3, torch.arange(9) % 3
    onehot = {"feats": {"aggregate": nn.functional.one_hot(labels_tr, 3).float()}, "labels": labels_tr}
    onehot_va = {"feats": {"aggregate": nn.functional.one_hot(labels_va, 3).float()}, "labels": labels_va}
    res = probes.fit_sequences(onehot, onehot_va, with_pairs=False)
    # Centred one-hot features of 3 balanced classes: 2 equal singular values -> effective rank 2 (threshold 1).
    assert res == {"online_top1": 100.0, "online_knn_top1": 100.0, "online_effective_rank": pytest.approx(2.0),
                   "online_std": pytest.approx(float(nn.functional.one_hot(labels_tr, 3).float().std(0).mean())),
                   "online_collapsed": 0}
    same = {"feats": {"aggregate": torch.ones(24, 3)}, "labels": labels_tr}
    assert probes.fit_sequences(same, onehot_va, with_pairs=False)["online_collapsed"] == 1


@pytest.mark.slow
def test_online_probes_in_log_and_training_unchanged(tmp_path, capsys) -> None:
    """The online probes appear in log.jsonl (step 0 = random init, then every N steps) and change nothing:
    the trained weights equal those of the same run without them, and the run directory is the same."""
    base = [*tiny_args(tmp_path / "a", **{"train.max_steps": 4, "train.log_every": 1}), "--epochs", "2"]
    assert run_main(base) == 0
    plain = capsys.readouterr().out.strip().splitlines()[-1]
    with_probes = [*tiny_args(tmp_path / "b", **{"train.max_steps": 4, "train.log_every": 1}),
                   "--epochs", "2", "--set", "train.online_probe_every=2"]
    assert run_main(with_probes) == 0
    probed = capsys.readouterr().out.strip().splitlines()[-1]
    assert Path(plain).name == Path(probed).name  # not part of the run identity
    a = torch.load(Path(plain) / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(Path(probed) / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = _log(probed)
    online = [ln for ln in lines if "online_top1" in ln]
    assert [ln["step"] for ln in online] == [0, 2, 4]
    assert {"online_knn_top1", "online_rotation_r2", "online_color_r2", "online_effective_rank", "online_std",
            "online_collapsed"} <= set(online[-1])
    assert all(ln["online_collapsed"] in (0, 1) and ln["online_effective_rank"] >= 0 for ln in online)
    assert all("baseline_loss" in ln for ln in lines if ln["step"] > 0)
    assert not any("online_top1" in ln for ln in _log(plain))
