"""GPU fast paths of the training step: switchable from the config, recorded in every result.

The ceiling of a method step is its backbone's own forward + backward on the same views
(``python -m benchmark.speed``); these switches close the gap without changing the computation
beyond floating-point rounding:

* ``train.amp``: bf16 autocast (applied by the training loop; listed here for the record).
* ``train.channels_last``: NHWC weights and views. cuDNN's tensor-core convolutions work in NHWC;
  with NCHW tensors every convolution pays two transposes.
* ``train.fused_optimizer``: one fused kernel for the whole Adam/AdamW update instead of torch's
  default multi-tensor ("foreach") loop.
* ``train.compile``: ``torch.compile`` of the training step (kernel fusion of the heads, the
  sequence transformer and the losses; minutes of compilation at start-up, so off by default).

Like ``amp``, channels_last and the fused optimiser apply on CUDA only: on CPU they are off, which
keeps the CPU presets as fast and as simple as before. :class:`FastPaths` holds the resolved switches;
tests and ``benchmark.tools.speed --fast all`` construct it directly to force them on any device.
"""

from __future__ import annotations

import ctypes
import importlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

import torch
from torch import nn

from benchmark.config import RunConfig
from methods.contract import Batch

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class FastPaths:
    """Which fast paths are on for one run (already resolved against the device)."""

    amp: bool = False  # bf16 autocast around the step
    channels_last: bool = False  # NHWC weights and views
    fused_optimizer: bool = False  # fused Adam/AdamW/SGD kernel (else torch's default: foreach on GPU)
    compile: bool = False  # torch.compile of the training step
    compile_backend: str = "inductor"  # tests use "eager"/"aot_eager": tracing without C++/Triton codegen

    @classmethod
    def from_config(cls, cfg: RunConfig, device: torch.device) -> FastPaths:
        """The config's switches; the GPU-only ones (amp, channels_last, fused) are off on CPU."""
        tc, cuda = cfg.train, device.type == "cuda"
        return cls(amp=tc.amp and cuda, channels_last=tc.channels_last and cuda,
                   fused_optimizer=tc.fused_optimizer and cuda, compile=tc.compile)

    def autocast(self, device: torch.device) -> AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp)

    def module(self, module: nn.Module) -> nn.Module:
        """Convert conv weights (4-D parameters) to NHWC in place; other parameters are unaffected."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def prepare(self, batch: Batch) -> Batch:
        """Views (B, V, C, H, W) stored as (B, V, H, W, C), so ``views.flatten(0, 1)`` is NHWC 4-D."""
        if not self.channels_last:
            return batch
        views = batch.views.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        return replace(batch, views=views)  # keeps every other field (actions, latents)

    def optimizer(self, opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Set the kernel choice on every param group; call it after ``load_state_dict`` too.

        A checkpoint's param groups carry the flags of the run that wrote them; re-applying them here
        makes the config (as recorded in the result) the one that holds. ``step`` counters are moved
        where torch keeps them for that choice (fused: on the parameter's device; else on the CPU).
        """
        for group in opt.param_groups:
            if "fused" not in group:  # an optimiser without a fused implementation
                continue
            group["fused"] = True if self.fused_optimizer else None
            if self.fused_optimizer:
                group["foreach"] = None  # fused and foreach cannot both be set
            for p in group["params"]:
                state = opt.state.get(p, {})
                step = state.get("step")
                if torch.is_tensor(step) and not group.get("capturable", False):
                    where = p.device if self.fused_optimizer else torch.device("cpu")
                    state["step"] = step.to(where, torch.float32)
        return opt

    def compile_step(self, step: F) -> F:
        """``torch.compile(step)`` when switched on (the module or function is returned unchanged if not)."""
        if not self.compile:
            return step
        return torch.compile(step, backend=self.compile_backend)  # type: ignore[return-value]

    def record(self) -> dict:
        """Provenance entries for result.json (``fast_``-prefixed; ``amp_bf16`` is written by run.py)."""
        d = asdict(self)
        backend = d.pop("compile_backend")
        out = {f"fast_{k}": v for k, v in d.items() if k != "amp"}
        out["fast_compile_backend"] = backend if self.compile else None
        return out

    def short(self) -> str:
        """Compact label for tables: e.g. ``bf16+cl+fused`` or ``none``."""
        names = [("bf16", self.amp), ("cl", self.channels_last), ("fused", self.fused_optimizer),
                 (f"compile:{self.compile_backend}", self.compile)]
        return "+".join(n for n, on in names if on) or "none"


def all_on(device: torch.device, compile: bool = False, backend: str = "inductor") -> FastPaths:
    """Every fast path on, on any device (bf16 autocast works on CPU too): for measurements and tests."""
    return FastPaths(True, True, True, compile, backend)


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run in this process (None if it can)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        importlib.import_module("torch._dynamo")  # absent or broken on some platforms/Python versions
    except Exception as e:  # ImportError, RuntimeError on unsupported Python versions
        return f"torch._dynamo cannot be imported ({type(e).__name__}: {e})"
    return None


def count_host_syncs(fn: Callable[[], object], device: torch.device) -> int | None:
    """Number of host-device synchronisations ``fn`` triggers on CUDA (None on other devices).

    Uses torch's sync debug mode, which warns on every synchronising call (``.item()``, ``float()``
    of a CUDA tensor, ``nonzero``, blocking copies to the host). Each one stalls the CPU until the
    GPU has drained its queue, so the next kernels cannot be queued ahead.
    """
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_host_memory() -> bool:
    """Stop glibc from returning freed activation buffers to the OS after every step (Linux only).

    By default glibc serves blocks over ~128 KB-32 MB with fresh mmaps and trims the heap when they
    are freed, so every CPU training step page-faults its activations back in (on 2 cores: ~14 % of
    the run in the kernel). Raising the mmap and trim thresholds keeps them in the heap; same
    results, ~15 % more images/s on CPU. Returns whether it applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False


def provenance(cfg: RunConfig, device: torch.device) -> dict:
    """What result.json records about speed switches: the step's fast paths and the decoded data cache."""
    return {**FastPaths.from_config(cfg, device).record(), "decoded_cache": cfg.data.decoded_cache}
