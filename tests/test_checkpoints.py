"""Bring-your-own-checkpoint: solo-learn, torchvision and seqbench layouts in, torchvision/solo-learn out.

Each layout is written the way its tool writes it (torchvision: ``torch.save(resnet18().state_dict())``;
solo-learn: a real Lightning ``Trainer.save_checkpoint`` of a module shaped like solo-learn's
``BaseMethod``; seqbench: a real tiny ``benchmark.core.runner``), evaluated end to end on the tiny mini dataset,
and checked for the features it yields (identical to the source network's) and its result.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import runpy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from benchmark.core.runner import main as run_main
from benchmark.infra.errors import DataError
from benchmark.reporting.aggregate import aggregate
from benchmark.tools import checkpoint_formats as checkpoints
from benchmark.tools import evaluate_checkpoint as evaluate
from benchmark.tools import export
from methods.external import ExternalEncoder, ExternalEncoderConfig
from tests.conftest import TINY_SETS, tiny_args

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def eval_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    args = ["--checkpoint", str(ckpt), "--dataset", "3diebench-mini", "--image-size", "32", "--out", str(out)]
    for k, v in TINY_SETS.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def result_of(out: Path, method: str) -> dict:
    paths = list((out / method.replace(":", "_")).rglob("result.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def features(ck: checkpoints.LoadedCheckpoint) -> torch.Tensor:
    enc = ExternalEncoder(ExternalEncoderConfig(ck.format, ck.stem))
    enc.load_encoder_state(ck.encoder_state)
    return enc.eval().encode(X[:, None])["encoder"][:, 0]


def reference(net: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(X)


def tv_resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def trained(out) -> Path:
    """A real seqbench run (2 optimiser steps) with its checkpoint.pt, config.yaml and result.json."""
    assert run_main(tiny_args(out, **{"train.max_steps": 2})) == 0
    (result,) = (out / "seqjepa").rglob("result.json")
    assert (result.parent / "checkpoint.pt").is_file()
    return result.parent


def test_torchvision_state_dict_end_to_end(tmp_path, out):
    net = tv_resnet18()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(net.state_dict(), path)  # how torchvision users save a ResNet-18 (fc included)
    ck = checkpoints.load(path)
    assert (ck.format, ck.stem) == ("torchvision", "imagenet")
    net.fc = nn.Identity()
    assert torch.allclose(features(ck), reference(net), atol=1e-5)

    assert evaluate.main(eval_args(path, out)) == 0
    res = result_of(out, "external:resnet18_imagenet")
    assert res["method"] == "external:resnet18_imagenet" and res["eval_seq_len"] is None
    prov = res["provenance"]
    assert prov["checkpoint"] == str(path.resolve()) and prov["checkpoint_format"] == "torchvision"
    assert prov["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert res["config"]["train"]["epochs"] == 0 and res["config"]["model"]["sha256"] == prov["checkpoint_sha256"]
    m = res["metrics"]
    assert 0.0 <= m["top1"] <= 100.0 and math.isfinite(m["rotation_r2"]) and math.isfinite(m["color_r2"])
    assert set(m["per_representation"]) == {"encoder"} and "top1_by_eval_len" not in m
    # Deterministic run directory: the same command is recognised as done.
    assert evaluate.main(eval_args(path, out)) == 0
    assert len(list((out / "external_resnet18_imagenet").rglob("result.json"))) == 1


def test_torchvision_without_fc_and_wrapped_layouts(tmp_path):
    net = tv_resnet18()
    net.fc = nn.Identity()
    state = net.state_dict()  # no fc.* at all
    torch.save(state, tmp_path / "nofc.pth")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")  # nn.DataParallel
    for name in ("nofc.pth", "dp.pth"):
        ck = checkpoints.load(tmp_path / name)
        assert ck.format == "torchvision"
        assert torch.allclose(features(ck), reference(net), atol=1e-5)
    # torchvision's reference train.py: {"model", "optimizer", "epoch", "args": argparse.Namespace}
    import argparse

    torch.save({"model": tv_resnet18().state_dict(), "epoch": 3, "args": argparse.Namespace(lr=0.1)},
               tmp_path / "ref.pth")
    with pytest.raises(DataError, match="--trust-checkpoint"):
        checkpoints.load(tmp_path / "ref.pth")
    assert checkpoints.load(tmp_path / "ref.pth", trust=True).format == "torchvision"


def solo_like_module(cifar: bool) -> nn.Module:
    """The attributes solo-learn's BaseMethod/BYOL give a ResNet-18 model (solo/methods/base.py, byol.py)."""

    def backbone() -> nn.Module:
        net = tv_resnet18()
        net.fc = nn.Identity()
        if cifar:  # solo-learn's CIFAR stem: 3x3/1 conv1 with padding 2, no max-pool
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
            net.maxpool = nn.Identity()
        return net

    m = nn.Module()
    m.backbone, m.momentum_backbone = backbone(), backbone()
    m.projector = nn.Sequential(nn.Linear(512, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    m.predictor = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    m.classifier = nn.Linear(512, 10)
    return m


@pytest.mark.filterwarnings("ignore:.*srun.*", "ignore:.*LeafSpec.*")  # Lightning's own notices
def test_solo_learn_lightning_checkpoint_end_to_end(tmp_path, out):
    pl = pytest.importorskip("pytorch_lightning")

    class SoloLike(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            parts = solo_like_module(cifar=True)
            for name, child in parts.named_children():
                setattr(self, name, child)

        def training_step(self, batch, _):
            x, y = batch
            f = self.backbone(x)
            return self.predictor(self.projector(f)).pow(2).mean() + nn.functional.cross_entropy(
                self.classifier(f.detach()), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = SoloLike()
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 16, 16), torch.arange(4))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=4))
    path = tmp_path / "byol-cifar10-ep=0.ckpt"  # solo-learn's Checkpointer naming
    trainer.save_checkpoint(path)

    ck = checkpoints.load(path)
    assert (ck.format, ck.stem) == ("solo-learn", "solo-cifar")
    assert torch.allclose(features(ck), reference(model.backbone), atol=1e-5)

    assert evaluate.main(eval_args(path, out)) == 0
    res = result_of(out, "external:byol-cifar10-ep-0")
    assert res["provenance"]["checkpoint_format"] == "solo-learn"
    assert res["config"]["model"]["stem"] == "solo-cifar"
    assert 0.0 <= res["metrics"]["top1"] <= 100.0


