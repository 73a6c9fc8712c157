"""ContextSSL against the authors' own code, and its contexts on real data.

The reference is ``Sharut/In-Context-Symmetries`` itself (MIT): ``tests/fixtures/upstream/contextssl`` holds
its ``gptmodel.py`` and ``models.py`` (``.cuda()`` replaced) and ``main.py``'s ``nt_xent`` and training-step
body. Our weights are copied into the authors' ``BranchNetwork``; with the same batch, environment and
RNG state (the context masks are ``torch.rand`` draws) the loss and every gradient must agree. The context
representation (benchmark/probes/context.py) is compared with ``eval_equivariance.py``'s KV-cache evaluation and
``utils.r2_score`` (``eval_context.py``), and its probes are checked on known answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from scipy.spatial.transform import Rotation
from torch import nn
from torch.utils.data import DataLoader

from baselines.contextssl import ContextSSL, ContextSSLConfig, contextssl_nt_xent
from benchmark.config import (
    AugConfig,
    DataConfig,
    ProbeConfig,
    RunConfig,
    SaccadeConfig,
    TrainConfig,
    config_hash,
    from_dict,
    load_yaml,
    merge,
    parse_set,
)
from benchmark.core.registry import dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.runner import main
from benchmark.core.sweeps import SWEEPS, contextssl_environment
from benchmark.core.train import EpochSampler
from benchmark.data.augment import AugmentedSequences
from benchmark.data.base import SequenceDataset, collate, to_batch
from benchmark.data.rotations import pair_targets, probe_targets, relative_actions
from benchmark.data.saccades import SaccadeSequences
from benchmark.data.threedie import ThreeDIEBench
from benchmark.probes.context import ContextReader, InContext, context_len, context_probes
from benchmark.probes.metrics import r2_global, r2_uniform
from methods.contract import Batch, DataSpec, Method
from tests.conftest import TINY_SETS, tiny_args
from tests.fixtures.upstream.contextssl.eval_context import context_past as upstream_context_past
from tests.fixtures.upstream.contextssl.eval_context import query_outputs as upstream_query_outputs
from tests.fixtures.upstream.contextssl.eval_context import r2_score as upstream_r2_score
from tests.fixtures.upstream.contextssl.main_step import nt_xent as upstream_nt_xent
from tests.fixtures.upstream.contextssl.main_step import train_step as upstream_train_step
from tests.fixtures.upstream.contextssl.models import BranchNetwork

SPEC6 = DataSpec(image_size=32, action_dim=6, num_classes=5)  # upstream's r_dim = 6 (quaternion + 2 hues)
SPEC4 = DataSpec(image_size=32, action_dim=4, num_classes=5)
SMALL = {"n_embd": 32, "n_layer": 2, "context_pairs": 4, "mask_prob": 0.5}  # CPU size; aux MLP stays 1024 wide
PRESET = "benchmark/configs/contextssl-upstream.yaml"
LOSS_RTOL = 1e-5  # our step vs upstream's (float32; observed ~1e-7)


class Args(dict):
    """Upstream reads hydra's DictConfig both as a mapping (``GPTConfig``) and by attribute."""

    __getattr__ = dict.__getitem__


def upstream_args(cfg: ContextSSLConfig, dim: int) -> Args:
    return Args(block_size=2 * cfg.context_pairs, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                projection_dim=dim, dropout=cfg.dropout, bias=True, aug_method="concat", is_invariant=False,
                eval_predictor=False, equiv_eval="linear", augmentation_dim=6, random_mask=cfg.random_mask,
                mask_prob=cfg.mask_prob, temperature=cfg.temperature, weight_equiv_loss=cfg.weight_equiv_loss)


def upstream_names(m: ContextSSL) -> dict[str, nn.Parameter]:
    """Upstream ``BranchNetwork`` parameter name -> our parameter."""
    out = {f"enc.{k}": p for k, p in m.encoder.named_parameters()}
    cm = m.context_model
    for ours, theirs in (("read_in", "predictor._read_in"), ("read_out", "predictor._read_out"),
                         ("ln_f", "predictor.transformer.ln_f")):
        out.update({f"{theirs}.{w}": p for w, p in getattr(cm, ours).named_parameters()})
    for i, blk in enumerate(cm.blocks):
        for ours, theirs in (("ln_1", "ln_1"), ("c_attn", "attn.c_attn"), ("c_proj", "attn.c_proj"),
                             ("ln_2", "ln_2"), ("c_fc", "mlp.c_fc"), ("mlp_proj", "mlp.c_proj")):
            out.update({f"predictor.transformer.h.{i}.{theirs}.{w}": p
                        for w, p in getattr(blk, ours).named_parameters()})
    out.update({f"aug_predictor.{k}": p for k, p in m.aux_predictor.named_parameters()})
    return out


