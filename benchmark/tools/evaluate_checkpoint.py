"""Probe an encoder from a checkpoint: ``python -m benchmark.evaluate --checkpoint PATH --dataset 3diebench``.

Reads a solo-learn, torchvision or seqbench checkpoint (``benchmark/tools/checkpoint_formats.py``), runs the probes of
``benchmark.core.runner`` on it (``benchmark.probes.suite.evaluate``; no training) and writes a normal
result.json with ``method = "external:<name>"`` and the checkpoint's path, sha256 and layout in its
provenance, in the deterministic run directory ``benchmark.config.run_dir`` gives, so
``python -m benchmark.aggregate`` lists it beside the trained methods.

Settings: dataset presets and ``--set`` work as in ``benchmark.core.runner``. A seqbench run evaluated on its own
dataset defaults to that run's data, probe and seed settings (so it reproduces the run's own numbers);
on another dataset only ``data.seq_len`` and ``data.latent_type`` (what its model consumes) carry over.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmark.config import Overrides, RunConfig, layer, layered_overrides, stack, to_dict
from benchmark.core.registry import DATASETS, dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.results import now, provenance
from benchmark.core.rundir import RunDir
from benchmark.core.runner import EXIT_CODES, FLAG_NAMES, RunOutcome, add_config_flags, pick_device
from benchmark.data import preflight
from benchmark.data.base import available_cpus, loader_workers
from benchmark.infra import yamlio
from benchmark.infra.errors import ConfigError, SeqbenchError, user_message
from benchmark.infra.fileio import LockHeld
from benchmark.probes.suite import evaluate
from benchmark.tools.checkpoint_formats import FORMATS, LoadedCheckpoint, load
from methods.contract import Method
from methods.external import ExternalEncoder, ExternalEncoderConfig


def inherited(ck: LoadedCheckpoint, dataset: str | None) -> dict:
    """Defaults a seqbench run passes on to its evaluation (see the module docstring)."""
    rc = ck.run_config
    if not rc:
        return {}
    data = rc.get("data") or {}
    if dataset in (None, rc.get("dataset")):
        same = {"dataset": rc.get("dataset"), "seed": rc.get("seed"), "data": data, "probe": rc.get("probe")}
        return {k: v for k, v in same.items() if v is not None}
    return {"data": {k: data[k] for k in ("seq_len", "latent_type") if k in data}}


def external_config(ck: LoadedCheckpoint, user: dict | Overrides, name: str) -> RunConfig:
    """User overrides -> RunConfig of method ``external:<name>`` (dataset preset, no training)."""
    user = user if isinstance(user, Overrides) else layer(user, "the config")
    for key in ("method", "model"):
        if key in user.values:
            raise ConfigError(f"'{key}' cannot be set when evaluating a checkpoint: the model comes from the "
                              f"checkpoint; name the result with --name (in {user.source_of(key)})")
    if not name or any(not (c.isalnum() or c in "._+-") for c in name) or name.startswith("."):
        raise ConfigError(f"--name {name!r}: use letters, digits and . _ + - only (it becomes a folder name)")
    run = layer(inherited(ck, user.values.get("dataset")), f"the run config recorded in {ck.path}")
    # Resolve as a registered method to apply the dataset preset and every key/type check, then swap in
    # the external method: the registry would reject "external:<name>" and its model config.
    fixed = layer({"method": "seqjepa", "model": {}, "train": {"epochs": 0}}, "benchmark.tools.evaluate_checkpoint")
    cfg = resolve(stack(run, user, fixed))
    rc = ck.run_config or {}
    model = ExternalEncoderConfig(ck.format, ck.stem, ck.sha256, rc.get("method"), rc.get("model") or {})
    return replace(cfg, method=f"external:{name}", model=to_dict(model))


def build_model(ck: LoadedCheckpoint, cfg: RunConfig) -> Method:
    if ck.method is not None:
        return ck.method
    method = ExternalEncoder(ExternalEncoderConfig(**cfg.model), dataset_entry(cfg.dataset).spec(cfg))
    method.load_encoder_state(ck.encoder_state)
    return method


def evaluate_checkpoint(ck: LoadedCheckpoint, cfg: RunConfig, force: bool = False, log=print) -> RunOutcome:
    """Probe ``ck`` under ``cfg`` and write result.json (skipped if it exists, unless ``force``)."""
    rd = RunDir.of(cfg)
    record, why = rd.check_result()
    if not force and record is not None:
        log(f"already evaluated: {rd.path} (use --force to re-run)")
        return RunOutcome(rd.path, "skipped", record)
    if why:
        log(f"note: {why} in {rd.path}: not done; evaluating again")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    method = build_model(ck, cfg)
    entry = dataset_entry(cfg.dataset)
    if entry.sizes is not None:  # probe lengths vs views, before any data is rendered or written
        preflight.check(cfg, entry.sizes(cfg), None)
    log(f"DataLoader workers: {loader_workers(cfg.data.num_workers)} (data.num_workers={cfg.data.num_workers}, "
        f"{available_cpus()} CPU cores available to this process) for the probes")
    # The same views per probe sample as benchmark.core.runner, even without an aggregator: which views an item
    # draws depends on how many it draws, and every method must be probed on the same view pairs.
    views = max(2, cfg.eval_seq_len, *cfg.probe.eval_seq_lens)
    probe_train = entry.build(cfg, "train", views, True)  # validates the data root before anything is written
    probe_val = entry.build(cfg, "val", views, True)
    want = method.spec.action_dim
    if method.uses_actions and probe_train.action_dim != want:
        trained = ((ck.run_config or {}).get("data") or {}).get("latent_type")
        raise SeqbenchError(f"{ck.path} was trained with {want}-d actions but {cfg.dataset} with "
                            f"data.latent_type={cfg.data.latent_type} gives {probe_train.action_dim}-d ones; "
                            f"use the training run's: --set data.latent_type={trained}")
    with rd.lock(f"evaluation {rd.path}"):  # one evaluation of a run directory at a time
        return _evaluate_locked(ck, cfg, method, probe_train, probe_val, device, rd, log)


def _evaluate_locked(ck, cfg, method, probe_train, probe_val, device, rd: RunDir, log) -> RunOutcome:
    if rd.check_result()[1]:  # an unreadable result.json is kept beside, not overwritten
        rd.set_invalid_aside()
    rd.write_config(cfg)
    start, t0 = now(), time.perf_counter()
    log(f"evaluating {ck.format} checkpoint {ck.path} ({ck.stem} stem"
        f"{', full ' + type(method).__name__ if ck.method is not None else ', encoder only'}) -> {rd.path}")
    if ck.note:
        log(f"note: {ck.note}")
    metrics = evaluate(method.to(device), cfg, probe_train, probe_val, device)
    extra = {"checkpoint": str(ck.path.resolve()), "checkpoint_sha256": ck.sha256,
             "checkpoint_format": ck.format, "checkpoint_stem": ck.stem,
             "rebuilt_method": type(method).__name__ if ck.method is not None else None,
             "checkpoint_note": ck.note or None, "train_steps": 0, "train_total_steps": 0,
             "dataset_note": probe_train.label_note or None}
    path = rd.write_result(cfg, metrics, provenance(device, start, time.perf_counter() - t0, extra))
    log(f"wrote {path}")
    return RunOutcome(rd.path, "complete", rd.read_result())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.evaluate", description=__doc__.split("\n")[0],
        epilog=f"formats: {', '.join(FORMATS)}; datasets: {', '.join(DATASETS)}. Any data/probe field: "
               "--set KEY=VALUE (e.g. --set probe.epochs=100).")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a seqbench run directory")
    p.add_argument("--format", default="auto", choices=FORMATS, help="checkpoint layout (default: detect)")
    p.add_argument("--name", help="method is recorded as external:NAME (default: the file's stem)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow any pickled object (torch.load weights_only=False); only for trusted files")
    p.add_argument("--dataset", help="dataset name (default 3diebench-mini, or a seqbench run's own)")
    p.add_argument("--data-root", help="dataset root (3diebench: the extracted 3DIEBench/ folder)")
    p.add_argument("--seq-len", type=int, help="M_tr recorded for the row (and default M_val)")
    p.add_argument("--eval-seq-len", type=int, help="inference length M_val (models with an aggregator)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int, help="probe seed")
    add_config_flags(p, force_help="re-evaluate even if a result exists")
    return p


def user_overrides(args: argparse.Namespace) -> Overrides:
    flags = {"dataset": args.dataset, "seed": args.seed, "device": args.device, "out": args.out,
             "data": {"root": args.data_root, "seq_len": args.seq_len, "image_size": args.image_size},
             "probe": {"eval_seq_len": args.eval_seq_len}}
    return layered_overrides(args.config, flags, args.set, FLAG_NAMES)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        user = user_overrides(args)  # config errors first: they need no checkpoint read
        ck = load(Path(args.checkpoint), args.format, args.trust_checkpoint)
        cfg = external_config(ck, user, args.name or ck.default_name)
        if args.print_config:
            print(yamlio.dump(to_dict(cfg)), end="")
            return 0
        outcome = evaluate_checkpoint(ck, cfg, force=args.force)
    except LockHeld as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return EXIT_CODES["locked"]
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    m = outcome.result["metrics"] if outcome.result else {}
    keys = [k for k in ("top1", "knn_top1", "rotation_r2", "color_r2") if isinstance(m.get(k), int | float)]
    print("  ".join(f"{k}={m[k]:.4g}" for k in keys))
    print(outcome.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
