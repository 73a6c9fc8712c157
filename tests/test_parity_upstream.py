"""Parity with the authors' own classes: seq-JEPA and every baseline with released code.

The references are the seq-JEPA authors' classes (``hafezgh/seq-jepa:seq-jepa/src/models.py``, MIT), kept
verbatim under ``tests/fixtures/upstream/seqjepa/``. For each method the test

1. builds ours and theirs with the released defaults and compares their layer lists: every layer's type,
   sizes, bias, BatchNorm affine / eps / momentum, dropout rates (``nn.MultiheadAttention``'s attention
   dropout is a float attribute, not a module), transformer layer flags;
2. checks that the compared modules hold every parameter on both sides (no extra or missing head);
3. copies OUR weights (randomised first, so that no zero-initialised layer hides a gradient) into theirs,
   turns dropout off on both sides, runs one training forward in train mode (batch-statistics BatchNorm)
   on the same batch and compares the loss and the gradient of every encoder parameter.

Everything runs in float64 so that the comparison can be tight. SIE's official code
(facebookresearch/SIE) is not MIT: its layer lists are transcribed below as literal data, with file and line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from baselines.byol import BYOL, BYOLConfig
from baselines.cond_byol import CondBYOL, CondBYOLConfig
from baselines.conv_ijepa import ConvIJEPA, ConvIJEPAConfig
from baselines.equimod import EquiMod, EquiModConfig
from baselines.sen import SEN, SENConfig
from baselines.sie import SIE, SIEConfig
from baselines.simclr import SimCLR, SimCLRConfig
from baselines.vicreg import VICReg, VICRegConfig
from baselines.vicreg_traj import VICRegTraj, VICRegTrajConfig
from methods.contract import Batch, DataSpec, Method
from methods.seqjepa import SeqJEPA, SeqJEPAConfig
from tests.fixtures.upstream.seqjepa import models as U

B, SIZE, A, CLASSES = 8, 32, 4, 5
SPEC = DataSpec(image_size=SIZE, action_dim=A, num_classes=CLASSES)
pytestmark = [pytest.mark.filterwarnings("ignore:The parameter .pretrained. is deprecated"),
              pytest.mark.filterwarnings("ignore:Arguments other than a weight enum")]


# ---------------------------------------------------------------- layer lists

def describe(m: nn.Module) -> tuple | None:
    """One layer as comparable data (None for containers and identities)."""
    if isinstance(m, nn.Linear):  # also MultiheadAttention's out_proj (NonDynamicallyQuantizableLinear)
        return ("Linear", m.in_features, m.out_features, m.bias is not None)
    if isinstance(m, nn.Conv2d):
        return ("Conv2d", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.bias is not None)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return (type(m).__name__, m.num_features, m.affine, m.eps, m.momentum, m.track_running_stats)
    if isinstance(m, nn.LayerNorm):
        return ("LayerNorm", tuple(m.normalized_shape), m.eps, m.elementwise_affine)
    if isinstance(m, nn.Dropout):
        return ("Dropout", m.p)
    if isinstance(m, nn.MultiheadAttention):
        return ("MultiheadAttention", m.embed_dim, m.num_heads, m.dropout, m.batch_first, m.in_proj_bias is not None)
    if isinstance(m, nn.TransformerEncoderLayer):
        return ("TransformerEncoderLayer", m.norm_first, m.activation_relu_or_gelu)
    if isinstance(m, nn.TransformerEncoder):
        return ("TransformerEncoder", m.num_layers, m.norm is not None)
    if isinstance(m, nn.MaxPool2d | nn.AdaptiveAvgPool2d):
        return (type(m).__name__, str(m))
    if isinstance(m, nn.Identity) or next(m.children(), None) is not None:
        return None  # containers: their layers are listed one by one
    return (type(m).__name__,)  # activations


def layer_list(module: nn.Module | nn.Parameter) -> list[tuple]:
    if isinstance(module, nn.Parameter):
        return [("Parameter", tuple(module.shape))]
    return [d for m in module.modules() if (d := describe(m)) is not None]


def tensors(module: nn.Module | nn.Parameter) -> list[Tensor]:
    if isinstance(module, nn.Parameter):
        return [module]
    return list(module.state_dict(keep_vars=True).values())


def check_and_copy(pairs: list[tuple], ours: nn.Module, theirs: nn.Module) -> None:
    """Same layer lists pair by pair, every parameter covered on both sides; our weights into theirs."""
    for k, (a, b) in enumerate(pairs):
        assert layer_list(a) == layer_list(b), f"pair {k}: layer lists differ"
    for side, root, i in (("ours", ours, 0), ("upstream", theirs, 1)):
        held = {id(t) for pair in pairs for t in tensors(pair[i])}
        missing = [n for n, p in root.named_parameters() if id(p) not in held]
        assert not missing, f"{side}: parameters outside the compared modules: {missing}"
    with torch.no_grad():
        for a, b in pairs:
            for ta, tb in zip(tensors(a), tensors(b), strict=True):
                assert ta.shape == tb.shape
                tb.copy_(ta)


def randomise(module: nn.Module, seed: int) -> None:
    """Random norm scales/shifts, biases and tokens, so that every layer passes a gradient (zero-init residual
    BatchNorms, zero [AGG] token and zero biases would otherwise hide layers from the gradient check)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 or "agg_token" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def no_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0  # attention-weight dropout: a float attribute, not a module