def test_solo_learn_dict_imagenet_stem(tmp_path):
    m = solo_like_module(cifar=False)
    ckpt = {"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "1.9.0",
            "state_dict": m.state_dict(), "optimizer_states": [{}], "lr_schedulers": [{}],
            "hyper_parameters": {"backbone": {"name": "resnet18"}}}
    assert any(k.startswith("momentum_backbone.") for k in ckpt["state_dict"])
    torch.save(ckpt, tmp_path / "simclr-imagenet100.ckpt")
    ck = checkpoints.load(tmp_path / "simclr-imagenet100.ckpt", "solo-learn")
    assert ck.stem == "imagenet" and set(ck.encoder_state) == set(m.backbone.state_dict())
    assert torch.allclose(features(ck), reference(m.backbone), atol=1e-5)


def test_seqbench_run_reproduces_its_own_probes(trained, out):
    own = json.loads((trained / "result.json").read_text())
    assert evaluate.main(eval_args(trained, out)) == 0
    name = f"external:seqjepa-{trained.name}"
    res = result_of(out, name)
    assert res["provenance"]["rebuilt_method"] == "SeqJEPA" and res["config"]["model"]["source_method"] == "seqjepa"
    m = res["metrics"]
    # The aggregator was rebuilt, so the sequence probes ran, and read the same features as the run did.
    assert m["headline_source"]["top1"] == "aggregate" and res["eval_seq_len"] == own["eval_seq_len"]
    for key in ("top1", "rotation_r2", "color_r2", "top1_by_eval_len", "per_representation"):
        assert m[key] == own["metrics"][key], key
    # The checkpoint file itself is the same checkpoint: same name, hash, run directory.
    ck = checkpoints.load(trained / "checkpoint.pt")
    assert ck.format == "seqbench" and ck.default_name == name.removeprefix("external:")
    assert evaluate.main(eval_args(trained / "checkpoint.pt", out)) == 0
    assert len(list((out / name.replace(":", "_")).rglob("result.json"))) == 1


