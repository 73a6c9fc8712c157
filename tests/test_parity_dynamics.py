"""Training dynamics against the authors' own training code: optimiser, schedule and EMA over several steps.

tests/test_parity_upstream.py compares each method with the authors' class at fixed weights (layers, loss,
encoder gradient). This file checks what happens between steps, for seq-JEPA, BYOL, Cond-BYOL, SIE and VICReg as
seq-JEPA's ``main_transformed_views.py`` trains them (the code behind seq-JEPA's Table 1; baselines/PROVENANCE.md):

1. builds ours and theirs - theirs with the released script's flags through the authors' own ``build_model``
   (``tests/fixtures/upstream/seqjepa/main_transformed_views.py``) - and copies our (randomised) weights into
   theirs with the explicit name maps of tests/test_parity_upstream.py;
2. trains K = 3 steps on the same float64 batches, one batch per epoch so that the authors' per-epoch
   schedules have a value at every step (warm-up start, warm-up middle, after the warm-up):
   ours: ``build_optimizer`` on a RunConfig (``upstream-code`` preset), then per step the schedule, the
   training step, backward, optimiser step and ``on_step_end`` (EMA), as ``benchmark.core.train.train`` does them
   (``harness_steps``; that it is the loop is checked against ``train()`` itself below);
   theirs: their Adam (main.py 237), CosineAnnealingLR (260), the epoch loop's warm-up (298-321) and
   ``engine.train_one_epoch_3diebench`` (step, EMA update and EMA schedule, online probes included);
3. after every step compares every parameter, every EMA-target parameter and every online BatchNorm buffer
   (TOLERANCE below says how tight, and why).

Documented differences (baselines/PROVENANCE.md, shared section) are made explicit, not tolerated:
- EMA: upstream updates with its current ``ema_decay`` and then sets the epoch's cosine value; we apply the
  per-step cosine. Upstream's ``ema_decay`` is set to our step's tau before its step (so the update rule and
  everything else is upstream's), and ``test_upstream_ema_schedule_is_ours_per_epoch`` asserts how the two
  schedules relate.
- EMA targets' BatchNorm statistics: ours are copied from the online network, upstream's are the target's own
  running averages (targets run in train mode, so training does not read them); asserted as such.
- The learning rate: upstream sets it per epoch, we per step; with one step per epoch both give the same
  values, asserted at every step (upstream's optimiser lr when its epoch reads the batch).
Dropout (seq-JEPA's aggregator) stays on: both sides draw their masks after the same seed.

SIE's official code (facebookresearch/SIE, GPL-3.0, not vendored) trains with ``Adam(model.parameters(),
lr, weight_decay)``; ``test_sie_official_optimiser`` compares that (transcribed) with our optimiser. The
initialisation tests check PROVENANCE.md's claims: same encoder (zero-initialised residual BatchNorms), PyTorch's
default initialisation everywhere else, EMA targets starting as copies.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from scipy.stats import ks_2samp
from torch import Tensor, nn

from baselines.byol import BYOL, BYOLConfig
from baselines.sie import SIE, SIEConfig
from benchmark.config import DataConfig, RunConfig, TrainConfig
from benchmark.core.train import build_optimizer, train
from benchmark.data.base import SequenceDataset
from methods.components import ema_tau, warmup_cosine
from methods.contract import Batch, DataSpec, Method
from tests.fixtures.upstream.seqjepa import main_transformed_views as upstream_main
from tests.fixtures.upstream.seqjepa import models as U
from tests.test_parity_upstream import CASES, CLASSES, A, check_and_copy, randomise, tensors

# Tiny: batch 4 (8 for the variance/covariance losses, see TOLERANCE), 16 px (layer3 and layer4 of the
# ImageNet-stem ResNet-18 see 1 x 1), M = 2 observations, K = 3 steps: warm-up start, middle, and after it.
B, SIZE, K, WARMUP, SEQ_LEN = 4, 16, 3, 2, 2
BATCH = {"sie": 8, "vicreg": 8}
EMA_BASE = 0.996
pytestmark = [pytest.mark.filterwarnings("ignore:The parameter .pretrained. is deprecated"),
              pytest.mark.filterwarnings("ignore:Arguments other than a weight enum"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

# hafezgh/seq-jepa scripts/script_transformed_views.sh (the released command), with the sizes of this test:
# 16 px, M = 2, K epochs of one batch, a 2-epoch warm-up; --method per case (--batch-size only sizes loaders).
RELEASED_FLAGS = ["--backbone", "resnet18", "--dataset", "3diebench", "--latent-type", "rot", "--seed", "42",
                  "--num-heads", "4", "--num-enc-layers", "3", "--act-cond", "1", "--learn-act-emb", "1", "--ema",
                  "--ema-decay", str(EMA_BASE), "--pred-hidden", "1024", "--seq-len", str(SEQ_LEN),
                  "--act-projdim", "128", "--lr", "0.0004", "--initial-lr", "1e-5", "--scheduler",
                  "--weight-decay", "0.001", "--optimizer", "AdamW",
                  "--img-size", str(SIZE), "--batch-size", str(B), "--epochs", str(K), "--warmup", str(WARMUP)]
UPSTREAM_METHOD = {"seqjepa": "seqjepa", "byol": "byol", "cond-byol": "byol-cond", "sie": "sie", "vicreg": "vicreg",
                   "simclr": "simclr", "equimod": "simclr-equimod", "sen": "sen", "vicreg-traj": "vicreg-traj"}
# EMA targets of ours and the online modules they follow (methods.components.make_target / ema_update).
EMA = {"seqjepa": lambda o: [(o.target_encoder, o.encoder)],
       "byol": lambda o: [(o.target_backbone, o.backbone), (o.target_projector, o.projector)],
       "cond-byol": lambda o: [(o.target_backbone, o.backbone), (o.target_projector, o.projector)]}
# Tolerance of the step-by-step comparison: per tensor, max |ours - theirs| <= ATOL + rtol * max |theirs| (float64
# on both sides). Rounding differences grow over the steps because Adam divides them by sqrt(v) + eps: gradients
# that are zero in exact arithmetic (a Linear bias in front of a BatchNorm) or tiny become O(lr) steps of rounding
# noise. The variance/covariance losses (SIE, VICReg; ill-conditioned on few samples) show it most: OUR model
# against itself on the same batches in another sample order (pure rounding) differs by up to 2.3e-9 (SIE, batch 8)
# and 5.9e-8 (SIE, batch 4) after 3 steps. Measured ours vs upstream (steps 1 / 2 / 3, the printed line):
# seq-JEPA 1.4e-16 / 3.6e-12 / 8.8e-12, BYOL 1.6e-16 / 1.4e-12 / 9.7e-12, Cond-BYOL 1.6e-16 / 1.4e-12 / 1.1e-11,
# SIE 5.4e-11 / 1.1e-9 / 2.0e-9, VICReg 3.7e-13 / 2.7e-11 / 6.1e-11. Errors of the schedule or of the update are
# orders of magnitude above (seq-JEPA's action-embedding BatchNorm statistics updated in the other order: 0.3
# after one step).
TOLERANCE = {"sie": 1e-7, "vicreg": 1e-8}  # default 1e-9
ATOL = 1e-12


def run_config(**train: object) -> RunConfig:
    """The harness's config for these runs: seq-JEPA code's optimiser (``upstream-code``) and warm-up."""
    tc = dict(epochs=K, batch_size=B, optimizer_preset="upstream-code", warmup_epochs=WARMUP, init_lr=1e-5,
              progress=False, log_every=1, checkpoint_every=10**6)
    return RunConfig(data=DataConfig(seq_len=SEQ_LEN, num_workers=0), train=TrainConfig(**{**tc, **train}))


def harness_steps(method: Method, cfg: RunConfig, batches: list[Batch], steps_per_epoch: int,
                  before_step: Callable[[int], None] = lambda step: None) -> Iterator[tuple[int, float]]:
    """Our training steps as ``benchmark.core.train.train`` runs them (its ``total``, ``warmup``, lr, step order and
    ``on_step_end`` call, line for line; ``test_harness_steps_are_the_training_loop`` holds them to ``train``);
    yields (step, lr) after each EMA update."""
    tc = cfg.train
    total = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total = min(total, tc.max_steps)
    warmup = min(total, tc.warmup_epochs * steps_per_epoch)
    opt, preset = build_optimizer(method, cfg)
    method.train()
    for step, batch in enumerate(batches):
        lr = warmup_cosine(step, total, warmup, preset["lr"], tc.init_lr,
                           tc.final_lr if preset["cosine"] else preset["lr"])
        for g in opt.param_groups:
            g["lr"] = lr
        before_step(step)
        out = method.training_step(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        method.on_step_end(step + 1, total)
        yield step + 1, lr


def make_batches(views: int, n: int, seed: int, b: int = B) -> list[Batch]:
    """``n`` float64 batches of ``b`` samples: views, absolute latents and their differences as actions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lat = torch.randn(b, views, A, generator=g, dtype=torch.float64)
        out.append(Batch(torch.randn(b, views, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
                         lat[:, 1:] - lat[:, :-1], torch.randint(0, CLASSES, (b,), generator=g), lat))
    return out


@contextlib.contextmanager
def default_float64() -> Iterator[None]:
    """Modules built inside are float64 (upstream's online probes are created by its own code)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def upstream(name: str, ours: Method) -> tuple:
    """The authors' model from the released flags, holding our weights, with their optimiser and scheduler."""
    args = upstream_main.parse_option([*RELEASED_FLAGS, "--method", UPSTREAM_METHOD[name]])
    with default_float64():
        torch.manual_seed(1)
        if name == "byol":  # the released build_model cannot build BYOL (test_released_script_cannot_build_byol)
            theirs = U.BYOL(CLASSES, args.cifar_resnet, ema_decay=args.ema_decay, num_heads=args.num_heads,
                            num_enc_layers=args.num_enc_layers)
            emb_dim = theirs.res_out_dim  # main_transformed_views.py 222
        else:
            theirs, emb_dim = upstream_main.build_model(args, CLASSES, A)
        check_and_copy(CASES[name].pairs(ours, theirs), ours, theirs)  # same layers; our weights into theirs
        theirs, opt = upstream_main.add_online_probes_and_optimizer(args, theirs, emb_dim, CLASSES, A, "cpu")
        sched = upstream_main.make_scheduler(args, opt)
    return args, theirs, opt, sched


def named(module: nn.Module | nn.Parameter, params_only: bool) -> list[tuple[str, Tensor]]:
    if isinstance(module, nn.Parameter):
        return [("", module)]
    return list(module.named_parameters() if params_only else module.state_dict(keep_vars=True).items())


def in_target(module: object, ema: list[tuple[nn.Module, nn.Module]]) -> bool:
    return any(m is module for t, _ in ema for m in t.modules())


def mismatches(ours: nn.Module, pairs: list[tuple], ema: list[tuple[nn.Module, nn.Module]],
               rtol: float) -> tuple[list[str], float]:
    """Every tensor of the paired modules (EMA targets: their parameters; their BatchNorm statistics differ by
    design) against upstream's; returns (failures, worst max |diff| / max |theirs|)."""
    where = {id(m): n for n, m in ours.named_modules()} | {id(p): n for n, p in ours.named_parameters()}
    bad, worst = [], 0.0
    for a, b in pairs:
        is_target = in_target(a, ema)
        ta, tb = named(a, is_target), named(b, is_target)
        assert len(ta) == len(tb) and ta
        for (n, x), (_, y) in zip(ta, tb, strict=True):
            x, y, name = x.detach(), y.detach(), ".".join(filter(None, (where[id(a)], n)))
            if not x.is_floating_point():  # num_batches_tracked
                if not torch.equal(x, y):
                    bad.append(f"{name}: {x.tolist()} vs {y.tolist()}")
                continue
            diff, scale = (x - y).abs().max().item(), y.abs().max().item()
            rel = diff / max(scale, ATOL / rtol)
            worst = max(worst, rel)
            if diff > ATOL + rtol * scale:
                bad.append(f"{name} {tuple(x.shape)}: max |diff| {diff:.3g}, {rel:.3g} of max |upstream| {scale:.3g}")
    return bad, worst


class LrRecorder(list):
    """A one-batch train loader that records the lr the optimiser holds when the epoch starts reading it
    (after upstream's warm-up code, before its step; the scheduler steps after the epoch)."""

    def __init__(self, opt: torch.optim.Optimizer, items: list) -> None:
        super().__init__(items)
        self.opt, self.lrs = opt, []

    def __iter__(self):
        self.lrs.append(self.opt.param_groups[0]["lr"])
        return super().__iter__()


# The EMA methods, SIE and VICReg; SimCLR, EquiMod, SEN and VICReg-Traj take the same optimiser path as VICReg
# and SIE (no EMA), and their loss and gradient are compared at fixed weights in tests/test_parity_upstream.py.
DYNAMICS = ["seqjepa", "byol", "cond-byol", "sie", "vicreg"]


@pytest.mark.parametrize("name", DYNAMICS)
def test_steps_match_the_authors_training_code(name: str) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    ours = case.ours().double()
    randomise(ours, seed=2)  # no zero-initialised layer hides a gradient; EMA targets differ from online
    args, theirs, opt, sched = upstream(name, ours)
    pairs = case.pairs(ours, theirs)
    ema = EMA.get(name, lambda o: [])(ours)
    rtol = TOLERANCE.get(name, 1e-9)
    assert mismatches(ours, pairs, ema, rtol)[0] == []

    batches = make_batches(ours.views_needed(SEQ_LEN), K, seed=3, b=BATCH.get(name, B))
    seed_step = lambda step: torch.manual_seed(100 + step)  # noqa: E731 - dropout masks: same seed both sides
    before = {n: (p.sum().item(), p.norm().item()) for n, p in ours.named_parameters()}
    for (step, lr), batch in zip(harness_steps(ours, run_config(), batches, 1, seed_step), batches, strict=True):
        epoch = step - 1  # one batch per epoch
        # engine.py: model(batch[:, :-1], batch[:, -1], act_latents[:, :-1], act_latents[:, -1], rel_latents=...)
        # for seq-JEPA, model(batch[:, 0], batch[:, 1], rel_latents[:, 0]) for the others.
        items = [(batch.views, batch.latents, batch.actions, batch.labels)]
        loader = LrRecorder(opt, items)
        tau = ema_tau(step, K, EMA_BASE)
        theirs.ema_decay = tau  # our per-step tau (see the module docstring); upstream's update reads it
        seed_step(epoch)
        val = [tuple(x[:2] for x in items[0])]  # its online-probe evaluation pass: two samples suffice
        upstream_main.train_epoch(args, theirs, opt, loader, val, "cpu", epoch, K, sched)
        assert loader.lrs == [pytest.approx(lr, rel=1e-12)], f"{name}, step {step}: upstream trained with another lr"
        bad, worst = mismatches(ours, pairs, ema, rtol)
        print(f"{name}, step {step}: lr {lr:.6g}, tau {tau:.6g}, worst rel. diff {worst:.3g}")
        assert not bad, f"{name}, after step {step}: {len(bad)} tensors differ from upstream:\n" + "\n".join(bad[:12])
        for target, online in ema:  # documented: our targets' BN statistics are the online network's
            for bt, bo in zip(target.buffers(), online.buffers(), strict=True):
                assert torch.equal(bt, bo)
    # Upstream's are the targets' own running averages, so the runs above did differ there ...
    for a, b in pairs:
        if in_target(a, ema):
            assert any(not torch.equal(x, y) for (n, x), y in zip(a.state_dict().items(), b.state_dict().values(),
                                                                   strict=True) if n.endswith("running_mean"))
    # ... and the steps moved every parameter (else the comparison would be vacuous), the targets included.
    still = [n for n, p in ours.named_parameters() if (p.sum().item(), p.norm().item()) == before[n]]
    assert not still, f"{name}: parameters that never moved: {still[:5]}"


def test_released_script_cannot_build_byol() -> None:
    """Upstream bug, kept out of our harness: main_transformed_views.py 221 calls
    ``models.BYOL(num_classes, args.cifar_resnet, **kwargs)`` and ``kwargs`` (192-195) holds ``cifar_resnet``
    too, so ``--method byol`` stops with a TypeError at this commit. The BYOL dynamics above build the model
    with the same values minus the duplicate (as the BYOL rows of seq-JEPA's Table 1 must have been run)."""
    args = upstream_main.parse_option([*RELEASED_FLAGS, "--method", "byol"])
    with pytest.raises(TypeError, match="multiple values for argument 'cifar_resnet'"):
        upstream_main.build_model(args, CLASSES, A)


def test_upstream_ema_schedule_is_ours_per_epoch() -> None:
    """The documented relation: upstream's first update uses the base tau, as ours; after every update of
    epoch e it sets tau = 1 - (1 - base)(cos(pi e / E) + 1) / 2 (engine.py 219-221), which is our per-step
    schedule over E + 1 steps at step e + 1. So with one step per epoch, upstream's step k (k >= 2) uses our
    value of step k - 1 of a run one step longer: the same cosine, one step late."""
    args = upstream_main.parse_option([*RELEASED_FLAGS, "--method", "byol-cond"])
    theirs, _ = upstream_main.build_model(args, CLASSES, A)
    assert theirs.ema_decay == EMA_BASE == ema_tau(1, K, EMA_BASE)
    theirs.encoder = theirs.target_encoder = nn.Identity()  # no weights needed to read the schedule
    theirs.projector = theirs.target_projector = nn.Identity()
    used = []
    for epoch in range(K):
        used.append(theirs.ema_decay)
        theirs.update_moving_average()
        # engine.py lines 219-221, the statement after the update
        theirs.ema_decay = 1 - (1 - args.ema_decay) * ((math.cos(math.pi * epoch / args.epochs) + 1) / 2)
        assert theirs.ema_decay == pytest.approx(ema_tau(epoch + 1, K + 1, EMA_BASE), rel=0, abs=1e-15)
    ours = [ema_tau(k, K, EMA_BASE) for k in range(1, K + 1)]
    assert used[:2] == [EMA_BASE, EMA_BASE] and ours[0] == EMA_BASE and ours[-1] == 1.0 and used[-1] < 1.0


class FixedBatches(SequenceDataset):
    """The batches of ``make_batches`` as a dataset: epoch e is batch e (one batch per epoch)."""

    num_classes, action_dim = CLASSES, A

    def __init__(self, batches: list[Batch]) -> None:
        super().__init__(batches[0].views.shape[1], seed=0, fixed=False)
        self.batches = batches

    def num_items(self) -> int:
        return B

    def item(self, index: int, rng: np.random.Generator) -> dict:
        b = self.batches[self.epoch]
        return {"views": b.views[index], "actions": b.actions[index], "label": int(b.labels[index]),
                "targets": {}, "abs_latents": b.latents[index]}

    def labels_of(self) -> np.ndarray:
        return np.zeros(B, dtype=np.int64)


def test_harness_steps_are_the_training_loop(tmp_path: Path) -> None:
    """``harness_steps`` (used above) against ``benchmark.core.train.train`` itself, per step: the same parameters
    and EMA targets, bit for bit, and the lr ``train`` logs is the one ``harness_steps`` (and upstream) used."""
    spec = DataSpec(image_size=SIZE, action_dim=A, num_classes=CLASSES)
    cfg_model = BYOLConfig(proj_hidden=64, proj_dim=16, pred_hidden=64, backbone="resnet18-w16")
    torch.manual_seed(0)
    a = BYOL(cfg_model, spec).double()
    randomise(a, seed=2)
    b = BYOL(cfg_model, spec).double()
    b.load_state_dict(a.state_dict())
    batches = make_batches(2, K, seed=3)
    seen: list[dict[str, Tensor]] = []
    end = a.on_step_end

    def record(step: int, total: int) -> None:
        end(step, total)
        seen.append({n: t.detach().clone() for n, t in a.state_dict().items()})

    a.on_step_end = record  # type: ignore[method-assign]
    ds = FixedBatches(batches)
    # The sampler permutes each epoch's B samples; the batch it draws is what harness_steps must see.
    drawn: list[Batch] = []
    step_fn = a.training_step

    def keep(batch: Batch) -> object:
        drawn.append(batch)
        return step_fn(batch)

    a.training_step = keep  # type: ignore[method-assign]
    summary = train(run_config(), a, ds, tmp_path, torch.device("cpu"))
    assert summary.steps == K and not summary.diverged
    logged = [line["lr"] for line in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())]
    assert len(drawn) == K and all(d.views.dtype == torch.float64 for d in drawn)
    for (step, lr), state in zip(harness_steps(b, run_config(), drawn, 1), seen, strict=True):
        assert lr == logged[step - 1]
        for n, t in b.state_dict().items():
            assert torch.equal(t, state[n]), f"step {step}: {n} differs from train()"
    # main_transformed_views.py 302-303 and 308 with --lr 4e-4 --initial-lr 1e-5, one step per epoch
    assert logged == pytest.approx([1e-5 + (4e-4 - 1e-5) * min(e / WARMUP, 1.0) for e in range(K)], rel=1e-12)