def upstream_copy(m: ContextSSL) -> tuple[BranchNetwork, Args]:
    """The authors' BranchNetwork holding our weights; every parameter on both sides accounted for."""
    args = upstream_args(m.cfg, m.dim)
    up = BranchNetwork(lambda pretrained: torchvision.models.resnet18(weights=None), projection_dim=m.dim, args=args)
    names = upstream_names(m)
    assert len(names) == len(list(m.parameters())), "a parameter of ours has no upstream counterpart"
    theirs = dict(up.named_parameters())
    # Upstream defines two heads its training step never uses (eval-time equiv_linear, rel_aug_predictor).
    unused = {k for k in theirs if k.startswith(("equiv_linear.", "rel_aug_predictor."))}
    assert set(theirs) - unused == set(names), set(theirs) ^ set(names)
    for k, p in names.items():  # layer list: same shapes (a missing bias or other width fails here)
        assert theirs[k].shape == p.shape, (k, theirs[k].shape, p.shape)
    state = up.state_dict()
    state.update({k: p.detach().clone() for k, p in names.items()})
    state.update({f"enc.{k}": b.clone() for k, b in m.encoder.named_buffers()})  # BN running statistics
    up.load_state_dict(state)
    return up.train(), args


def pair_batch(b: int, a: int = 6, seed: int = 0, size: int = 32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(b, 2, 3, size, size, generator=g), torch.randn(b, 1, a, generator=g),
                 torch.zeros(b, dtype=torch.long), torch.randn(b, 2, a, generator=g))


def build(spec: DataSpec = SPEC6, **cfg) -> ContextSSL:
    torch.manual_seed(0)
    return ContextSSL(ContextSSLConfig(**{**SMALL, **cfg}), spec).train()


def upstream_loss(up: BranchNetwork, args: Args, batch: Batch, env: str) -> torch.Tensor:
    v = batch.views
    return upstream_train_step(up, v[:, 0], v[:, 1], batch.actions[:, 0], batch.latents, batch.labels, env, args)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


# ---------------------------------------------------------------- the whole training step vs upstream

@pytest.mark.parametrize("env,cfg", [
    ("rot", {}),
    ("color", {}),
    ("rotcolor", {}),
    ("rot", {"temperature": 0.5, "weight_equiv_loss": 1.0, "random_mask": False}),  # config.yml values
    ("color", {"context_pairs": 2, "n_layer": 3, "mask_prob": 0.9}),
])
def test_training_step_matches_upstream(env, cfg):
    """Loss and gradients of our step = upstream ``main.py`` with ``BranchNetwork`` (GPT, aug_predictor) on
    the same batch: environment zeroing, auxiliary target/input/weight, temperature, masks, contexts."""
    m = build(**cfg)
    up, args = upstream_copy(m)
    batch = pair_batch(8, seed=1)  # 8 objects -> 2 (or 4) contexts of distinct objects
    torch.manual_seed(5)
    ours = m.loss_in_env(batch, env)
    torch.manual_seed(5)  # the same context-mask draws on both sides
    ref = upstream_loss(up, args, batch, env)
    assert ours.loss.item() == pytest.approx(ref.item(), rel=LOSS_RTOL)
    ours.loss.backward()
    ref.backward()
    theirs = dict(up.named_parameters())
    for k, p in upstream_names(m).items():
        assert p.grad is not None and theirs[k].grad is not None, k
        assert relative_error(p.grad, theirs[k].grad) < 1e-4, k
    assert m.encoder.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mutation", [{"weight_equiv_loss": 0.0}, {"weight_equiv_loss": 1.0}, {"temperature": 0.5},
                                      {"mask_prob": 0.0}, {"random_mask": False}, {"clamp_similarity": False}])
def test_reference_detects_a_changed_step(mutation):
    """The comparison above is sensitive: ours with one setting changed fails its tolerance (rel 1e-5)."""
    ref_model = build()
    up, args = upstream_copy(ref_model)
    m = build(**mutation)
    m.load_state_dict(ref_model.state_dict())
    batch = pair_batch(8, seed=2)
    for env in ("rot", "color"):
        torch.manual_seed(6)
        ours = m.loss_in_env(batch, env).loss.item()
        torch.manual_seed(6)
        ref = upstream_loss(up, args, batch, env).item()
        if abs(ours - ref) > LOSS_RTOL * abs(ref):
            return
    pytest.fail(f"{mutation} still matches upstream")


def test_nt_xent_matches_upstream_and_temperature_matters():
    z = torch.randn(24, 16, generator=torch.Generator().manual_seed(3))
    for t in (0.1, 0.5):
        assert contextssl_nt_xent(z, t).item() == pytest.approx(upstream_nt_xent(z, t=t).item(), rel=1e-6)
    assert contextssl_nt_xent(z, 0.1).item() != pytest.approx(contextssl_nt_xent(z, 0.5).item(), rel=1e-2)


def test_encoder_is_torchvision_resnet18_without_zero_init_residual():
    """Upstream builds ``resnet18(pretrained=False)``: residual BN scales start at 1, not 0."""
    m = ContextSSL(ContextSSLConfig(n_embd=32), SPEC6)
    assert all(float(b.bn2.weight.detach().min()) == 1.0 for s in (m.encoder.layer1, m.encoder.layer4) for b in s)


# ---------------------------------------------------------------- environments, auxiliary input