# ---------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    ours: Callable[[], Method]
    theirs: Callable[[], nn.Module]
    pairs: Callable[[nn.Module, nn.Module], list[tuple]]  # (our module, their module) with the same layers
    views: int  # views per sample our training_step reads
    loss: Callable[[nn.Module, Tensor, Tensor], Tensor]  # their training loss on (views, relative actions)


KW = dict(n_channels=3, num_classes=CLASSES, num_heads=4, num_enc_layers=3, cifar_resnet=False, ema_decay=0.996)


def seqjepa_theirs(act_cond: bool) -> nn.Module:
    return U.SeqJEPA_Transforms(SIZE, True, **KW, learn_act_emb=1, act_cond=int(act_cond), act_latentdim=A,
                                act_projdim=128, pred_hidden=1024)


def seqjepa_pairs(act_cond: bool) -> Callable[[nn.Module, nn.Module], list[tuple]]:
    def pairs(o: nn.Module, t: nn.Module) -> list[tuple]:
        out = [(o.encoder, t.encoder), (o.target_encoder, t.target_encoder), (o.aggregator.agg_token, t.agg_token),
               (o.aggregator.encoder, t.transformer_encoder.transformer_encoder),
               (o.aggregator.norm, t.transformer_encoder.norm), (o.predictor, t.predictor)]
        return out + ([(o.action_emb, t.action_proj)] if act_cond else [])
    return pairs


def seqjepa_loss(t: nn.Module, views: Tensor, actions: Tensor) -> Tensor:
    m = views.shape[1] - 1
    # engine.py train_one_epoch_3diebench: model(batch[:, :-1], batch[:, -1], act_latents[:, :-1], act_latents[:, -1],
    # rel_latents=rel_latents); with rel_latents given, the absolute act_latents only fix a shape.
    placeholder = torch.zeros(views.shape[0], m, A, dtype=views.dtype)
    return t(views[:, :m], views[:, m], placeholder, placeholder[:, -1], rel_latents=actions)[0]


def seqjepa_no_action_loss(t: nn.Module, views: Tensor, actions: Tensor) -> Tensor:
    m = views.shape[1] - 1
    return t(views[:, :m], views[:, m], None, None)[0]


def conv_ijepa_loss(t: nn.Module, views: Tensor, actions: Tensor) -> Tensor:
    # Conv_IJEPA takes absolute positions; ours the consecutive differences: positions = their running sum.
    positions = torch.cat([torch.zeros_like(actions[:, :1]), actions.cumsum(1)], dim=1)
    return t(views[:, :-1], views[:, -1], positions)[0]


def pair_loss(t: nn.Module, views: Tensor, actions: Tensor) -> Tensor:
    return t(views[:, 0], views[:, 1], actions[:, 0])[0]  # engine.py: model(batch[:, 0], batch[:, 1], rel[:, 0])


def online(o: nn.Module) -> nn.Module:
    return o.backbone.encoder


