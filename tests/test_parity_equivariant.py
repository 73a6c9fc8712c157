"""Equivariant baselines (EquiMod, SIE, SEN, ContextSSL): loss parity with the authors' code, action
conditioning, clear action errors, and one end-to-end CLI run each. (EquiMod, SIE and SEN as wholes are compared
with the authors' classes in tests/test_parity_upstream.py.)

The ``ref_*`` functions below are the original formulations written out from the upstream files
(cited per function) in their own tensor layout; the adapters must agree with them on fixed tensors.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from baselines.contextssl import (
    ContextSSL,
    ContextSSLConfig,
    ContextTransformer,
    context_mask,
    contextssl_nt_xent,
    pair_causal_mask,
)
from baselines.equimod import EquiMod, EquiModConfig, equimod_loss
from baselines.sen import SEN, SENConfig, sen_loss
from baselines.sie import SIE, HyperPredictor, SIEConfig, sie_loss
from benchmark.run import main
from methods.contract import Batch, DataSpec
from tests.conftest import tiny_args

SPEC4 = DataSpec(image_size=16, action_dim=4, num_classes=3)
SPEC6 = DataSpec(image_size=16, action_dim=6, num_classes=3)
SMALL_CTX = {"n_embd": 64, "aux_hidden": 32}  # ContextSSL at a CPU-test size (default n_embd 2048)


def fixed(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- reference formulations (upstream)

def ref_equimod_ntxent(z: torch.Tensor, temperature: float, zeta: float = 1e8) -> torch.Tensor:
    """``ADevillers/EquiMod@SimCLR+EquiMod:src/loss.py`` NTXentLoss: z = cat([z_i, z_j]), -zeta on the diagonal."""
    n = z.shape[0] // 2
    zn = F.normalize(z)
    m_sim = zn @ zn.t() / temperature - zeta * torch.eye(2 * n)
    i_pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(m_sim, i_pos)


def ref_seqjepa_ntxent(features: torch.Tensor, batch_size: int, temp: float) -> torch.Tensor:
    """``hafezgh/seq-jepa:seq-jepa/src/models.py`` ``NTXent_loss`` (SimCLREquiMod, SEN_Contrastive) + CE."""
    labels = torch.cat([torch.arange(batch_size) for _ in range(2)], dim=0)
    labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    features = F.normalize(features, dim=1)
    sim = features @ features.T
    mask = torch.eye(labels.shape[0], dtype=torch.bool)
    labels = labels[~mask].view(labels.shape[0], -1)
    sim = sim[~mask].view(sim.shape[0], -1)
    positives = sim[labels.bool()].view(labels.shape[0], -1)
    negatives = sim[~labels.bool()].view(sim.shape[0], -1)
    logits = torch.cat([positives, negatives], dim=1) / temp
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


def ref_off_diagonal(x: torch.Tensor) -> torch.Tensor:
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def ref_sie_loss(x_inv, y_inv, x_equi, y_equi, y_equi_pred, sim, std, cov, equi_factor) -> torch.Tensor:
    """``facebookresearch/SIE:src/models.py`` ``SIE.forward`` from the projector outputs on (single GPU)."""
    x, y = torch.cat((x_inv, x_equi), dim=1), torch.cat((y_inv, y_equi), dim=1)
    repr_loss_inv = F.mse_loss(x_inv, y_inv)
    repr_loss_equi = F.mse_loss(y_equi_pred, y_equi)
    p = y_equi_pred - y_equi_pred.mean(dim=0)
    pred_std_loss = torch.mean(F.relu(1 - torch.sqrt(p.var(dim=0) + 0.0001))) / 2
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_loss = (torch.mean(F.relu(1 - torch.sqrt(x.var(dim=0) + 0.0001))) / 2
                + torch.mean(F.relu(1 - torch.sqrt(y.var(dim=0) + 0.0001))) / 2)
    batch_size = x.shape[0]
    cov_x, cov_y = (x.T @ x) / (batch_size - 1), (y.T @ y) / (batch_size - 1)
    cov_loss = (ref_off_diagonal(cov_x).pow(2).sum().div(cov_x.shape[0])
                + ref_off_diagonal(cov_y).pow(2).sum().div(cov_x.shape[0]))
    return (sim * repr_loss_inv + equi_factor * sim * repr_loss_equi + std * std_loss + std * pred_std_loss
            + cov * cov_loss)


def ref_parametrized_net(hypernet: torch.nn.Linear, x: torch.Tensor, z: torch.Tensor, dim: int) -> torch.Tensor:
    """``facebookresearch/SIE:src/hypernetwork.py`` ``ParametrizedNet.forward``, predictor "dim-dim", no bias."""
    weights = hypernet(z)
    w = weights[..., 0:dim * dim].view(-1, dim, dim)
    return torch.bmm(x.unsqueeze(1), torch.transpose(w, -2, -1)).squeeze()


def ref_contextssl_nt_xent(x: torch.Tensor, t: float) -> torch.Tensor:
    """``Sharut/In-Context-Symmetries:main.py`` ``nt_xent`` (x_proj = x)."""
    x = F.normalize(x, dim=1)
    x_scores = (x @ x.t()).clamp(min=1e-7)
    x_scale = x_scores / t
    x_scale = x_scale - torch.eye(x_scale.size(0)) * 1e5
    targets = torch.arange(x.size()[0])
    targets[::2] += 1
    targets[1::2] -= 1
    return F.cross_entropy(x_scale, targets.long())


def ref_pair_attention_mask(context_len: int) -> torch.Tensor:
    """``gptmodel.py`` ``get_pair_attention_mask`` (causal=True)."""
    mask = torch.ones(context_len, context_len).tril()
    for i in range(context_len):
        if i % 2 == 1:
            mask[i, i - 1] = 0
    return mask.bool()


def ref_random_mask(attnmask: torch.Tensor, rdm: torch.Tensor, mask_prob: float) -> torch.Tensor:
    """``gptmodel.py`` ``CausalSelfAttention.forward`` with random_mask=True, given its ``torch.rand`` draw."""
    pair_mask = (rdm >= mask_prob).repeat_interleave(2, dim=1)
    pair_mask = pair_mask | torch.eye(attnmask.shape[0], attnmask.shape[1]).bool()
    return attnmask & pair_mask


def ref_gpt(model: ContextTransformer, inp: torch.Tensor, n_head: int, masks: list[torch.Tensor]) -> torch.Tensor:
    """``gptmodel.py`` ``GPT.forward`` (dropout 0): read_in, pre-LN blocks with the upstream attention
    (``scaled_dot_product_attention`` written out with a -inf bias), ln_f, read_out; our weights."""
    x = model.read_in(inp)
    for blk, attnmask in zip(model.blocks, masks, strict=True):
        b, t, c = x.shape
        h = F.layer_norm(x, (c,), blk.ln_1.weight, blk.ln_1.bias, 1e-5)
        q, k, v = blk.c_attn(h).split(c, dim=2)
        q, k, v = (u.view(b, t, n_head, c // n_head).transpose(1, 2) for u in (q, k, v))
        attn_bias = torch.zeros(t, t).masked_fill(attnmask.logical_not(), float("-inf"))
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + attn_bias, dim=-1)
        x = x + blk.c_proj((w @ v).transpose(1, 2).contiguous().view(b, t, c))
        h = F.layer_norm(x, (c,), blk.ln_2.weight, blk.ln_2.bias, 1e-5)
        x = x + blk.mlp_proj(torch.nn.GELU()(blk.c_fc(h)))
    x = F.layer_norm(x, (x.shape[-1],), model.ln_f.weight, model.ln_f.bias, 1e-5)
    return model.read_out(x)


# ---------------------------------------------------------------- loss parity

@pytest.mark.parametrize("t_inv,t_equi,factor", [(0.5, 0.5, 1.0), (0.5, 0.2, 0.7)])
def test_equimod_loss_matches_official_and_seqjepa(t_inv, t_equi, factor):
    z_x, z_y, pred, e_y = (fixed(6, 8, seed=s) for s in range(4))
    total, l_inv, l_equi = equimod_loss(z_x, z_y, pred, e_y, t_inv, t_equi, factor)
    official = ref_equimod_ntxent(torch.cat([z_x, z_y]), t_inv) + factor * ref_equimod_ntxent(
        torch.cat([e_y, pred]), t_equi)  # main.py: all_y = cat([yt, yt_hat]); loss_z + lmbd * loss_eq_y
    seqjepa = factor * ref_seqjepa_ntxent(torch.cat([pred, e_y]), 6, t_equi) + ref_seqjepa_ntxent(
        torch.cat([z_x, z_y]), 6, t_inv)
    assert torch.allclose(total, official, atol=1e-5) and torch.allclose(total, seqjepa, atol=1e-5)
    assert torch.allclose(l_inv, ref_equimod_ntxent(torch.cat([z_x, z_y]), t_inv), atol=1e-6)


def test_sen_loss_matches_seqjepa():
    pred, e_y = fixed(5, 16, seed=10), fixed(5, 16, seed=11)
    for t in (0.5, 0.1):
        assert torch.allclose(sen_loss(pred, e_y, t), ref_seqjepa_ntxent(torch.cat([pred, e_y]), 5, t), atol=1e-5)


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0, 1.0), (10.0, 10.0, 1.0, 0.45)])
def test_sie_loss_matches_official(coeffs):
    # Small std so that the variance hinge is active; equi part narrower than inv to catch a swapped split.
    x_inv, y_inv = fixed(8, 12, seed=20) * 0.5, fixed(8, 12, seed=21) * 0.5
    x_equi, y_equi, pred = fixed(8, 6, seed=22) * 0.3, fixed(8, 6, seed=23) * 2.0, fixed(8, 6, seed=24) * 0.7
    total, terms = sie_loss(x_inv, y_inv, x_equi, y_equi, pred, *coeffs)
    ref = ref_sie_loss(x_inv, y_inv, x_equi, y_equi, pred, *coeffs)
    assert torch.allclose(total, ref, rtol=1e-5, atol=1e-5)
    assert terms["std_loss"] > 0 and terms["pred_std_loss"] > 0 and terms["cov_loss"] > 0


def test_sie_hypernetwork_matches_parametrized_net_and_is_linear_in_the_action():
    torch.manual_seed(0)
    pred = HyperPredictor(dim=10, action_dim=4)
    p, a = fixed(5, 10, seed=30), fixed(5, 4, seed=31)
    assert torch.allclose(pred(p, a), ref_parametrized_net(pred.hypernet, p, a, 10), atol=1e-5)
    # W(a) is linear in a (no bias): the prediction for 2a is twice that for a; for a = 0 it vanishes.
    assert torch.allclose(pred(p, 2 * a), 2 * pred(p, a), atol=1e-5)
    assert torch.count_nonzero(pred(p, torch.zeros_like(a))) == 0


def test_contextssl_nt_xent_matches_upstream_and_lightly_without_clamp():
    z = fixed(12, 16, seed=40)  # 6 interleaved (x, x+) pairs
    for t in (0.1, 0.5):
        assert torch.allclose(contextssl_nt_xent(z, t), ref_contextssl_nt_xent(z, t), atol=1e-5)
        # Without the clamp it is the standard SimCLR loss on (x_k, x+_k) pairs.
        unclamped = contextssl_nt_xent(z, t, clamp=False)
        assert torch.allclose(unclamped, NTXentLoss(temperature=t)(z[0::2], z[1::2]), atol=1e-5)
    # The clamp matters: with anti-correlated negatives the two differ.
    assert not torch.allclose(contextssl_nt_xent(z, 0.1), contextssl_nt_xent(z, 0.1, clamp=False))


def test_contextssl_masks_and_transformer_match_upstream_gpt():
    t = 8
    assert torch.equal(pair_causal_mask(t), ref_pair_attention_mask(t))
    rand = torch.rand(t, t // 2, generator=torch.Generator().manual_seed(41))
    mask = context_mask(pair_causal_mask(t), 0.5, rand)
    assert torch.equal(mask, ref_random_mask(ref_pair_attention_mask(t), rand, 0.5))
    assert mask.diagonal().all() and not torch.equal(mask, pair_causal_mask(t))

    torch.manual_seed(1)
    cfg = ContextSSLConfig(n_embd=32, n_head=4)
    model = ContextTransformer(20, 12, cfg).eval()
    inp = fixed(3, t, 20, seed=42)
    base = pair_causal_mask(t)
    with torch.no_grad():
        assert torch.allclose(model(inp, random_mask=False), ref_gpt(model, inp, 4, [base] * 3), atol=1e-5)
        # With the context mask: one fresh draw per layer, reproduced from the same RNG state.
        torch.manual_seed(7)
        ours = model(inp, random_mask=True)
        torch.manual_seed(7)
        masks = [ref_random_mask(base, torch.rand(t, t // 2), cfg.mask_prob) for _ in range(3)]
        assert torch.allclose(ours, ref_gpt(model, inp, 4, masks), atol=1e-5)


def test_sie_encode_splits_the_representation_into_inv_then_equi():
    torch.manual_seed(0)
    m = SIE(SIEConfig(), SPEC4).eval()
    enc = m.encode(fixed(4, 2, 3, 16, 16, seed=50))
    assert torch.equal(torch.cat([enc["inv"], enc["equi"]], -1), enc["encoder"]) and enc["equi"].shape[-1] == 256


# ---------------------------------------------------------------- action conditioning

@pytest.mark.parametrize("cls", [EquiMod, SIE, SEN])
def test_action_changes_the_equivariant_prediction(cls):
    torch.manual_seed(0)
    m = cls(cls.Config(), SPEC6).train()
    h = fixed(6, 512, seed=60)
    a = fixed(6, 6, seed=61)
    base = m.predict(h, a)
    for i in range(6):  # every action component (quaternion and hue deltas) reaches the prediction
        a2 = a.clone()
        # A per-sample change: the action embedding's BatchNorm removes shifts common to the batch.
        a2[:, i] = fixed(6, seed=62 + i)
        assert not torch.allclose(m.predict(h, a2), base, atol=1e-4), f"component {i} is ignored"


def test_contextssl_action_conditions_its_token_and_later_context_but_not_its_pair():
    torch.manual_seed(0)
    m = ContextSSL(ContextSSLConfig(context="object", **SMALL_CTX), SPEC6).eval()
    z, act = fixed(2, 4, 512, seed=70), fixed(2, 3, 6, seed=71)
    out, _, _ = m.contextualise(z, act, "rotcolor")
    act2 = act.clone()
    act2[:, 1] += 1.0  # change the action of pair 1 (tokens 2 and 3)
    out2, _, _ = m.contextualise(z, act2, "rotcolor")
    changed = [not torch.allclose(out[:, k], out2[:, k], atol=1e-6) for k in range(6)]
    # Earlier tokens and x+_1 (which may not see its own x_1) are unchanged; x_1 and the later pair change.
    assert changed == [False, False, True, False, True, True]
    # In the "rot" environment the colour part of the action is zeroed, so it cannot matter.
    act3 = act.clone()
    act3[..., 4:] += 1.0
    assert torch.allclose(m.contextualise(z, act, "rot")[0], m.contextualise(z, act3, "rot")[0])
    assert not torch.allclose(m.contextualise(z, act, "color")[0], m.contextualise(z, act3, "color")[0])


def test_contextssl_batch_context_draws_each_pair_from_a_different_object():
    torch.manual_seed(0)
    m = ContextSSL(ContextSSLConfig(**SMALL_CTX), SPEC4).eval()
    b, v = 5, 4
    # Encodings that identify (sample, view); actions that identify (sample, transition).
    z = torch.arange(b * v, dtype=torch.float).view(b, v, 1).expand(b, v, 512)
    act = torch.arange(b * (v - 1), dtype=torch.float).view(b, v - 1, 1).expand(b, v - 1, 4)
    _, src, a = m.contextualise(z, act, "rot")
    for ctx in range(b):
        samples = [(ctx + j) % b for j in range(v - 1)]
        assert len(set(samples)) == v - 1
        for j, s in enumerate(samples):
            assert src[ctx, j, 0] == z[s, j, 0] and a[ctx, j, 0] == act[s, j, 0]


def test_missing_or_wrong_actions_are_clear_errors():
    views = fixed(4, 4, 3, 16, 16, seed=80)
    for m in (EquiMod(EquiModConfig(), SPEC4), SIE(SIEConfig(), SPEC4), SEN(SENConfig(), SPEC4),
              ContextSSL(ContextSSLConfig(**SMALL_CTX), SPEC4)):
        n = views.shape[1] if m.name == "contextssl" else 2
        with pytest.raises(ValueError, match="got no actions"):
            m.training_step(Batch(views[:, :n], None, torch.zeros(4, dtype=torch.long)))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="latent_type"):
            m.training_step(Batch(views[:, :n], fixed(4, n - 1, 6, seed=81), torch.zeros(4, dtype=torch.long)))
        assert m.uses_actions
    for cls in (EquiMod, SIE, SEN, ContextSSL):
        with pytest.raises(ValueError, match="actions"):
            cls(cls.Config(), DataSpec(16, 0, 3))
    with pytest.raises(ValueError, match="no colour part"):
        ContextSSL(ContextSSLConfig(env_ratio=(0.5, 0.5, 0.0), **SMALL_CTX), SPEC4)


# ---------------------------------------------------------------- end to end

@pytest.mark.parametrize("name,sets", [("equimod", {}), ("sie", {}), ("sen", {"probe.preset": "seqjepa"}),
                                       ("contextssl", {"model.n_embd": 64})])
def test_cli_run_writes_result(tmp_path, name, sets):
    assert main(tiny_args(tmp_path, **sets) + ["--method", name]) == 0
    (path,) = tmp_path.rglob("result.json")
    result = json.loads(path.read_text())
    m = result["metrics"]
    preset = sets.get("probe.preset", "sie")
    assert m["probe_preset"] == result["config"]["probe"]["preset"] == preset
    assert m["probe_fit"]["optimizer"] == ("adamw" if preset == "seqjepa" else "adam")
    assert result["provenance"]["world_size"] == 1 and result["provenance"]["batchnorm_statistics"] == "global"
    for k in ("top1", "rotation_r2", "color_r2"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
        assert m["headline_source"][k] == "encoder"
    if name == "sie":
        assert {"encoder", "inv", "equi"} <= set(m["per_representation"])


def test_cli_contextssl_colour_env_on_rotation_actions_is_a_config_error(tmp_path, capsys):
    assert main(tiny_args(tmp_path, **{"model.n_embd": 64, "model.env_ratio": "[0.5,0.5,0]"})
                + ["--method", "contextssl"]) == 2
    assert "latent_type=rotcolor" in capsys.readouterr().err