def test_environment_zeroes_the_inactive_parts_of_actions_and_targets():
    m = build(random_mask=False)
    batch = pair_batch(8, seed=4)

    def loss(b: Batch, env: str) -> float:
        return m.loss_in_env(b, env).loss.item()

    def shifted(b: Batch, field: str, part: slice) -> Batch:
        t = getattr(b, field).clone()
        t[..., part] += torch.randn(t[..., part].shape, generator=torch.Generator().manual_seed(9))
        return dataclasses.replace(b, **{field: t})

    rot, color = slice(0, 4), slice(4, 6)
    for field in ("actions", "latents"):
        # In "rot" the colour part of the action (tokens) and of the target (auxiliary loss) is ignored ...
        assert loss(shifted(batch, field, color), "rot") == pytest.approx(loss(batch, "rot"), rel=1e-6)
        assert loss(shifted(batch, field, rot), "color") == pytest.approx(loss(batch, "color"), rel=1e-6)
        # ... and the active part counts.
        assert loss(shifted(batch, field, rot), "rot") != pytest.approx(loss(batch, "rot"), rel=1e-4)
        assert loss(shifted(batch, field, color), "color") != pytest.approx(loss(batch, "color"), rel=1e-4)
        assert loss(shifted(batch, field, color), "rotcolor") != pytest.approx(loss(batch, "rotcolor"), rel=1e-4)
    # Only x+'s latent is a target: the first view's absolute parameters do not enter the loss.
    lat = batch.latents.clone()
    lat[:, 0] += 1.0
    assert loss(dataclasses.replace(batch, latents=lat), "rotcolor") == pytest.approx(loss(batch, "rotcolor"), rel=1e-6)


def test_auxiliary_input_is_every_normalised_token_output():
    m = build(random_mask=False)
    seen = {}
    m.aux_predictor.register_forward_pre_hook(lambda mod, inp: seen.update(aux=inp[0].detach()))
    m.context_model.register_forward_hook(lambda mod, inp, out: seen.update(out=out.detach()))
    b = 6
    m.loss_in_env(pair_batch(b, seed=5), "rot")
    aux, out = seen["aux"], seen["out"]
    assert aux.shape == (b, 2, m.dim)  # both tokens (x_k and x+_k) of every pair
    assert torch.allclose(aux.norm(dim=-1), torch.ones(b, 2), atol=1e-5)
    assert torch.allclose(aux.flatten(0, 1), F.normalize(out.flatten(0, 1)[: 2 * b], dim=-1), atol=1e-6)


def test_environment_sampling_follows_env_ratio():
    torch.manual_seed(0)
    m = build()  # 6-d actions: README env_ratio [0.5, 0.5, 0]
    draws = [m.sample_env() for _ in range(2000)]
    assert draws.count("rotcolor") == 0 and abs(draws.count("rot") / 2000 - 0.5) < 0.05
    rot_only, rotcolor = build(SPEC4), build(env_ratio=(0.0, 0.0, 1.0))
    assert {rot_only.sample_env() for _ in range(50)} == {"rot"}  # no colour part: rot only
    assert {rotcolor.sample_env() for _ in range(20)} == {"rotcolor"}
    m = build(random_mask=False)
    assert {m.training_step(pair_batch(4, seed=k)).logs["env"] for k in range(20)} == {0.0, 1.0}


# ---------------------------------------------------------------- contexts

class IdEncoder(nn.Module):
    """Stand-in encoder: (N, D, 1, 1) "images" -> their D values, so every token names its image."""

    out_dim = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_contexts_are_consecutive_chunks_of_one_pair_per_object():
    """B = 70 objects, context_pairs 64: a 128-token context of objects 0..63, then objects 64..69 zero-padded."""
    m = build(SPEC4, context_pairs=64, random_mask=False)
    m.encoder = IdEncoder()
    m.context_model.read_in = nn.Linear(16 + 4, 32)
    m.context_model.read_out = nn.Linear(32, 16)
    m.aux_predictor[0] = nn.Linear(16, m.cfg.aux_hidden)
    b = 70
    ids = torch.arange(b * 2, dtype=torch.float).view(b, 2, 1, 1, 1).expand(b, 2, 16, 1, 1)  # image id 2k + view
    acts = torch.arange(b, dtype=torch.float).view(b, 1, 1).expand(b, 1, 4) + 1000
    seen = {}
    m.context_model.register_forward_pre_hook(lambda mod, inp: seen.update(tokens=inp[0].detach()))
    out = m.loss_in_env(Batch(ids, acts, torch.zeros(b, dtype=torch.long), torch.zeros(b, 2, 4)), "rot")
    assert out.logs["context_pairs"] == 64
    tokens = seen["tokens"]
    assert tokens.shape == (2, 128, 20)
    flat = tokens.flatten(0, 1)
    for k in range(b):
        assert torch.all(flat[2 * k, :16] == 2 * k) and torch.all(flat[2 * k, 16:] == 1000 + k)  # [f(x_k); r_k]
        assert torch.all(flat[2 * k + 1, :16] == 2 * k + 1) and torch.all(flat[2 * k + 1, 16:] == 0)  # [f(x+_k); 0]
    assert torch.all(flat[2 * b:] == 0)  # padding of the last, partial context
    for ctx in tokens:  # no image twice in a context
        real = ctx[(ctx != 0).any(dim=1), 0]
        assert len(set(real.tolist())) == len(real)