# ---------------------------------------------------------------- SIE's official optimiser (GPL-3.0: transcribed)

def official_sie_optimizer(model: nn.Module, base_lr: float, wd: float) -> torch.optim.Optimizer:
    # facebookresearch/SIE@54541cf main.py 176-180: torch.optim.Adam(model.parameters(), lr=args.base_lr,
    # weight_decay=args.wd); README.md 31 --base-lr 1e-3, main.py 59 --wd default 1e-6; constant lr (no schedule).
    return torch.optim.Adam(model.parameters(), lr=base_lr, weight_decay=wd)


def test_sie_official_optimiser() -> None:
    """Official SIE: Adam(lr 1e-3, weight_decay 1e-6) on every parameter, constant lr. Our harness with
    ``train.optimizer_preset=upstream-code train.lr=1e-3 train.weight_decay=1e-6 train.warmup_epochs=0`` builds
    the same Adam but leaves biases and norm parameters undecayed (``methods.contract.split_decay_groups``).
    Given the same gradients for 3 steps, the weights (ndim >= 2) follow official SIE's update and the 1-D
    parameters official SIE's update without decay (the documented difference), and that difference is real."""
    def sie() -> SIE:
        torch.manual_seed(0)
        m = SIE(SIEConfig(expander=(64, 64), backbone="resnet18-w16"), DataSpec(SIZE, A, CLASSES)).double()
        randomise(m, seed=2)
        return m

    ours, official, nodecay = sie(), sie(), sie()
    opt, _ = build_optimizer(ours, run_config(lr=1e-3, weight_decay=1e-6, warmup_epochs=0))
    lrs = [warmup_cosine(s, K, 0, 1e-3, 1e-5, 1e-3) for s in range(K)]
    assert type(opt) is torch.optim.Adam and lrs == [1e-3] * K  # Adam, constant lr, as official
    refs = [official_sie_optimizer(official, 1e-3, 1e-6), official_sie_optimizer(nodecay, 1e-3, 0.0)]
    for batch in make_batches(2, K, seed=3):
        opt.zero_grad()
        ours.training_step(batch).loss.backward()
        opt.step()
        for ref, model in zip(refs, (official, nodecay), strict=True):
            for p, q in zip(ours.parameters(), model.parameters(), strict=True):
                q.grad = None if p.grad is None else p.grad.clone()
            ref.step()
    one_d = []
    for (n, p), q, r in zip(ours.named_parameters(), official.parameters(), nodecay.parameters(), strict=True):
        if p.ndim >= 2:
            assert torch.equal(p, q), n
        else:
            assert torch.equal(p, r), n
            one_d.append((p - q).abs().max().item() / q.abs().max().item())
    assert one_d and max(one_d) > 1e-9  # the decay of official SIE's biases and norm parameters is visible


