"""Train and evaluate one method on one dataset: ``python -m benchmark.run --method seqjepa --dataset 3diebench``.

``run_one(cfg)`` is the whole job (the SLURM launcher calls it too): validate -> run directory ->
pre-train (resuming if a checkpoint exists; skipped with ``--epochs 0``) -> probes -> result.json.
A finished run is a no-op unless ``force``. Started as several processes (torchrun, srun, the
launcher's multi-GPU jobs) it trains data-parallel and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from benchmark.config import RunConfig, layered_overrides, run_dir, to_dict
from benchmark.errors import SeqbenchError, user_message
from benchmark.registry import DATASETS, METHODS, build_method, dataset_entry, resolve

if TYPE_CHECKING:
    import torch

    from benchmark import distributed

# torch and everything that imports it are imported inside the functions that train, so that
# `--help` and errors in the command line answer at once (tests/test_cli_startup.py checks it).
CONFIG_FILE = "config.yaml"


@dataclass
class RunOutcome:
    run_dir: Path
    status: str  # "complete" | "skipped" (already finished) | "interrupted" (resumable)
    result: dict | None


def pick_device(name: str) -> torch.device:
    from benchmark import distributed

    return distributed.device_for(name, distributed.DistEnv())


def run_one(cfg: RunConfig, force: bool = False, stop_requested: Callable[[], bool] | None = None,
            log: Callable[[str], None] = print) -> RunOutcome:
    """Run (or resume, or skip) the run ``cfg`` identifies. Raises SeqbenchError on bad input.

    ``stop_requested`` is polled after every training step and once before the probes; when it
    returns True the run checkpoints and returns status "interrupted" (the same call resumes it).
    """
    from benchmark import distributed
    from benchmark.results import RESULT_FILE, read_result

    out = run_dir(cfg)
    if not force and (out / RESULT_FILE).is_file():
        log(f"already finished: {out} (use --force to re-run)")
        return RunOutcome(out, "skipped", read_result(out))
    with distributed.session(cfg.device) as (env, device):
        return _run(cfg, out, env, device, force, stop_requested, log)


def _run(cfg: RunConfig, out: Path, env: distributed.DistEnv, device: torch.device, force: bool,
         stop_requested: Callable[[], bool] | None, log: Callable[[str], None]) -> RunOutcome:
    import torch

    from benchmark import distributed, fastpath
    from benchmark.data.base import available_cpus, loader_workers
    from benchmark.probes.evaluate import evaluate
    from benchmark.probes.online import OnlineProbes
    from benchmark.results import RESULT_FILE, now, provenance, read_result, write_result
    from benchmark.train import CHECKPOINT, LOG, train

    if not env.is_main:
        log = lambda msg: None  # rank 0 speaks for the run
    torch.manual_seed(cfg.seed)
    method, spec = build_method(cfg)
    entry = dataset_entry(cfg.dataset)
    n_views = method.views_needed(cfg.data.seq_len)
    train_ds = entry.build(cfg, "train", n_views, False)  # validates the data root before anything is written
    probe_views = max(2, cfg.eval_seq_len, *cfg.probe.eval_seq_lens)
    probe_train = entry.build(cfg, "train", probe_views, True)
    probe_val = entry.build(cfg, "val", probe_views, True)
    if method.uses_actions and train_ds.action_dim != spec.action_dim:
        raise SeqbenchError(f"{cfg.method} expects {spec.action_dim}-d actions but {cfg.dataset} gives "
                            f"{train_ds.action_dim}-d ones")
    if env.is_main:
        if force and out.exists():
            for f in (RESULT_FILE, CHECKPOINT, LOG):
                (out / f).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    distributed.barrier()  # the other ranks read the checkpoint only once rank 0 has prepared the folder
    start, t0 = now(), time.perf_counter()
    log(f"run directory: {out}")
    workers = loader_workers(cfg.data.num_workers)
    log(f"DataLoader workers: {workers} (data.num_workers={cfg.data.num_workers}, {available_cpus()} CPU cores "
        f"available to this process)")
    if cfg.train.epochs > 0:
        online = (OnlineProbes(method, cfg, probe_train, probe_val, device)
                  if cfg.train.online_probe_every and env.is_main else None)
        summary = train(cfg, method, train_ds, out, device, stop_requested, online)
        if summary.interrupted or (stop_requested is not None and stop_requested()):
            log(f"interrupted at step {summary.steps}/{summary.total_steps}; checkpoint saved in {out}")
            return RunOutcome(out, "interrupted", None)
        train_info = {"steps": summary.steps, "total_steps": summary.total_steps, "epochs": summary.epochs_done,
                      "train_loss_final": summary.final_loss, "images_per_s": summary.images_per_s}
    else:
        log("train.epochs = 0: evaluating the randomly initialised encoder (no pre-training)")
        train_info = {"steps": 0, "total_steps": 0, "epochs": 0, "train_loss_final": None, "images_per_s": None}
    if not env.is_main:
        return RunOutcome(out, "complete", None)  # rank 0 evaluates and writes the result
    metrics = evaluate(method.to(device), cfg, probe_train, probe_val, device)
    metrics.update({k: train_info[k] for k in ("train_loss_final", "images_per_s")})
    extra = {"train_steps": train_info["steps"], "train_total_steps": train_info["total_steps"],
             "dataset_note": train_ds.label_note or None, "amp_bf16": cfg.train.amp and device.type == "cuda",
             "dataloader_workers": workers,
             **fastpath.provenance(cfg, device)}
    path = write_result(out, cfg, metrics, provenance(device, start, time.perf_counter() - t0, extra))
    log(f"wrote {path}")
    return RunOutcome(out, "complete", read_result(out))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.run", description=__doc__.split("\n")[0],
        epilog=f"methods: {', '.join(METHODS)}; datasets: {', '.join(DATASETS)}. Any config field: --set KEY=VALUE "
               "(e.g. --set model.act_cond=false --set probe.eval_seq_lens=[1,3,5]).")
    p.add_argument("--method", help="method name (default seqjepa)")
    p.add_argument("--dataset", help="dataset name (default 3diebench-mini)")
    p.add_argument("--data-root", help="dataset root (3diebench: the extracted 3DIEBench/ folder)")
    p.add_argument("--seq-len", type=int, help="training sequence length M_tr")
    p.add_argument("--eval-seq-len", type=int, help="inference length M_val of the headline top-1")
    p.add_argument("--epochs", type=int, help="pre-training epochs; 0 = evaluate at random initialisation")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu | cuda | auto (default auto)")
    p.add_argument("--out", help="parent folder of run directories (default results/runs)")
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable; later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--force", action="store_true", help="re-run even if the run already finished")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    flags = {"method": args.method, "dataset": args.dataset, "seed": args.seed, "device": args.device,
             "out": args.out, "data": {"root": args.data_root, "seq_len": args.seq_len,
                                       "image_size": args.image_size},
             "train": {"epochs": args.epochs, "batch_size": args.batch_size},
             "probe": {"eval_seq_len": args.eval_seq_len}}
    return resolve(layered_overrides(args.config, flags, args.set))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        outcome = run_one(cfg, force=args.force)
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the last checkpoint is kept and the same command resumes the run", file=sys.stderr)
        return 130
    if outcome.result:
        m = outcome.result["metrics"]
        keys = [k for k in ("top1", "rotation_r2", "color_r2", "indiv_rotation_r2") if k in m]
        print("  ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m[k], int | float)))
    print(outcome.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