def test_partial_last_context_is_a_shorter_context():
    """10 objects, context_pairs 4: contexts 0-3, 4-7 and a 2-pair context 8-9 (padding is invisible)."""
    m = build(random_mask=False).eval()  # eval: BatchNorm independent of the batch
    z = torch.randn(10, 2, m.dim, generator=torch.Generator().manual_seed(7))
    a = torch.randn(10, 6, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full = m.contextualise(z, a, "rotcolor")
        assert torch.allclose(full[:8], m.contextualise(z[:8], a[:8], "rotcolor"), atol=1e-6)
        assert torch.allclose(full[8:], m.contextualise(z[8:], a[8:], "rotcolor"), atol=1e-6)
        assert not torch.allclose(full[4:8], m.contextualise(z[2:8], a[2:8], "rotcolor")[2:], atol=1e-4)
    assert m.context_pairs(32) == 4 and build(context_pairs=64).context_pairs(32) == 32  # mini preset: B = 32


def test_action_conditions_its_token_and_later_context_but_not_its_pair():
    m = build(random_mask=False, context_pairs=64).eval()
    z = torch.randn(3, 2, m.dim, generator=torch.Generator().manual_seed(10))
    a = torch.randn(3, 6, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        out = m.contextualise(z, a, "rotcolor").flatten(0, 1)
        a2 = a.clone()
        a2[1] += 1.0  # the action of pair 1 (tokens 2 and 3)
        out2 = m.contextualise(z, a2, "rotcolor").flatten(0, 1)
    changed = [not torch.allclose(out[k], out2[k], atol=1e-6) for k in range(6)]
    # Earlier tokens and x+_1 (which may not see its own x_1) are unchanged; x_1 and the later pair change.
    assert changed == [False, False, True, False, True, True]


def image_keys(views: torch.Tensor) -> list[str]:
    return [hashlib.sha1(v.numpy().tobytes()).hexdigest() for v in views]


def test_no_context_on_the_mini_holds_the_same_image_twice():
    """The training loader of 3diebench-mini (sampler and collate of benchmark/core/train.py) -> 2 views per object,
    contexts of distinct objects: no image (pixel-identical view) appears twice in a context."""
    sets = {**TINY_SETS, "data.image_size": 32, "train.batch_size": 12}
    cfg = resolve(merge(nest(sets), {"method": "contextssl", "dataset": "3diebench-mini",
                                     "data": {"latent_type": "rotcolor"}}))
    m = ContextSSL(ContextSSLConfig(n_embd=32, context_pairs=4), dataset_entry(cfg.dataset).spec(cfg))
    ds = dataset_entry(cfg.dataset).build(cfg, "train", m.views_needed(cfg.data.seq_len), False)
    assert m.views_needed(cfg.data.seq_len) == 2
    loader = DataLoader(ds, batch_size=12, sampler=EpochSampler(len(ds), 12, 0), collate_fn=collate, drop_last=True)
    checked = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        for d in loader:
            batch = to_batch(d)
            assert batch.views.shape[1] == 2 and batch.latents is not None and batch.latents.shape == (12, 2, 6)
            p = m.context_pairs(batch.views.shape[0])
            for start in range(0, 12, p):
                keys = image_keys(batch.views[start:start + p].flatten(0, 1))
                assert len(set(keys)) == len(keys) == 2 * p
                checked += 1
    assert checked >= 3
    # The check can fail: the old construction (one object's consecutive transitions in a context) repeats x_1.
    seq = ds.with_views(3)[0]["views"]
    assert len(set(image_keys(torch.stack([seq[0], seq[1], seq[1], seq[2]])))) == 3


def nest(flat: dict) -> dict:
    """{"a.b": v} -> {"a": {"b": v}} with YAML-typed values, as --set gives."""
    return parse_set([f"{k}={v}" for k, v in flat.items()])


class Images:
    """A tiny in-memory ImageSource for the augmentation and saccade datasets."""

    name, mean, std = "fake", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    labels = np.arange(4) % 2

    def __len__(self) -> int:
        return 4

    def image(self, index: int) -> torch.Tensor:
        return torch.randint(0, 256, (3, 24, 24), generator=torch.Generator().manual_seed(index), dtype=torch.uint8)


@pytest.mark.parametrize("latent_type", ["rot", "rotcolor", "all"])
def test_3diebench_latents_are_absolute_parameters_in_the_action_layout(latent_type):
    """The mini (3DIEBench loader): latents = [quat(R_i), hues...] as upstream's ``individual_params``; the
    action between two views is R_0^-1 R_1 and the hue difference of those absolute parameters."""
    cfg = resolve(merge(nest({**TINY_SETS, "data.image_size": 32}),
                        {"method": "contextssl", "data": {"latent_type": latent_type}}))
    ds = dataset_entry(cfg.dataset).build(cfg, "train", 3, False)
    batch = to_batch(collate([ds[k] for k in range(4)]))
    a = batch.actions.shape[-1]
    assert batch.latents is not None and batch.latents.shape == (4, 3, a) and batch.latents.dtype == torch.float32
    for b in range(4):
        raw = ds[b]["latents"].numpy()  # the (V, 7) latent_k.npy values
        lat = batch.latents[b].numpy()
        q = Rotation.from_euler("xyz", raw[:, :3]).as_quat()
        assert np.allclose(lat[:, :4], q, atol=1e-6)  # scalar-last, not canonicalised (upstream)
        idx = {"rot": [], "rotcolor": [3, 6], "all": [3, 4, 5, 6]}[latent_type]
        assert np.allclose(lat[:, 4:], raw[:, idx], atol=1e-6)
        r = Rotation.from_quat(lat[:-1, :4]).inv() * Rotation.from_quat(lat[1:, :4])
        assert np.allclose(np.abs((r.as_quat() * batch.actions[b, :, :4].numpy()).sum(-1)), 1, atol=1e-5)
        assert np.allclose(batch.actions[b, :, 4:].numpy(), lat[1:, 4:] - lat[:-1, 4:], atol=1e-5)


def test_image_datasets_latents_are_the_absolute_parameters_whose_differences_are_the_actions():
    aug = AugmentedSequences(Images(), 3, 16, AugConfig(), seed=0, fixed=False, num_classes=2)
    sac = SaccadeSequences(Images(), None, 3, 16, SaccadeConfig(saliency="spectral", fovea=12), seed=0, fixed=False,
                           num_classes=2)
    for ds, width in ((aug, 9), (sac, 2)):
        batch = to_batch(collate([ds[k] for k in range(4)]))
        assert batch.latents is not None and batch.latents.shape == (4, 3, width)
        assert torch.allclose(batch.latents[:, 1:] - batch.latents[:, :-1], batch.actions, atol=1e-6)
        assert batch.latents.abs().sum() > 0
    assert torch.all((sac[0]["abs_latents"] >= 0) & (sac[0]["abs_latents"] < 1))  # fixation (row, col) / side
    crop = AugmentedSequences(Images(), 2, 16, AugConfig(condition="crop"), seed=0, fixed=False, num_classes=2)
    assert crop[0]["abs_latents"].shape == (2, 4)  # the conditioned columns only, as the actions


def test_batch_latents_are_optional_and_move_with_the_batch():
    batch = pair_batch(2)
    assert Batch(batch.views, batch.actions, batch.labels).latents is None
    assert Batch(batch.views, batch.actions, batch.labels).to("cpu").latents is None
    moved = batch.to("cpu")
    assert moved.latents is not None and torch.equal(moved.latents, batch.latents)
    assert to_batch(collate([{"views": torch.zeros(2, 3, 4, 4), "actions": torch.zeros(1, 2), "label": 0,
                              "targets": {}}])).latents is None


# ---------------------------------------------------------------- errors and variants

def test_missing_or_bad_latents_actions_and_views_are_clear_errors():
    m = build()
    batch = pair_batch(4)
    with pytest.raises(ValueError, match="aux_target=relative"):
        m.training_step(dataclasses.replace(batch, latents=None))
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 2, 6\)"):
        m.training_step(dataclasses.replace(batch, latents=batch.latents[..., :4]))
    with pytest.raises(ValueError, match="NaN"):
        m.training_step(dataclasses.replace(batch, latents=batch.latents * float("nan")))
    with pytest.raises(ValueError, match="got no actions"):
        m.training_step(dataclasses.replace(batch, actions=None))
    with pytest.raises(ValueError, match="latent_type"):
        m.training_step(dataclasses.replace(batch, actions=torch.randn(4, 1, 4)))
    with pytest.raises(ValueError, match="one \\(x, x\\+\\) pair per object"):
        m.training_step(dataclasses.replace(batch, views=torch.randn(4, 3, 3, 32, 32)))
    for bad, match in (({"context_pairs": 0}, "context_pairs"), ({"env_ratio": (0.5, 0.5, 0.0)}, "no colour part")):
        with pytest.raises(ValueError, match=match):
            ContextSSL(ContextSSLConfig(**{**SMALL, **bad}), SPEC4)
    with pytest.raises(ValueError, match="actions"):
        ContextSSL(ContextSSLConfig(), DataSpec(32, 0, 5))


def test_relative_variant_is_opt_in_and_needs_no_latents():
    m = build(aux_target="relative", random_mask=False)
    assert m.aux_predictor[0].in_features == 2 * m.dim
    batch = pair_batch(6, seed=3)
    loss = m.training_step(dataclasses.replace(batch, latents=None)).loss
    assert torch.isfinite(loss)
    assert from_dict(ContextSSLConfig, {}).aux_target == "absolute"


# ---------------------------------------------------------------- end to end

def test_cli_upstream_preset_trains_on_the_mini(tmp_path):
    """The documented preset (rotcolor, absolute target) through the CLI: 2 views per object, contexts of
    min(64, batch) pairs logged, result.json written with the preset's config."""
    args = tiny_args(tmp_path, **{"model.n_embd": 64, "train.log_every": 1}) + ["--config", PRESET]
    assert main(args) == 0
    (path,) = tmp_path.rglob("result.json")
    record = json.loads(path.read_text())
    assert record["method"] == "contextssl"
    assert record["config"]["data"]["latent_type"] == "rotcolor"
    assert record["config"]["model"]["aux_target"] == "absolute" and record["config"]["model"]["context_pairs"] == 64
    metrics = record["metrics"]
    for k in ("top1", "rotation_r2", "color_r2"):  # the encoder rows stay
        assert isinstance(metrics[k], float) and math.isfinite(metrics[k]), k
    # The context representation, read after min(64, batch 4) - 1 = 3 pairs of the rotation environment.
    assert metrics["context_len"] == 3 and metrics["context_env"] == "rot"
    for k in ("context_top1", "context_rotation_r2", "context_color_r2", "context_rotation_r2_per_dim",
              "context_color_r2_per_dim"):
        assert isinstance(metrics[k], float) and math.isfinite(metrics[k]), k
    logs = [json.loads(line) for line in (path.parent / "log.jsonl").read_text().splitlines()]
    assert logs and all(entry["context_pairs"] == 4 for entry in logs)  # tiny_args: batch 4 < 64
    assert {entry["env"] for entry in logs} <= {0.0, 1.0}


def test_cli_colour_environment_on_rotation_actions_is_a_config_error(tmp_path, capsys):
    assert main(tiny_args(tmp_path, **{"model.n_embd": 64, "model.env_ratio": "[0.5,0.5,0]"})
                + ["--method", "contextssl"]) == 2
    assert "latent_type=rotcolor" in capsys.readouterr().err


# ---------------------------------------------------------------- the context representation vs upstream's evaluation

def upstream_context(m: ContextSSL, views: torch.Tensor, actions: torch.Tensor, mode: str, c: int,
                     x: torch.Tensor, xv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``eval_equivariance.py`` on our weights: the cache of ``c`` pairs of ``views`` (P, 2, ...) in ``mode``, then
    the heads' inputs for the test pairs (x, xv) -> (feature, embd_zplus), each (B, 2 * D)."""
    up, _ = upstream_copy(m)
    up.eval()
    cache_x = views.flatten(0, 1)  # _create_cache: interleaved (x_k, x+_k)
    past = upstream_context_past(up, cache_x, actions, mode, 2 * c, x.shape[0])
    return upstream_query_outputs(up, x, xv, torch.zeros(x.shape[0], 6), past)


def context_pairs_batch(p: int, b: int, seed: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Large actions: at GPT-2 init the outputs depend on the tokens' action part only weakly.
    return (torch.randn(p, 2, 3, 32, 32, generator=g), 10 * torch.randn(p, 6, generator=g),
            torch.randn(b, 2, 3, 32, 32, generator=g))


@pytest.mark.parametrize("env,c", [("rot", 3), ("rot", 0), ("color", 4), ("rot", 1)])
def test_context_representation_matches_upstream_eval(env, c):
    """Our query outputs after a context of c pairs = upstream's ``forward_eval_rplus`` with the KV cache of
    ``eval_equivariance.py`` (block of 4 pairs: c = 3 is padded upstream, c = 4 fills it, c = 0 has no past),
    normalised and paired as its heads read them; the encoder half equals ``feature``."""
    m = build().eval()
    m.context_env = env  # the environment whose part of r the context keeps (ours: "rot", the paper row)
    views, actions, test = context_pairs_batch(4, 5)
    with torch.no_grad():
        ours = m.encode_context(test, m.make_context(views[:c], actions[:c]))
        feature, zplus = upstream_context(m, views, actions, env, c, test[:, 0], test[:, 1])
        assert torch.allclose(m.encode(test)["encoder"].flatten(1), feature, atol=1e-5)
    assert ours.shape == (5, 2, m.dim)
    assert relative_error(F.normalize(ours, dim=-1).flatten(1), zplus) < 1e-5
    # The comparison is sensitive: another context length, or the other environment, does not match.
    with torch.no_grad():
        d = c - 1 if c == len(views) else c + 1
        other = m.encode_context(test, m.make_context(views[:d], actions[:d]))
        m.context_env = "color" if env == "rot" else "rot"
        swapped = m.encode_context(test, m.make_context(views[:c], actions[:c]))
    assert relative_error(F.normalize(other, dim=-1).flatten(1), zplus) > 1e-3
    if c:
        assert relative_error(F.normalize(swapped, dim=-1).flatten(1), zplus) > 1e-3


def test_context_queries_are_read_one_at_a_time():
    """Each view is its own query: its output does not depend on the other views of the batch (one pass holds
    them all), only on the context; the context's actions matter in its environment's part only."""
    m = build().eval()
    views, actions, test = context_pairs_batch(3, 4, seed=21)
    with torch.no_grad():
        ctx = m.make_context(views, actions)
        all_at_once = m.encode_context(test, ctx)
        one_by_one = torch.cat([m.encode_context(test[i:i + 1, j:j + 1], ctx) for i in range(4) for j in range(2)])
        assert torch.allclose(all_at_once.flatten(0, 1), one_by_one.flatten(0, 1), atol=1e-5)
        colour = actions.clone()
        colour[:, 4:] += 1.0
        assert torch.allclose(m.encode_context(test, m.make_context(views, colour)), all_at_once, atol=1e-6)
        rotation = actions.clone()
        rotation[:, :4] += 1.0
        assert not torch.allclose(m.encode_context(test, m.make_context(views, rotation)), all_at_once, atol=1e-4)
    with pytest.raises(ValueError, match="a context is"):
        m.make_context(views, actions[:, :4])


def test_context_length_is_the_training_context_less_the_query_pair():
    """Upstream trains on 128-token blocks and reads its rows at ``eval_ctxt`` 126 tokens = 63 pairs."""
    m = ContextSSL(ContextSSLConfig(n_embd=32), SPEC6)
    assert m.eval_context_pairs(512) == 63  # the README command: batch 512, block_size 128
    assert m.eval_context_pairs(32) == 31  # the mini presets: one 32-pair context per batch
    assert build(context_pairs=4).eval_context_pairs(512) == 3 and build(context_pairs=1).eval_context_pairs(8) == 0
    assert isinstance(m, InContext) and not isinstance(ContextReader(m, None), InContext)


def test_global_r2_is_upstreams_r2_score_and_differs_from_per_dimension():
    """Known answers: 1 for an exact prediction; a hand computation; upstream's ``utils.r2_score`` on the same
    predictions; and a crafted target whose dimensions differ in scale, where the two definitions disagree."""
    target = torch.tensor([[0.0, 10.0], [1.0, 12.0], [2.0, 14.0]])
    pred = torch.tensor([[0.5, 10.0], [1.0, 12.0], [1.5, 14.0]])
    assert r2_global(target, target) == 1.0 and r2_uniform(target, target) == 1.0
    # global: one mean (6.5) over all six entries; SS_tot = 6.5^2+5.5^2+4.5^2+3.5^2+5.5^2+7.5^2 = 191.5, SS_res 0.5
    assert r2_global(pred, target) == pytest.approx(1 - 0.5 / 191.5, abs=1e-12)
    # per dimension: dim 0 1 - 0.5 / 2 = 0.75, dim 1 exact = 1 -> mean 0.875
    assert r2_uniform(pred, target) == pytest.approx(0.875, abs=1e-12)
    g = torch.Generator().manual_seed(22)
    y, p = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    assert r2_global(p, y) == pytest.approx(float(upstream_r2_score(p, y)), rel=1e-5)
    assert r2_global(pred, target) == pytest.approx(float(upstream_r2_score(pred, target)), rel=1e-6)


# ---------------------------------------------------------------- the context probes (benchmark/probes/context.py)

class HueBank(SequenceDataset):
    """An in-memory view bank with 3DIEBench latents and targets. A view's "image" (7, 1, 1) holds
    [h_f, sqrt(1 - h_f^2), h_s, sqrt(1 - h_s^2), 3 onehot(label)] of its floor / spot hues h_f, h_s: unit-free
    features of constant norm, linear in the hues (the colour probe's known answer: R^2 ~ 1)."""

    num_classes, action_dim, views_per_object = 3, 6, 5
    probe_targets = ThreeDIEBench.probe_targets
    view_bank = True

    def __init__(self, n: int, seed: int, hues: bool = True, num_views: int = 2) -> None:
        super().__init__(num_views, seed, fixed=True)
        rng = np.random.default_rng(seed)
        self.lat = np.concatenate([rng.uniform(-1.5, 1.5, (n, 5, 3)), rng.uniform(0, 1, (n, 5, 4))], axis=2)
        if not hues:  # the pose-only mini: one scene for every view
            self.lat[:, :, 3:] = 0.3
        self.labels = rng.integers(0, 3, n)

    def num_items(self) -> int:
        return len(self.labels)

    def image(self, lat: np.ndarray, label: int) -> torch.Tensor:
        h = lat[:, [3, 6]]
        feats = np.concatenate([h[:, :1], np.sqrt(1 - h[:, :1] ** 2), h[:, 1:], np.sqrt(1 - h[:, 1:] ** 2),
                                3 * np.eye(3)[[label] * len(lat)]], axis=1)
        return torch.from_numpy(feats).float()[:, :, None, None]

    def item(self, index: int, rng: np.random.Generator) -> dict:
        lat = self.lat[index, rng.choice(5, self.num_views, replace=False)]
        return {"views": self.image(lat, int(self.labels[index])),
                "actions": torch.from_numpy(relative_actions(lat, "rotcolor")), "label": int(self.labels[index]),
                "targets": {k: torch.from_numpy(v) for k, v in probe_targets(lat).items()},
                "latents": torch.from_numpy(lat)}

    def bank_targets(self, first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
        return pair_targets(first, second)


class PixelContext(Method):
    """A method whose context representation is its views' pixels; it records the contexts it is given."""

    name, Config, headline = "pixels", ContextSSLConfig, {"top1": "encoder"}
    context_env, context_dim = "rot", 7

    def __init__(self) -> None:
        super().__init__(ContextSSLConfig(), DataSpec(1, 6, 3, channels=7))
        self.contexts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def eval_context_pairs(self, train_batch_size: int) -> int:
        return train_batch_size - 1

    def make_context(self, views: torch.Tensor, actions: torch.Tensor) -> int:
        self.contexts.append((views, actions))
        return len(self.contexts)

    def encode_context(self, views: torch.Tensor, context: int) -> torch.Tensor:
        assert context == len(self.contexts)
        return views.flatten(2)


def probe_cfg(protocol: str, batch_size: int = 8) -> RunConfig:
    return RunConfig(method="contextssl", train=TrainConfig(batch_size=batch_size, progress=False),
                     data=DataConfig(num_workers=0),
                     probe=ProbeConfig(epochs=100, batch_size=128, lr=3e-2, hidden=16, bank_draws=4, bank_views=0,
                                       view_protocol=protocol))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["bank", "samples"])
def test_context_probes_known_answers(protocol):
    """Features linear in the hues (constant norm) and the label: colour R^2 ~ 1 in both definitions, top-1 100;
    the context holds c = eval_context_pairs(train batch) pairs of distinct training objects with their actions."""
    m = PixelContext()
    tr, va = HueBank(160, 0), HueBank(40, 1)
    tr.repeats = va.repeats = 4  # as evaluate() sets probe.train_samples / val_samples (the samples protocol's)
    out = context_probes(m, probe_cfg(protocol), tr, va, torch.device("cpu"))
    assert out["context_len"] == 7 and out["context_env"] == "rot"
    assert out["context_top1"] == 100.0
    assert out["context_color_r2"] > 0.98 and out["context_color_r2_per_dim"] > 0.98
    assert set(out) == {"context_len", "context_env", "context_protocol", "context_top1"} | {
        f"context_{t}_r2{d}" for t in ("rotation", "color", "indiv_rotation") for d in ("", "_per_dim")}
    # Hues say nothing about the pose: per dimension R^2 ~ 0. The global definition (one mean over all entries)
    # still credits the head for each quaternion component's own mean (w's is far from x, y, z's): it is the
    # key without suffix, as upstream's r2_score.
    assert out["context_rotation_r2_per_dim"] < 0.05 and out["context_indiv_rotation_r2_per_dim"] < 0.05
    assert out["context_rotation_r2"] > out["context_rotation_r2_per_dim"] + 0.1
    (views, actions), = m.contexts
    assert views.shape == (7, 2, 7, 1, 1) and actions.shape == (7, 6)
    hues = views[:, :, [0, 2], 0, 0]
    assert len({tuple(h.tolist()) for h in hues[:, 0]}) == 7  # distinct objects (their first views differ)
    assert torch.allclose(actions[:, 4:], hues[:, 1] - hues[:, 0], atol=1e-6)  # each pair's own action x -> x+
    # Bounded by the training objects: a batch of 512 over 160 objects reads 160 pairs.
    assert context_len(m, probe_cfg(protocol, 512), tr) == 160


def test_context_probes_leave_out_a_target_that_never_varies_and_methods_without_a_context():
    """The pose-only mini has one colour scene: the colour target is constant, so it has no context R^2 keys."""
    out = context_probes(PixelContext(), probe_cfg("bank"), HueBank(40, 0, hues=False), HueBank(10, 1, hues=False),
                         torch.device("cpu"))
    assert "context_rotation_r2" in out and "context_indiv_rotation_r2_per_dim" in out
    assert not any("color" in k for k in out)
    assert context_probes(TinyEncoderOnly(), probe_cfg("bank"), HueBank(40, 0), HueBank(10, 1),
                          torch.device("cpu")) == {}


class TinyEncoderOnly(Method):
    name, Config, headline = "encoder-only", ContextSSLConfig, {"top1": "encoder"}

    def __init__(self) -> None:
        super().__init__(ContextSSLConfig(), DataSpec(1, 6, 3, channels=7))


# ---------------------------------------------------------------- sweeps: the environments ContextSSL trains in

def sweep_contextssl(name: str) -> list[tuple[RunConfig, ContextSSL]]:
    """Every ContextSSL run of sweep ``name`` resolved, and the method it builds (transformer shrunk to 32)."""
    sweep = SWEEPS[name]
    out = []
    for i, run in enumerate(sweep.runs):
        if run["method"] == "contextssl":
            cfg = sweep.config(i)
            spec = dataset_entry(cfg.dataset).spec(cfg)
            out.append((cfg, ContextSSL(from_dict(ContextSSLConfig, {**cfg.model, "n_embd": 32}), spec)))
    return out


def test_sweeps_train_contextssl_with_upstreams_environments_on_3diebench():
    """paper-3diebench: the upstream preset (rotation and colour actions, rot / colour environments 0.5 / 0.5),
    one pair per object (L1, as the other pair methods); the pose-only mini: the rotation environment only."""
    runs = sweep_contextssl("paper-3diebench")
    assert len(runs) == 3
    for cfg, m in runs:
        assert cfg.dataset == "3diebench" and cfg.data.latent_type == "rotcolor" and cfg.data.seq_len == 1
        assert m.spec.action_dim == 6 and m.env_ratio == (0.5, 0.5, 0.0)
        assert cfg.model["context_pairs"] == 64 and cfg.model["aux_target"] == "absolute"
    preset = resolve(merge(load_yaml(PRESET), {"dataset": "3diebench", "data": {"seq_len": 1}}))
    assert config_hash(preset) == config_hash(dataclasses.replace(runs[0][0], sweep=None))
    for name in ("pattern", "pattern-gpu"):
        runs = sweep_contextssl(name)
        assert len(runs) == 2
        for cfg, m in runs:
            assert cfg.data.mini.variant == "pose-only" and cfg.data.latent_type == "rot"
            assert m.spec.action_dim == 4 and m.env_ratio == (1.0, 0.0, 0.0)
            assert {m.sample_env() for _ in range(20)} == {"rot"}
    # Any other regime (views whose colours vary) gets the upstream preset.
    assert contextssl_environment({"data.mini.variant": "3diebench"})["data.latent_type"] == "rotcolor"


def test_context_probes_on_the_pose_only_mini_have_no_colour_keys():
    """The real pose-only mini (its colour actions and targets are all zero): ContextSSL trained in the rotation
    environment gets context R^2 keys for the rotations only; the context is its rotation actions."""
    sets = {**TINY_SETS, "data.image_size": 32, "data.mini.variant": "pose-only", "train.batch_size": 6}
    cfg = resolve(merge(nest(sets), {"method": "contextssl", "dataset": "3diebench-mini"}))
    entry = dataset_entry(cfg.dataset)
    tr, va = entry.build(cfg, "train", 2, True), entry.build(cfg, "val", 2, True)
    torch.manual_seed(0)
    m = ContextSSL(ContextSSLConfig(n_embd=32, context_pairs=64), entry.spec(cfg))
    seen = []
    make = m.make_context
    m.make_context = lambda views, actions: seen.append(actions) or make(views, actions)  # type: ignore[method-assign]
    out = context_probes(m, cfg, tr, va, torch.device("cpu"))
    assert out["context_len"] == 5 and seen[0].shape == (5, 4) and seen[0].abs().sum() > 0
    assert {"context_rotation_r2", "context_rotation_r2_per_dim", "context_indiv_rotation_r2"} <= set(out)
    assert not any("color" in k for k in out)