# ---------------------------------------------------------------- initialisation

def distribution_mismatches(ours: nn.Module, theirs: nn.Module) -> list[str]:
    """Tensor by tensor: constants (BN scales/shifts, zero-initialised residual BNs and tokens, running
    statistics) must be equal; random tensors must look drawn from the same distribution (two-sample
    Kolmogorov-Smirnov, p > 1e-6) and have the same bound."""
    bad = []
    for (n, x), y in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        x, y = x.double().flatten(), y.double().flatten()
        if y.numel() < 2 or bool((y == y[0]).all()):
            if not torch.equal(x, y):
                bad.append(f"{n}: {x[:3].tolist()} vs constant {y[0].item()}")
            continue
        g = torch.Generator().manual_seed(0)  # at most 20000 entries each: enough power, and fast
        xs, ys = (v[torch.randperm(v.numel(), generator=g)[:20000]] for v in (x, y))
        p = ks_2samp(xs.numpy(), ys.numpy()).pvalue
        if p < 1e-6 or not 0.8 < x.abs().max() / y.abs().max() < 1.25:
            bad.append(f"{n}: KS p {p:.2g}, max {x.abs().max():.3g} vs {y.abs().max():.3g}")
    return bad


@pytest.mark.parametrize("name", DYNAMICS)
def test_initialisation_matches_upstream(name: str) -> None:
    """As PROVENANCE.md claims: the encoder is torchvision's ResNet-18 with zero_init_residual, built first by
    both sides, so the same seed gives the same encoder bit for bit; every other layer has PyTorch's default
    initialisation, as upstream (same constants, same distributions), EMA targets start as copies."""
    case = CASES[name]
    torch.manual_seed(0)
    ours = case.ours()
    torch.manual_seed(0)
    theirs = case.theirs()
    pairs = case.pairs(ours, theirs)
    enc, encoders = ours.encoder_module(), False
    for a, b in pairs:
        if a is enc:
            assert all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b), strict=True)), "encoder init"
            encoders = True
        else:
            bad = distribution_mismatches(a, b) if isinstance(a, nn.Module) else \
                ([] if torch.equal(a, b) else ["parameter"])
            assert not bad, f"{name}: {bad}"
    assert encoders
    for target, online in EMA.get(name, lambda o: [])(ours):
        assert all(torch.equal(x, y) for x, y in zip(tensors(target), tensors(online), strict=True))


def test_initialisation_check_sees_a_wrong_init() -> None:
    """The distribution check fails on a head drawn N(0, 0.02) (a common ViT/GPT choice) and on a ResNet
    without the zero-initialised residual BatchNorms."""
    torch.manual_seed(0)
    a, b = nn.Linear(512, 256), nn.Linear(512, 256)
    assert not distribution_mismatches(a, b)
    nn.init.normal_(a.weight, std=0.02)
    assert distribution_mismatches(a, b)
    plain = torchvision.models.resnet18(weights=None)
    zero = torchvision.models.resnet18(weights=None, zero_init_residual=True)
    assert any("bn2.weight" in m for m in distribution_mismatches(plain, zero))