def test_exports_load_in_torchvision_and_solo_learn(trained, tmp_path, out):
    ck = checkpoints.load(trained)
    want = reference(ck.method.encoder_module())
    # torchvision, loaded the way a user would
    assert export.main(["--run", str(trained), "--format", "torchvision", "--out", str(tmp_path / "tv.pth")]) == 0
    net = tv_resnet18()
    res = net.load_state_dict(torch.load(tmp_path / "tv.pth", weights_only=True), strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and res.unexpected_keys == []
    net.fc = nn.Identity()
    assert torch.allclose(reference(net), want, atol=1e-5)
    # solo-learn: what main_linear.py does with pretrained_feature_extractor
    path, _ = export.export(trained, "solo-learn", tmp_path / "solo.ckpt")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    backbone = tv_resnet18()
    backbone.fc = nn.Identity()
    res = backbone.load_state_dict({k.replace("backbone.", ""): v for k, v in state.items()}, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert torch.allclose(reference(backbone), want, atol=1e-5)
    assert checkpoints.load(path).format == "solo-learn"
    # Round trip: the torchvision export probes exactly like the run's own encoder representation.
    assert evaluate.main(eval_args(tmp_path / "tv.pth", out, "--name", "seqjepa-export")) == 0
    own = json.loads((trained / "result.json").read_text())["metrics"]["per_representation"]["encoder"]
    assert result_of(out, "external:seqjepa-export")["metrics"]["per_representation"]["encoder"] == own


def test_aggregate_lists_external_next_to_trained(trained, out, tmp_path):
    assert evaluate.main(eval_args(trained, out)) == 0  # already done by another test: skipped
    written, _ = aggregate(out, tmp_path / "agg", plots=False, paper_path=None)
    runs_csv = next(p for p in written if p.name == "runs.csv").read_text()
    assert "external:seqjepa-" in runs_csv and "\nseqjepa," in runs_csv
    tables = "".join(p.read_text() for p in written if p.suffix == ".md" and p.name != "coverage.md")
    assert "external:seqjepa-" in tables and "seqjepa " in tables


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m benchmark.evaluate ARGS`` in-process: exit status and stderr."""
    old = sys.argv
    sys.argv = ["benchmark.tools.evaluate_checkpoint", *argv]
    try:
        with pytest.raises(SystemExit) as exc, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules": it is, from the import above
            runpy.run_module("benchmark.tools.evaluate_checkpoint", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = old
    return exc.value.code, capsys.readouterr().err


def test_bad_checkpoints_give_one_paragraph_errors(tmp_path, capsys, trained):
    r50 = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    good = tv_resnet18().state_dict()
    truncated = tmp_path / "truncated.pth"
    torch.save(good, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("epoch 10: loss 0.3\n")
    shapes = tmp_path / "shapes.pth"
    torch.save({**good, "layer2.0.conv1.weight": torch.zeros(128, 64, 1, 1)}, shapes)
    vit = tmp_path / "vit.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}, vit)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    bad_run = tmp_path / "bad_run"
    bad_run.mkdir()
    ck = torch.load(trained / "checkpoint.pt", weights_only=True)
    ck["model"]["aggregator.agg_token"] = torch.zeros(1, 1, 7)
    torch.save(ck, bad_run / "checkpoint.pt")
    cases = {
        r50: ["conv3", "ResNet-50", "Unexpected", "Wrong shape"],
        truncated: ["truncated"],
        text: ["text file", "epoch 10"],
        shapes: ["layer2.0.conv1.weight expected (128, 64, 3, 3) found (128, 64, 1, 1)"],
        vit: ["does not hold a ResNet-18", "Missing 100", "cls_token"],
        listing: ["cannot tell the layout", "a list"],
        tmp_path: ["without checkpoint.pt"],
        bad_run: ["does not match the seqjepa model", "aggregator.agg_token expected (1, 1, 640) found (1, 1, 7)"],
        tmp_path / "missing.pt": ["does not exist"],
    }
    for path, needles in cases.items():
        code, err = run_cli(eval_args(path, tmp_path / "runs"), capsys)
        assert code == 2, (path, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, (path, needle, err)
    code, err = run_cli(eval_args(r50, tmp_path / "runs", "--format", "solo-learn"), capsys)
    assert code == 2 and "not in the solo-learn layout" in err and "backbone." in err
    assert "It looks like a torchvision checkpoint" in err
    code, err = run_cli(eval_args(trained, tmp_path / "runs", "--set", "model.act_cond=false"), capsys)
    assert code == 2 and "'model' cannot be set" in err
    code, err = run_cli(eval_args(trained, tmp_path / "runs", "--name", "a/b"), capsys)
    assert code == 2 and "--name 'a/b'" in err
    assert not (tmp_path / "runs").exists()  # nothing written for a bad checkpoint


def test_seqbench_checkpoint_of_an_unknown_method_falls_back_to_its_encoder(trained, tmp_path):
    ck = torch.load(trained / "checkpoint.pt", weights_only=True)
    ck["config"]["method"] = "retired-method"
    torch.save(ck, tmp_path / "checkpoint.pt")
    loaded = checkpoints.load(tmp_path / "checkpoint.pt")
    assert loaded.method is None and "retired-method" in loaded.note and "encoder only" in loaded.note
    encoder = {k.removeprefix("encoder."): v for k, v in ck["model"].items() if k.startswith("encoder.")}
    assert loaded.encoder_state.keys() == encoder.keys()
    assert all(torch.equal(loaded.encoder_state[k], v) for k, v in encoder.items())
