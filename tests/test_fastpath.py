"""Fast paths change speed, not the computation: bf16/fp32, NHWC/NCHW, fused/foreach, compiled/eager."""

from __future__ import annotations

import copy
import platform

import pytest
import torch

from benchmark.core import fastpath
from benchmark.core.fastpath import FastPaths, all_on
from benchmark.core.registry import METHODS, build_method
from benchmark.core.resolve import resolve
from benchmark.core.train import build_optimizer
from benchmark.tools.speed import fake_batch

CPU = torch.device("cpu")


def setup(method: str = "seqjepa", size: int = 16, batch: int = 4, **train):
    cfg = resolve({"method": method, "data": {"image_size": size}, "train": {"batch_size": batch, **train}})
    torch.manual_seed(0)
    m, spec = build_method(cfg)
    views = m.views_needed(cfg.data.seq_len)
    return cfg, m, fake_batch(batch, views, size, spec.action_dim, spec.num_classes, CPU)


def losses(fast: FastPaths, cfg, base, batch, steps: int = 3) -> list[float]:
    """The training loop's step (benchmark/core/train.py) with ``fast`` applied, from the same weights and RNG."""
    torch.manual_seed(1)
    m = fast.module(copy.deepcopy(base).train())
    opt = fast.optimizer(build_optimizer(m, cfg)[0])
    step = fast.compile_step(m.training_step)
    b, out = fast.prepare(batch), []
    for s in range(steps):
        with fast.autocast(CPU):
            loss = step(b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        m.on_step_end(s + 1, 100)
        out.append(float(loss.detach()))
    return out


def test_config_gates_gpu_only_paths_and_records_them():
    cfg = resolve({"train": {"compile": True}})
    assert FastPaths.from_config(cfg, CPU) == FastPaths(compile=True)
    assert FastPaths.from_config(cfg, torch.device("cuda")) == FastPaths(True, True, True, True)
    off = resolve({"train": {"channels_last": False, "fused_optimizer": False, "amp": False}})
    assert FastPaths.from_config(off, torch.device("cuda")) == FastPaths()
    rec = fastpath.provenance(resolve({"data": {"decoded_cache": True}}), torch.device("cuda"))
    assert rec == {"fast_channels_last": True, "fast_fused_optimizer": True, "fast_compile": False,
                   "fast_compile_backend": None, "decoded_cache": True}
    assert all_on(CPU).short() == "bf16+cl+fused" and FastPaths().short() == "none"


def test_channels_last_views_hold_the_same_values_in_nhwc():
    _, m, batch = setup(batch=2)
    fast = FastPaths(channels_last=True)
    b = fast.prepare(batch)
    assert torch.equal(b.views, batch.views) and b.actions is batch.actions
    assert b.views.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    fast.module(m)
    assert m.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def fp32():
    """seqjepa, 3 steps of fp32 NCHW training with a large step, so the loss moves far."""
    cfg, base, batch = setup(lr=1e-2)
    ref = losses(FastPaths(), cfg, base, batch)
    assert ref[-1] < 0.8 * ref[0]
    return cfg, base, batch, ref


def test_channels_last_matches_contiguous_over_steps(fp32):
    cfg, base, batch, ref = fp32
    assert losses(FastPaths(channels_last=True), cfg, base, batch) == pytest.approx(ref, rel=1e-3)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_channels_last(name):
    """No method reshapes views in a way NHWC storage breaks (``.view`` across C, H, W); forward only."""
    _, base, batch = setup(name, batch=2)
    fast, out = FastPaths(channels_last=True), []
    for m, b in ((base.train(), batch), (fast.module(copy.deepcopy(base)), fast.prepare(batch))):
        torch.manual_seed(1)
        with torch.no_grad():
            out.append(float(m.training_step(b).loss))
    # rel 1e-2: two samples per BatchNorm at 16 px amplify rounding-order differences
    assert out[1] == pytest.approx(out[0], rel=1e-2)


def test_fused_optimizer_matches_default_and_takes_over_a_checkpoint(fp32):
    cfg, base, batch, ref = fp32
    assert losses(FastPaths(fused_optimizer=True), cfg, base, batch) == pytest.approx(ref, rel=1e-4)
    # A run resumed with another choice: the config wins over the flags saved in the checkpoint.
    m = copy.deepcopy(base).train()
    opt = build_optimizer(m, cfg)[0]
    m.training_step(batch).loss.backward()
    opt.step()
    resumed = build_optimizer(m, cfg)[0]
    resumed.load_state_dict(opt.state_dict())
    FastPaths(fused_optimizer=True).optimizer(resumed)
    assert all(g["fused"] is True for g in resumed.param_groups)
    resumed.step()  # the fused kernel accepts the loaded state
    FastPaths().optimizer(resumed)
    assert all(g["fused"] is None for g in resumed.param_groups)
    resumed.step()


def test_bf16_fast_paths_stay_within_bf16_tolerance_of_fp32(fp32):
    cfg, base, batch, ref = fp32
    fast = losses(all_on(CPU), cfg, base, batch)  # bf16 autocast + channels_last + fused, on CPU
    # bf16 keeps 8 significant bits (relative rounding 2**-8 = 0.4 %); a few roundings accumulate
    # through the ResNet, and the loss itself is reported in bf16.
    assert fast == pytest.approx(ref, rel=3e-2)


def test_compiled_step_matches_eager():
    why = fastpath.compile_unavailable()
    if why:
        pytest.skip(f"torch.compile cannot run here: {why}")
    # backend "eager": dynamo captures the step as torch.compile does, without inductor's C++/Triton
    # code generation (about a minute on a busy CPU); on GPU the default backend is "inductor".
    cfg, base, batch = setup(batch=2)
    ref = losses(FastPaths(), cfg, base, batch, steps=1)
    assert losses(FastPaths(compile=True, compile_backend="eager"), cfg, base, batch, steps=1) == pytest.approx(
        ref, rel=1e-6)


@pytest.mark.skipif(not platform.libc_ver()[0] == "glibc", reason="mallopt tuning is glibc-only")
def test_keep_host_memory_applies_on_glibc_and_training_still_matches():
    """The allocator switch is accepted by glibc, and a step after it computes the same loss."""
    cfg = resolve({"method": "seqjepa", "dataset": "3diebench-mini", "data": {"image_size": 32}})
    torch.manual_seed(0)
    method, spec = build_method(cfg)
    batch = fake_batch(4, 4, 32, spec.action_dim, spec.num_classes, torch.device("cpu"))
    method.train()
    torch.manual_seed(1)  # the same dropout masks for both steps
    before = float(method.training_step(batch).loss)
    assert fastpath.keep_host_memory() is True
    torch.manual_seed(1)
    assert float(method.training_step(batch).loss) == pytest.approx(before, abs=1e-6)
