"""The method contract, checked for EVERY registered method on a fake batch (ResNet-18 at 32 px, B=4).

finite loss -> backward -> gradients reach the encoder -> one optimiser step changes the trainable
parameters and leaves EMA targets alone -> ``on_step_end`` moves them -> every representation has its
documented shape; action-conditioned methods reject missing or mis-shaped actions with a ValueError.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.core.registry import METHODS
from methods.contract import Batch, DataSpec, Method

B, SIZE, ACTION_DIM, SEQ_LEN = 4, 32, 4, 2
SPEC = DataSpec(image_size=SIZE, action_dim=ACTION_DIM, num_classes=5)


def build(name: str) -> Method:
    torch.manual_seed(0)
    cls = METHODS[name]
    return cls(cls.Config(), SPEC)


def fake_batch(views: int, action_dim: int = ACTION_DIM, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(views=torch.randn(B, views, 3, SIZE, SIZE, generator=g),
                 actions=torch.randn(B, views - 1, action_dim, generator=g),
                 labels=torch.randint(0, SPEC.num_classes, (B,), generator=g),
                 latents=torch.randn(B, views, action_dim, generator=g))  # absolute, as every dataset gives


def snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(params: list[torch.nn.Parameter], before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))


# Methods whose action use is fixed by their definition (others may depend on their config).
USES_ACTIONS = {"seqjepa": True, "cond-byol": True, "simclr": False, "byol": False, "vicreg": False,
                "vicreg-traj": False, "simclr+tx": False, "byol+tx": False, "vicreg+tx": False}


def check_action_errors(method: Method, batch: Batch) -> None:
    """A missing, too-short or wrong-width action tensor is a ValueError naming the actions."""
    wrong_dim = Batch(batch.views, torch.randn(*batch.actions.shape[:2], ACTION_DIM + 2), batch.labels)
    wrong_len = Batch(batch.views, batch.actions[:, :0], batch.labels)
    missing = Batch(batch.views, None, batch.labels)  # type: ignore[arg-type]
    for bad in (wrong_dim, wrong_len, missing):
        with pytest.raises(ValueError, match="action"):
            method.training_step(bad)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_contract(name: str) -> None:
    method = build(name)
    assert method.name == name
    if name in USES_ACTIONS:
        assert method.uses_actions is USES_ACTIONS[name]
    assert set(method.headline) >= {"top1", "rotation_r2", "color_r2"}
    reps = {r.name: r for r in method.representations()}
    assert set(method.headline.values()) <= set(reps), "headline reads an undeclared representation"
    assert any(r.kind == "view" for r in reps.values()), "probes need a per-view representation"

    batch = fake_batch(method.views_needed(SEQ_LEN))
    trainable = [p for p in method.parameters() if p.requires_grad]
    frozen = [p for p in method.parameters() if not p.requires_grad]  # EMA targets
    opt = torch.optim.SGD(trainable, lr=0.1)
    before_train, before_frozen = snapshot(trainable), snapshot(frozen)

    method.train()
    if method.uses_actions:
        check_action_errors(method, batch)
    out = method.training_step(batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss), f"{name}: loss {out.loss}"
    assert all(isinstance(v, float) for v in out.logs.values())
    opt.zero_grad()
    out.loss.backward()
    enc_grads = [p.grad for p in method.encoder_module().parameters() if p.grad is not None]
    assert enc_grads and any(g.abs().sum() > 0 for g in enc_grads), f"{name}: no gradient reaches the encoder"
    assert all(torch.isfinite(g).all() for g in enc_grads)
    opt.step()
    assert changed(trainable, before_train), f"{name}: an optimiser step changed no parameter"
    assert not changed(frozen, before_frozen), f"{name}: target parameters moved outside on_step_end"
    method.on_step_end(1, 10)
    if frozen:
        assert changed(frozen, before_frozen), f"{name}: on_step_end did not move the EMA target"

    method.eval()
    probe = fake_batch(3, seed=1)
    for v in (1, 2, 3):  # the probes encode pairs and M_val-view sequences (M_val may be 1)
        enc = method.encode(probe.views[:, :v], probe.actions[:, : v - 1])
        assert set(enc) == set(reps)
        for r in reps.values():
            want = (B, v, r.dim) if r.kind == "view" else (B, r.dim)
            assert tuple(enc[r.name].shape) == want, f"{name}.{r.name}: {tuple(enc[r.name].shape)} != {want}"
            assert torch.isfinite(enc[r.name]).all()


def test_action_conditioned_tx_variant_validates_actions() -> None:
    """``simclr+tx`` with ``act_cond`` (seq-JEPA tokens, width 640) is action-conditioned like seq-JEPA."""
    cls = METHODS["simclr+tx"]
    method = cls(cls.Config(act_cond=True), SPEC)
    assert method.uses_actions
    batch = fake_batch(method.views_needed(SEQ_LEN))
    check_action_errors(method, batch)
    assert torch.isfinite(method.training_step(batch).loss)
    method.eval()
    assert method.encode(batch.views[:, :3], batch.actions[:, :2])["aggregate"].shape == (B, 640)
    with pytest.raises(ValueError, match="action"):
        method.encode(batch.views[:, :3], batch.actions[:, :1])
