"""Throughput: a method's training step vs the bare backbone on the same views, in one run.

``python -m benchmark.speed [--methods seqjepa,byol|all] [--image-size 64] [--batch-size 16]``

For each method, on the same device and in the same process: training images/s (every view the step
encodes, target views included; forward + backward + optimiser + EMA hook), the bare ResNet-18
forward + backward images/s on the same number of views of the same size (the ceiling), their ratio,
and (``--data``) the data pipeline's images/s (decode + sequence sampling, no model). Timings of the
method and of the backbone are interleaved round by round and the median is reported, so load from
other processes hits both alike. Output: a table, and JSON with ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmark.config import to_dict
from benchmark.data.base import collate
from benchmark.errors import SeqbenchError, user_message
from benchmark.registry import METHODS, build_method, dataset_entry, resolve
from benchmark.results import atomic_write_text
from benchmark.run import pick_device
from benchmark.train import build_optimizer
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
                 generator=g)[..., :action_dim], torch.randint(0, classes, (b,), generator=g)).to(device)


def measure_method(name: str, overrides: dict, steps: int, warmup: int, amp: bool) -> dict:
    """Median images/s of ``name``'s training step and of the bare backbone on the same views."""
    cfg = resolve({**overrides, "method": name})
    device = pick_device(cfg.device)
    method, spec = build_method(cfg)
    method.to(device).train()
    opt, _ = build_optimizer(method, cfg)
    views = method.views_needed(cfg.data.seq_len)
    b = cfg.train.batch_size
    batch = fake_batch(b, views, spec.image_size, spec.action_dim, spec.num_classes, device)
    backbone = resnet18_backbone(spec.small_images).to(device).train()
    bb_opt = torch.optim.SGD(backbone.parameters(), lr=1e-3)
    flat = batch.views.flatten(0, 1)
    use_amp = amp and device.type == "cuda"
    step_no = [0]

    def method_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = method.training_step(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        step_no[0] += 1
        method.on_step_end(step_no[0], 10_000)

    def backbone_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = backbone(flat).float().pow(2).mean()
        bb_opt.zero_grad(set_to_none=True)
        loss.backward()
        bb_opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        method_step()
        backbone_step()
    t_method, t_bb = [], []
    for _ in range(steps):
        t_method.append(_timed(method_step, device))
        t_bb.append(_timed(backbone_step, device))
    n_img = b * views
    ips = n_img / statistics.median(t_method)
    bb = n_img / statistics.median(t_bb)
    return {"method": name, "device": str(device), "image_size": spec.image_size, "batch_size": b,
            "views_per_sample": views, "train_img_s": round(ips, 1), "backbone_img_s": round(bb, 1),
            "ratio": round(ips / bb, 3),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None}


def measure_data(overrides: dict, views: int, batches: int) -> float:
    """images/s of the data pipeline alone (decode + sampling + collate) with the configured workers."""
    cfg = resolve(overrides)
    ds = dataset_entry(cfg.dataset).build(cfg, "train", views, False)
    loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=cfg.data.num_workers,
                        collate_fn=collate, drop_last=True)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += next(it)["views"].shape[0] * views
        except StopIteration:
            break
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
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--data", action="store_true", help="also time the data pipeline (generates mini data if needed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    from benchmark.config import merge, parse_set

    names = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    overrides = merge({"dataset": args.dataset, "device": args.device,
                       "data": {"image_size": args.image_size, "seq_len": args.seq_len},
                       "train": {"batch_size": args.batch_size, "progress": False}}, parse_set(args.set))
    rows = []
    try:
        for name in names:
            row = measure_method(name, overrides, args.steps, args.warmup, not args.no_amp)
            if args.data:
                row["data_img_s"] = round(measure_data({**overrides, "method": name}, row["views_per_sample"],
                                                       args.steps), 1)
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
    cols = ["method", "device", "image_size", "batch_size", "views_per_sample", "train_img_s", "backbone_img_s",
            "ratio", "data_img_s", "peak_mem_mb"]
    if header:
        print("  ".join(f"{c:>14}" for c in cols))
    print("  ".join(f"{row.get(c, '-')!s:>14}" for c in cols), flush=True)


if __name__ == "__main__":
    sys.exit(main())