CASES: dict[str, Case] = {
    "seqjepa": Case(lambda: SeqJEPA(SeqJEPAConfig(), SPEC), lambda: seqjepa_theirs(True), seqjepa_pairs(True), 4,
                    seqjepa_loss),
    "seqjepa-no-actions": Case(lambda: SeqJEPA(SeqJEPAConfig(act_cond=False), SPEC), lambda: seqjepa_theirs(False),
                               seqjepa_pairs(False), 4, seqjepa_no_action_loss),
    "conv-ijepa": Case(
        lambda: ConvIJEPA(ConvIJEPAConfig(), SPEC),
        lambda: U.Conv_IJEPA(SIZE, SIZE, True, **KW, act_projdim=128, act_latentdim=A, act_cond=1, pred_hidden=1024),
        lambda o, t: [(o.encoder, t.encoder), (o.projector, t.projector), (o.target_encoder, t.target_encoder),
                      (o.target_projector, t.target_projector), (o.action_emb, t.action_proj),
                      (o.predictor, t.predictor)],
        4, conv_ijepa_loss),
    "equimod": Case(
        lambda: EquiMod(EquiModConfig(), SPEC), lambda: U.SimCLREquiMod(CLASSES, A, 1, 128, 1.0, 0.5, False),
        lambda o, t: [(o.encoder, t.encoder), (o.projector_inv, t.projector_inv), (o.projector_equi, t.projector_equi),
                      (o.action_emb, t.action_proj), (o.predictor, t.predictor)],
        2, pair_loss),
    "cond-byol": Case(
        lambda: CondBYOL(CondBYOLConfig(), SPEC), lambda: U.BYOL_Conditional(CLASSES, A, 128, **KW),
        lambda o, t: [(online(o), t.encoder), (o.target_backbone.encoder, t.target_encoder),
                      (o.projector, t.projector), (o.target_projector, t.target_projector),
                      (o.action_emb, t.action_proj), (o.predictor, t.predictor)],
        2, pair_loss),
    "sen": Case(
        lambda: SEN(SENConfig(), SPEC), lambda: U.SEN_Contrastive(CLASSES, A, 1, 128, 0.5, False),
        lambda o, t: [(o.encoder, t.encoder), (o.projector, t.projector_equi), (o.action_emb, t.action_proj),
                      (o.predictor, t.predictor)],
        2, pair_loss),
    "sie": Case(
        lambda: SIE(SIEConfig(), SPEC), lambda: U.SIE(CLASSES, 25.0, 25.0, 1.0, 1.0, A, False),
        lambda o, t: [(o.encoder, t.encoder), (o.projector_inv, t.projector_inv), (o.projector_equi, t.projector_equi),
                      (o.predictor, t.predictor)],
        2, pair_loss),
    "simclr": Case(
        lambda: SimCLR(SimCLRConfig(), SPEC), lambda: U.SimCLR(CLASSES, 0.5, False),
        lambda o, t: [(online(o), t.encoder), (o.projector, t.projector)], 2, pair_loss),
    "byol": Case(
        lambda: BYOL(BYOLConfig(), SPEC),
        lambda: U.BYOL(CLASSES, False, ema_decay=0.996, num_heads=4, num_enc_layers=3),
        lambda o, t: [(online(o), t.encoder), (o.target_backbone.encoder, t.target_encoder),
                      (o.projector, t.projector), (o.target_projector, t.target_projector),
                      (o.predictor, t.predictor)],
        2, pair_loss),
    "vicreg": Case(
        lambda: VICReg(VICRegConfig(), SPEC), lambda: U.VICReg(CLASSES, 25.0, 25.0, 1.0, False),
        lambda o, t: [(online(o), t.encoder), (o.projector, t.projector)], 2, pair_loss),
    "vicreg-traj": Case(
        lambda: VICRegTraj(VICRegTrajConfig(), SPEC),
        lambda: U.VICReg_Traj(CLASSES, 25.0, 25.0, 1.0, 1.0, False, False),
        lambda o, t: [(online(o), t.encoder), (o.projector, t.projector)],
        3, lambda t, views, actions: t(views[:, :3])[0]),  # engine.py: model(batch[:, :3])
}


