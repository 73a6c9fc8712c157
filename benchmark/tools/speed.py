"""Throughput: a method's training step vs the bare backbone on the same views, in one run.

``python -m benchmark.speed [--methods seqjepa,byol|all] [--image-size 64] [--batch-size 16]``

For each method, on the same device and in the same process: training images/s (every view the step
encodes, target views included; forward + backward + optimiser + EMA hook), the bare ResNet-18
forward + backward images/s on the same number of views of the same size (the ceiling), their ratio,
and (``--data``) the data pipeline's images/s (decode + sequence sampling + collate, no model) and its
ratio to the training rate (``data_x``: below 1 the GPU waits for data). ``--cache`` adds the same
figures for the decoded uint8 cache (``benchmark/data/view_cache.py``, built once if missing). Timings of
the method and of the backbone are interleaved round by round and the median is reported, so load
from other processes hits both alike. Output: a table, and JSON with ``--json FILE``.

Fast paths (``benchmark/core/fastpath.py``) apply to the method and to the backbone alike: ``--fast config``
(default: as a run would use them: bf16, channels_last and fused optimiser on CUDA only),
``--fast all`` (all of them on any device, bf16 autocast on CPU included), ``--fast none``; plus
``--compile`` (``torch.compile`` of both steps). On CUDA, ``syncs`` counts the host-device
synchronisations of one method step (each stalls the launch queue).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmark.config import to_dict
from benchmark.core.fastpath import FastPaths, all_on, count_host_syncs, keep_host_memory
from benchmark.core.registry import METHODS, build_method, dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.runner import pick_device
from benchmark.core.train import build_optimizer
from benchmark.data.base import available_cpus, collate, loader_workers
from benchmark.infra.distributed import wrap
from benchmark.infra.errors import SeqbenchError, user_message
from benchmark.infra.fileio import atomic_write_text
from methods.components import resnet18_backbone
from methods.contract import Batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def fake_batch(b: int, views: int, size: int, action_dim: int, classes: int, device: torch.device) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(b, views, 3, size, size, generator=g), torch.randn(b, views - 1, max(action_dim, 1),
                 generator=g)[..., :action_dim], torch.randint(0, classes, (b,), generator=g),
                 latents=torch.randn(b, views, action_dim, generator=g)).to(device)  # absolute, as the datasets give


def fast_paths(mode: str, cfg, device: torch.device, amp: bool) -> FastPaths:
    """The switches of ``--fast`` (config | all | none); ``--compile`` and ``--no-amp`` apply on top."""
    if mode == "all":
        fast = all_on(device, cfg.train.compile)
    elif mode == "none":
        fast = FastPaths(compile=cfg.train.compile)
    else:
        fast = FastPaths.from_config(cfg, device)
    return replace(fast, amp=fast.amp and amp)


def measure_method(name: str, overrides: dict, steps: int, warmup: int, amp: bool, fast_mode: str = "config") -> dict:
    """Median images/s of ``name``'s training step and of the bare backbone on the same views."""
    cfg = resolve({**overrides, "method": name})
    device = pick_device(cfg.device)
    if device.type == "cpu":
        keep_host_memory()  # as the training loop does
    fast = fast_paths(fast_mode, cfg, device, amp)
    method, spec = build_method(cfg)
    fast.module(method.to(device).train())
    opt = fast.optimizer(build_optimizer(method, cfg)[0])
    step_fn = fast.compile_step(wrap(method, device))  # the training loop's own step, fast paths included
    views = method.views_needed(cfg.data.seq_len)
    b = cfg.train.batch_size
    batch = fast.prepare(fake_batch(b, views, spec.image_size, spec.action_dim, spec.num_classes, device))
    backbone = fast.module(resnet18_backbone(spec.small_images).to(device).train())
    bb_opt = fast.optimizer(torch.optim.SGD(backbone.parameters(), lr=1e-3))
    bb_fn = fast.compile_step(backbone)
    flat = batch.views.flatten(0, 1)
    step_no = [0]

    def method_step() -> None:
        with fast.autocast(device):
            out = step_fn(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        step_no[0] += 1
        method.on_step_end(step_no[0], 10_000)

    def backbone_step() -> None:
        with fast.autocast(device):
            loss = bb_fn(flat).float().pow(2).mean()
        bb_opt.zero_grad(set_to_none=True)
        loss.backward()
        bb_opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(max(warmup, 1) if fast.compile else warmup):  # compilation is not throughput
        method_step()
        backbone_step()
    t_method, t_bb = [], []
    for _ in range(steps):
        t_method.append(_timed(method_step, device))
        t_bb.append(_timed(backbone_step, device))
    syncs = count_host_syncs(method_step, device)
    n_img = b * views
    ips = n_img / statistics.median(t_method)
    bb = n_img / statistics.median(t_bb)
    return {"method": name, "device": str(device), "image_size": spec.image_size, "batch_size": b,
            "views_per_sample": views, "fast": fast.short(), "train_img_s": round(ips, 1),
            "backbone_img_s": round(bb, 1), "ratio": round(ips / bb, 3), "syncs": syncs,
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None}


def measure_data(overrides: dict, views: int, batches: int) -> float:
    """images/s of the data pipeline alone (decode + sampling + collate) with the configured workers.

    Loops over epochs when the split holds fewer than ``batches`` + 1 batches (small mini datasets);
    persistent workers so that a new epoch does not count worker start-up.
    """
    cfg = resolve(overrides)
    ds = dataset_entry(cfg.dataset).build(cfg, "train", views, False)
    if len(ds) < cfg.train.batch_size:
        raise SeqbenchError(f"{cfg.dataset} has {len(ds)} training samples, fewer than one batch of "
                            f"{cfg.train.batch_size}; use a smaller --batch-size")
    workers = loader_workers(cfg.data.num_workers)
    print(f"data pipeline ({'decoded cache' if cfg.data.decoded_cache else 'files'}): DataLoader workers {workers} "
          f"(data.num_workers={cfg.data.num_workers}, {available_cpus()} CPU cores available to this process)")
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate, drop_last=True, pin_memory=pick_device(cfg.device).type == "cuda",
                        persistent_workers=workers > 0)

    def endless():
        while True:
            yield from loader

    it = endless()
    next(it)  # worker start-up is not throughput
    t = time.perf_counter()
    n = sum(next(it)["views"].shape[0] * views for _ in range(batches))
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.speed", description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="seqjepa", help="comma-separated names, or 'all'")
    p.add_argument("--dataset", default="3diebench-mini")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast")
    p.add_argument("--fast", choices=["config", "all", "none"], default="config",
                   help="fast paths: as the config resolves them (GPU-only ones off on CPU), all on, or none")
    p.add_argument("--compile", action="store_true", help="torch.compile the method and backbone steps")
    p.add_argument("--data", action="store_true", help="also time the data pipeline (generates mini data if needed)")
    p.add_argument("--cache", action="store_true",
                   help="also time the data pipeline reading the decoded cache (3diebench[-mini]; built once)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    from benchmark.config import merge, parse_set

    names = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    overrides = merge({"dataset": args.dataset, "device": args.device,
                       "data": {"image_size": args.image_size, "seq_len": args.seq_len},
                       "train": {"batch_size": args.batch_size, "progress": False}}, parse_set(args.set))
    if args.compile:
        overrides = merge(overrides, {"train": {"compile": True}})
    rows, data_rates = [], {}
    pipelines = [("data", False)] * args.data + [("cache", True)] * args.cache
    try:
        for name in names:
            row = measure_method(name, overrides, args.steps, args.warmup, not args.no_amp, args.fast)
            for col, cached in pipelines:  # the pipeline depends on the method only through its view count
                key = (row["views_per_sample"], cached)
                if key not in data_rates:
                    cfg = merge(overrides, {"method": name, "data": {"decoded_cache": cached}})
                    data_rates[key] = measure_data(cfg, row["views_per_sample"], args.steps)
                row[f"{col}_img_s"] = round(data_rates[key], 1)
                row[f"{col}_x"] = round(data_rates[key] / row["train_img_s"], 2)
            rows.append(row)
            print_row(row, header=len(rows) == 1)
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_text(args.json, json.dumps({"rows": rows, "torch": torch.__version__,
                                                 "config": to_dict(resolve(overrides))}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def print_row(row: dict, header: bool) -> None:
    cols = {"method": 12, "device": 6, "image_size": 4, "batch_size": 5, "views_per_sample": 5, "fast": 13,
            "train_img_s": 9, "backbone_img_s": 9, "ratio": 5, "data_img_s": 9, "data_x": 6, "cache_img_s": 9,
            "cache_x": 7, "syncs": 5, "peak_mem_mb": 8}
    short = {"image_size": "px", "batch_size": "batch", "views_per_sample": "views", "backbone_img_s": "bb_img_s",
             "peak_mem_mb": "peak_MiB"}
    if header:
        print("  ".join(f"{short.get(c, c):>{w}}" for c, w in cols.items()))
    print("  ".join(f"{'-' if row.get(c) is None else row[c]!s:>{w}}" for c, w in cols.items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
