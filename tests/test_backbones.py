"""``model.backbone``: every method builds and trains one step with every backbone, the feature width flows
through its heads and representations, and the export refuses what a format cannot hold."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from benchmark.core.registry import METHODS
from benchmark.core.runner import main as run_main
from benchmark.tools import export
from benchmark.tools.checkpoint_formats import load
from methods.components import BACKBONE_DIMS, build_backbone
from methods.contract import Batch, DataSpec
from tests.conftest import tiny_args

B, SIZE, ACTION_DIM = 4, 32, 4
SPEC = DataSpec(image_size=SIZE, action_dim=ACTION_DIM, num_classes=5)


@pytest.mark.parametrize("name", sorted(BACKBONE_DIMS))
@pytest.mark.parametrize("small", [False, True])
def test_backbone_widths(name: str, small: bool) -> None:
    net = build_backbone(name, small)
    assert net.out_dim == BACKBONE_DIMS[name]
    assert net(torch.randn(2, 3, SIZE, SIZE)).shape == (2, BACKBONE_DIMS[name])
    if name == "resnet18":  # the paper's backbone is torchvision's ResNet-18, parameter for parameter
        ref = torchvision.models.resnet18()
        ref.fc = torch.nn.Identity()
        if small:
            ref.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_narrow_resnet_is_a_scaled_resnet18() -> None:
    """Same topology as ResNet-18 (2 BasicBlocks per stage, strides 1-2-2-2), widths 16-32-64-128."""
    net = build_backbone("resnet18-w16")
    widths = [getattr(net, f"layer{i}")[1].conv2.out_channels for i in range(1, 5)]
    assert widths == [16, 32, 64, 128] and len(net.layer3) == 2
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for s in (net.layer1, net.layer4) for b in s)  # zero-init
    n18 = sum(p.numel() for p in build_backbone("resnet18").parameters())
    assert 14 < n18 / sum(p.numel() for p in net.parameters()) < 18  # ~ (64 / 16)^2


@pytest.mark.parametrize("backbone", ["resnet18-w16", "resnet50"])
@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_every_method_trains_with_backbone(method_name: str, backbone: str) -> None:
    torch.manual_seed(0)
    cls = METHODS[method_name]
    cfg = dataclasses.replace(cls.Config(), backbone=backbone)  # type: ignore[attr-defined]
    method = cls(cfg, SPEC)
    dim = BACKBONE_DIMS[backbone]
    views = method.views_needed(2)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(B, views, 3, SIZE, SIZE, generator=g), torch.randn(B, views - 1, ACTION_DIM, generator=g),
                  torch.randint(0, 5, (B,), generator=g), torch.randn(B, views, ACTION_DIM, generator=g))
    method.train()
    out = method.training_step(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    enc = method.encoder_module()
    assert enc.out_dim == dim
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    method.eval()
    reps = method.encode(batch.views[:, :3], batch.actions[:, :2])
    for r in method.representations():
        shape = reps[r.name].shape
        assert shape[-1] == r.dim, f"{method_name}/{r.name}: encode gives {shape}, representation says {r.dim}"
        if r.name == "encoder":
            assert r.dim == dim


def test_unknown_backbone_is_a_clear_error(tmp_path, capsys) -> None:
    rc = run_main([*tiny_args(tmp_path), "--set", "model.backbone=resnet19", "--print-config"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.backbone" in err and "resnet18-w16" in err


@pytest.mark.slow
def test_backbone_in_identity_result_and_export(tmp_path, capsys) -> None:
    """A narrow-backbone run: its own run directory, ``backbone`` in result.json, evaluable checkpoint,
    export refused with a message naming the backbone; a resnet18 run of the same config differs in hash."""
    args = [*tiny_args(tmp_path, **{"train.max_steps": 1}), "--method", "simclr"]
    assert run_main([*args, "--set", "model.backbone=resnet18-w16"]) == 0
    narrow = capsys.readouterr().out.strip().splitlines()[-1]
    assert run_main([*args, "--epochs", "0"]) == 0
    wide = capsys.readouterr().out.strip().splitlines()[-1]
    assert narrow.rsplit("-", 1)[1] != wide.rsplit("-", 1)[1]
    import json
    from pathlib import Path
    record = json.loads((Path(narrow) / "result.json").read_text())
    assert record["backbone"] == "resnet18-w16" and record["config"]["model"]["backbone"] == "resnet18-w16"
    ck = load(Path(narrow))
    assert ck.backbone == "resnet18-w16" and ck.method is not None
    assert ck.method.encoder_module().out_dim == 128
    with pytest.raises(Exception, match="resnet18-w16"):
        export.export(Path(narrow), "torchvision", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    assert export.main(["--run", narrow, "--format", "solo-learn"]) == 2
    assert "evaluate it in seqbench" in capsys.readouterr().err


@pytest.mark.slow
def test_resnet50_run_exports_to_torchvision(tmp_path, capsys) -> None:
    args = [*tiny_args(tmp_path, **{"train.max_steps": 1}), "--method", "byol", "--set", "model.backbone=resnet50"]
    assert run_main(args) == 0
    run = capsys.readouterr().out.strip().splitlines()[-1]
    from pathlib import Path
    path, _ = export.export(Path(run), "torchvision", tmp_path / "r50.pth")
    net = torchvision.models.resnet50()
    result = net.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