def build(case: Case) -> tuple[Method, nn.Module]:
    torch.manual_seed(0)
    ours = case.ours()
    torch.manual_seed(1)
    theirs = case.theirs()
    return ours, theirs


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_the_authors_class(name: str) -> None:
    case = CASES[name]
    ours, theirs = build(case)
    pairs = case.pairs(ours, theirs)
    randomise(ours, seed=2)
    check_and_copy(pairs, ours, theirs)  # with the released dropout rates (seq-JEPA: 0.1 everywhere)
    no_dropout(ours)
    no_dropout(theirs)
    ours, theirs = ours.double().train(), theirs.double().train()

    g = torch.Generator().manual_seed(3)
    views = torch.randn(B, case.views, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    actions = torch.randn(B, case.views - 1, A, generator=g, dtype=torch.float64)
    loss = ours.training_step(Batch(views, actions, torch.zeros(B, dtype=torch.long))).loss
    ref = case.loss(theirs, views, actions)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)

    loss.backward()
    ref.backward()
    grads = [(n, p.grad) for n, p in ours.encoder_module().named_parameters()]
    ref_grads = [p.grad for p in theirs.encoder.parameters()]
    assert len(grads) == len(ref_grads) and all(g is not None for _, g in grads)
    assert any(g.abs().sum() > 0 for _, g in grads)
    for (n, g_ours), g_ref in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g_ours, g_ref, rtol=1e-7, atol=1e-12), f"{name}: encoder gradient {n} differs"


def test_layer_lists_see_what_the_mutations_change() -> None:
    """The comparison is sensitive to the details the parity tests exist for (a BN's affine flag, a bias, a
    width, one layer more), and to attention dropout, which lives in a float attribute."""
    base = layer_list(U.SimCLR(CLASSES, 0.5, False).projector)
    affine = layer_list(SimCLR(SimCLRConfig(proj_dim=128), SPEC).projector)
    assert affine != base
    enc = nn.TransformerEncoderLayer(16, 4, 64, batch_first=True)
    before = layer_list(enc)
    enc.self_attn.dropout = 0.0
    assert layer_list(enc) != before


# ---------------------------------------------------------------- SIE's official code (not MIT): transcribed

def bn(n: int) -> tuple:
    return ("BatchNorm1d", n, True, 1e-05, 0.1, True)


# facebookresearch/SIE@54541cf, README.md 31: --arch resnet18 --equi 256 --mlp 2048-2048-2048 --hypernetwork linear
# (defaults main.py 41-48: --predictor "", no --predictor-relu, no --bias-pred, no --bias-hypernet).
# src/models.py 305-316: inv 256 / equi 256 of 512, each expander "2048-2048-2048" x 0.5 = 1024-1024-1024, built by
# Projector (src/models.py 1661-1672): Linear(+bias)-BN-ReLU per hidden layer, last Linear(bias=False).
SIE_OFFICIAL_PROJECTOR = [("Linear", 256, 1024, True), bn(1024), ("ReLU",), ("Linear", 1024, 1024, True), bn(1024),
                          ("ReLU",), ("Linear", 1024, 1024, False)]
# src/models.py 318-319 ParametrizedNet(1024, 4): src/hypernetwork.py 38-55, architecture "1024-1024" -> one
# 1024 x 1024 weight = 1048576 hypernetwork outputs; HyperNet "linear" (hypernetwork.py 17-20): one Linear(4 ->
# 1048576, bias=False); no bias in the predicted layer (hypernetwork.py 48-52), identity activation (56).
SIE_OFFICIAL_PREDICTOR = [("Linear", 4, 1024 * 1024, False)]


def test_sie_matches_the_official_layer_lists() -> None:
    torch.manual_seed(0)
    m = SIE(SIEConfig(), SPEC)
    assert (m.inv_dim, m.equi_dim) == (256, 256)
    assert layer_list(m.projector_inv) == SIE_OFFICIAL_PROJECTOR
    assert layer_list(m.projector_equi) == SIE_OFFICIAL_PROJECTOR
    assert layer_list(m.predictor) == SIE_OFFICIAL_PREDICTOR
    # --equi 128 (an ablation of the paper): the expanders split 2048 as 384 : 128 of 512 (np.round, 306-315).
    m = SIE(SIEConfig(equi_dim=128), SPEC)
    assert [d[2] for d in layer_list(m.projector_inv) if d[0] == "Linear"] == [1536] * 3
    assert [d[2] for d in layer_list(m.projector_equi) if d[0] == "Linear"] == [512] * 3
    assert layer_list(m.predictor) == [("Linear", 4, 512 * 512, False)]
