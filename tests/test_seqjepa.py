"""seq-JEPA's architecture follows docs/protocol.md §1: shapes, action slots, no positional embedding, EMA."""

from __future__ import annotations

import torch

from methods.contract import Batch, DataSpec
from methods.seqjepa import SeqJEPA, SeqJEPAConfig

SPEC = DataSpec(image_size=32, action_dim=4, num_classes=5)


def batch(b=4, m=3, a=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(b, m + 1, 3, 32, 32, generator=g), torch.randn(b, m, a, generator=g),
                 torch.zeros(b, dtype=torch.long))


def test_dimensions_match_the_paper():
    m = SeqJEPA(SeqJEPAConfig(), SPEC)
    assert m.width == 640 and m.aggregator.agg_token.shape == (1, 1, 640)
    assert m.predictor[0].in_features == 768 and m.predictor[0].out_features == 1024
    assert m.predictor[-1].out_features == 512 and m.predictor[0].bias is None
    layer = m.aggregator.encoder.layers[0]
    assert len(m.aggregator.encoder.layers) == 3 and layer.self_attn.num_heads == 4
    assert layer.linear1.out_features == 2560 and not layer.norm_first
    assert m.action_emb.proj.bias is None and not m.action_emb.norm.affine
    assert m.views_needed(3) == 4
    no_act = SeqJEPA(SeqJEPAConfig(act_cond=False), SPEC)
    assert no_act.width == 512 and no_act.predictor[0].in_features == 512 and not no_act.uses_actions


def test_encode_shapes_and_any_sequence_length():
    m = SeqJEPA(SeqJEPAConfig(), SPEC).eval()
    for v in (1, 2, 5):
        views = torch.randn(2, v, 3, 32, 32)
        out = m.encode(views, torch.randn(2, v - 1, 4))
        assert out["encoder"].shape == (2, v, 512) and out["aggregate"].shape == (2, 640)


def test_no_positional_embedding_makes_the_aggregate_permutation_invariant():
    m = SeqJEPA(SeqJEPAConfig(act_cond=False), SPEC).eval()
    z = torch.randn(2, 4, 512)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(m._aggregate(z, None), m._aggregate(z[:, perm], None), atol=1e-5)


def test_predictor_action_changes_the_prediction_but_not_the_aggregate():
    m = SeqJEPA(SeqJEPAConfig(), SPEC).eval()
    b = batch()
    z = m.encode(b.views[:, :3], b.actions[:, :2])["aggregate"]
    changed = b.actions.clone()
    changed[:, 2] += 1.0  # the action to the target view: only the predictor sees it
    z2 = m.encode(b.views[:, :3], changed[:, :2])["aggregate"]
    assert torch.allclose(z, z2)
    emb = m.action_emb(b.actions[:, 2])
    emb2 = m.action_emb(changed[:, 2])
    p1 = m.predictor(torch.cat([z, emb], -1))
    p2 = m.predictor(torch.cat([z, emb2], -1))
    assert not torch.allclose(p1, p2)
    # An observation action does change the aggregate.
    changed[:, 0] += 1.0
    assert not torch.allclose(z, m.encode(b.views[:, :3], changed[:, :2])["aggregate"])


def test_training_step_target_is_stop_grad_and_ema_moves_only_in_the_hook():
    torch.manual_seed(0)
    m = SeqJEPA(SeqJEPAConfig(), SPEC).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    target_before = [p.clone() for p in m.target_encoder.parameters()]
    out = m.training_step(batch())
    assert 0.0 <= float(out.loss) <= 2.0
    out.loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert m.encoder.conv1.weight.grad is not None and m.encoder.conv1.weight.grad.abs().sum() > 0
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(target_before, m.target_encoder.parameters(), strict=True))
    m.on_step_end(1, 10)
    moved = [not torch.equal(a, b) for a, b in zip(target_before, m.target_encoder.parameters(), strict=True)]
    assert any(moved)


def test_missing_or_wrong_actions_are_clear_errors():
    m = SeqJEPA(SeqJEPAConfig(), SPEC)
    b = batch()
    import pytest

    with pytest.raises(ValueError, match=r"actions must have shape \(B, 3, 4\)"):
        m.training_step(Batch(b.views, torch.randn(4, 3, 6), b.labels))
    with pytest.raises(ValueError, match="NaN"):
        m.training_step(Batch(b.views, torch.full((4, 3, 4), float("nan")), b.labels))
