"""The training loop: plain and visible, the same for every method.

schedule -> autocast -> method.training_step -> backward -> optimiser step -> method.on_step_end (EMA)
-> JSON-lines log (and the ``train.logger`` monitor, benchmark/infra/monitor.py) -> checkpoint. The data
order and every view sampled are functions of (seed, epoch, index), and a checkpoint holds model,
optimiser, step, RNG state, so a run resumed from its run directory continues exactly where it stopped.

Stopping: ``stop_requested()`` is polled between steps (``benchmark.core.runner`` sets it from SIGTERM, SIGUSR2
or SIGINT, the SLURM job from the requeue signal); the loop then checkpoints at the last finished step
and returns ``interrupted``. Under data parallelism (``benchmark/infra/distributed.py``) the ranks agree on it
and on data errors with one all-reduce per step, so all stop at the same step and a rank whose data
failed stops the others at once; each rank trains on its slice of every global batch, and rank 0 alone
writes the checkpoint and the log.

Divergence: the loss (already read on the host every step) ending non-finite ends the run before its
update is applied; NaN/inf weights show up there one step later. Parameters, EMA targets and
BatchNorm statistics are checked for NaN/inf on the device before every checkpoint, the last step's
included (a pass over every weight: too slow on a CPU to repeat every step), so a non-finite state
is never saved; ``benchmark.core.runner`` then checks the probe features. The summary carries ``diverged`` =
{step, what, detail} and ``benchmark.core.runner`` records the run as diverged.

Checkpoints are read with ``torch.load(weights_only=True)``: they hold only tensors and plain
containers (model, optimiser, step, every rank's RNG state, the config, data digests, resume segments,
the last loss and the training time), so a file carrying pickled code is refused, never executed.
Resuming checks the checkpoint's config and data digests against the current ones and cuts
``log.jsonl`` (and the monitor's csv rows / tensorboard events) back to the checkpoint's step, so every
step is logged once.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from benchmark.config import RunConfig, config_diff, semantic, to_dict
from benchmark.core.fastpath import FastPaths, keep_host_memory
from benchmark.core.results import git_state, now
from benchmark.data.base import SequenceDataset, collate, loader_workers, to_batch
from benchmark.infra import distributed
from benchmark.infra.errors import SeqbenchError
from benchmark.infra.fileio import atomic_torch_save, atomic_write_text, disk_full_error, is_disk_full
from benchmark.infra.monitor import NullMonitor, open_monitor, scalars
from benchmark.infra.progress import Progress
from methods.components import warmup_cosine
from methods.contract import Method

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CHECKPOINT_KEYS = ("model", "optimizer", "step", "config")  # and "rng" (or the older "rng_cpu")
PRESETS = {  # docs/protocol.md, Decision 3
    "paper": {"optimizer": "adamw", "lr": 4e-4, "weight_decay": 1e-3, "cosine": True},
    # What hafezgh/seq-jepa main_transformed_views.py runs in training: Adam(lr=1e-3, wd=0) (line 237; the
    # AdamW branch is only built for evaluation), but every epoch its warm-up code sets the lr to --lr 4e-4
    # after the warm-up (lines 300-308), overwriting both the constructor's 1e-3 and the cosine scheduler's
    # step: linear warm-up to 4e-4, then constant.
    "upstream-code": {"optimizer": "adam", "lr": 4e-4, "weight_decay": 0.0, "cosine": False},
}


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch); can start mid-epoch at a batch offset.

    With ``world_size`` ranks, every rank draws the same permutation and keeps its contiguous slice of
    each global batch of ``batch_size``, so step s trains on exactly the samples one process would.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.local = batch_size // world_size
        self.rank = rank
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: (self.n // self.batch_size) * self.batch_size]
        batches = perm[self.start_batch * self.batch_size:].view(-1, self.batch_size)
        return iter(batches[:, self.rank * self.local:(self.rank + 1) * self.local].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.n // self.batch_size - self.start_batch) * self.local


def ignore_scheduler_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: scheduler signals are the main process's business.

    SLURM signals every process of a job step, data workers included: the requeue signal (USR2) and,
    on preemption, SIGTERM; Ctrl-C sends SIGINT to the whole foreground process group. A worker that
    died of it would make the main process fail ("DataLoader worker is killed") before it can finish
    its step and checkpoint. So workers ignore USR1/USR2/INT, and obey a SIGTERM only when their own
    main process sends it (PyTorch and multiprocessing stop stuck workers that way): SIGTERM is
    blocked and a watcher thread reads who sent it.
    """
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):  # Linux (SLURM); elsewhere SIGTERM keeps its default
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the watcher
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass  # from the scheduler: the main process decides when to stop
    os._exit(0)


@dataclass
class TrainSummary:
    steps: int
    total_steps: int
    epochs_done: int
    final_loss: float  # loss of the last step (from the checkpoint when this start trained no step)
    images_per_s: float  # over every segment's training time up to the last checkpoint and this start
    interrupted: bool = False
    diverged: dict | None = None  # {"step", "what", "detail"} when NaN/inf ended the run
    segments: list[dict] = field(default_factory=list)  # one per start: start/end step, git commit, host


def build_optimizer(method: Method, cfg: RunConfig) -> tuple[torch.optim.Optimizer, dict]:
    preset = dict(PRESETS[cfg.train.optimizer_preset])
    if cfg.train.lr is not None:
        preset["lr"] = cfg.train.lr
    if cfg.train.weight_decay is not None:
        preset["weight_decay"] = cfg.train.weight_decay
    groups = method.param_groups(preset["weight_decay"])
    opt_cls = torch.optim.AdamW if preset["optimizer"] == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=preset["lr"]), preset


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: Path) -> dict:
    """Read one of our own checkpoints with ``weights_only=True``; one-paragraph errors, never a traceback.

    A file holding pickled Python objects (a ``__reduce__`` payload, say) is refused before anything in
    it runs; a file lacking one of our keys is refused with the key named.
    """
    where = f"checkpoint {path}"
    fix = "delete it to restart the run from step 0, or re-run with --force"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights only" in text.lower() or "weights_only" in text:
            found = [ln.strip() for ln in text.splitlines() if "Unsupported global" in ln or "GLOBAL" in ln]
            what = found[0].split(" was not ")[0].rstrip(".") if found else "objects other than tensors"
            raise SeqbenchError(f"{where} holds pickled Python objects ({what}); it was refused unread and "
                                f"nothing in it was run. seqbench loads its checkpoints with "
                                f"torch.load(weights_only=True) and never writes such objects, so this file "
                                f"was not written by seqbench (or was tampered with); {fix}") from None
        raise SeqbenchError(f"{where} cannot be unpickled ({text.splitlines()[0] if text else e!r}); {fix}") from None
    except Exception as e:  # truncated or foreign file: say so instead of a zip/pickle traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SeqbenchError(f"{where} cannot be read ({type(e).__name__}: {first}); the file is truncated or "
                            f"not a seqbench checkpoint; {fix}") from None
    if not isinstance(ck, dict):
        raise SeqbenchError(f"{where} holds a {type(ck).__name__}, not a seqbench checkpoint; {fix}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck] + ([] if "rng" in ck or "rng_cpu" in ck else ["rng"])
    if missing:
        raise SeqbenchError(f"{where} lacks {', '.join(repr(k) for k in missing)} (it has "
                            f"{', '.join(map(repr, ck)) or 'nothing'}), so the run cannot resume from it "
                            f"exactly: it was not written by seqbench's training loop, or was edited; {fix}")
    return ck


def check_resumable(ck: dict, cfg: RunConfig, data: dict | None, path: Path) -> None:
    """Refuse to resume from a checkpoint trained under another config or on other data."""
    fix = ("delete checkpoint.pt and log.jsonl (or re-run with --force) to start over with the current "
           "settings, or resume with the checkpoint's")
    diff = config_diff(semantic(ck["config"]), semantic(to_dict(cfg)), "checkpoint", "now") \
        if isinstance(ck["config"], dict) else ["config: not a mapping"]
    if diff:
        more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
        raise SeqbenchError(f"{path} was trained with another config: {'; '.join(diff[:8])}{more}. Resuming "
                            f"would mix two configurations in one run; {fix}")
    old = ck.get("data")
    if isinstance(old, dict) and data:
        diff = [f"{k}: {str(old.get(k, '(absent)'))[:19]} (checkpoint) vs {str(v)[:19]} (now)"
                for k, v in sorted(data.items()) if old.get(k) != v]
        if diff:
            raise SeqbenchError(f"{path} was trained on other data: {'; '.join(diff)}. The split files or "
                                f"saliency maps differ from the ones this run started with; {fix} "
                                f"(the data digests are in result.json's provenance)")


def _restore(method: Method, opt: torch.optim.Optimizer, ck: dict, path: Path) -> None:
    try:
        method.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SeqbenchError(f"checkpoint {path} does not fit the {type(method).__name__} model ({first[:300]}); "
                            f"delete it to restart the run from step 0, or re-run with --force") from None
    try:
        opt.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError, TypeError) as e:
        raise SeqbenchError(f"checkpoint {path} holds an optimiser state that does not fit this model ({e}); "
                            f"delete it to restart the run from step 0, or re-run with --force") from None


def cut_log(path: Path, step: int) -> int:
    """Keep the lines of ``log.jsonl`` up to ``step`` (the checkpoint's); return how many were dropped.

    A resumed run re-trains every step after its checkpoint and logs it again; lines written after the
    checkpoint (and a half-written last line after ``kill -9``) would otherwise appear twice.
    """
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines(keepends=True):
        try:  # a fresh start (step 0) keeps nothing: it logs step 0 (the online probes' reference) again
            ok = step > 0 and line.endswith("\n") and json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(keep), "training log")
    return dropped


def nonfinite(method: Method) -> list[str]:
    """Names of the floating-point parameters and buffers (EMA targets, BN statistics) holding NaN/inf.

    The check runs on the device; reading its one boolean is the only host sync.
    """
    tensors = [(n, t.detach()) for n, t in method.state_dict(keep_vars=True).items()
               if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        return []
    flags = torch.stack([torch.isfinite(t).all() for _, t in tensors])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(tensors, flags.tolist(), strict=True) if not ok]


def divergence(step: int, what: str, detail: str) -> dict:
    return {"step": step, "what": what, "detail": detail}


def _names(bad: list[str]) -> str:
    return ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")


@torch.no_grad()
def check_probe_features(method: Method, ds: SequenceDataset, lens: list[int], device: torch.device,
                         n: int = 8) -> dict | None:
    """Encode the first ``n`` probe samples at every length the probes use; a divergence record if any
    representation holds NaN/inf (the probes would fit chance-level heads on them), else None."""
    items = [ds[i] for i in range(min(n, len(ds)))]
    if not items:
        return None
    b = collate(items)
    views, actions = b["views"].to(device), b["actions"].to(device)
    method.eval()
    bad = set()
    for m in sorted({2, *lens}):
        if m > views.shape[1]:
            continue
        for name, t in method.encode(views[:, :m], actions[:, : m - 1]).items():
            if not bool(torch.isfinite(t).all()):
                bad.add(f"{name} (M={m})")
    if not bad:
        return None
    return divergence(-1, "probe features", f"non-finite probe features from {_names(sorted(bad))}")


def _fetch(batches: Iterator) -> tuple[dict | None, Exception | None]:
    """Next batch, (None, None) at the end of the epoch, or (None, error) if loading failed."""
    try:
        return next(batches), None
    except StopIteration:
        return None, None
    except Exception as e:  # reported to every rank by the caller (distributed.agree)
        return None, e


def train(cfg: RunConfig, method: Method, dataset: SequenceDataset, run_dir: Path, device: torch.device,
          stop_requested: Callable[[], bool] | None = None,
          online_probes: Callable[[], dict[str, float]] | None = None, data: dict | None = None,
          log: Callable[[str], None] | None = None) -> TrainSummary:
    """Pre-train ``method`` on ``dataset``; resumes from ``run_dir/checkpoint.pt`` if present.

    ``data``: digests of the split/saliency files (stored in the checkpoint, compared on resume).
    Under data parallelism every rank calls this with the same arguments (``device`` = its own).
    ``online_probes`` (rank 0; benchmark/probes/online.py) runs before the first step and every
    ``train.online_probe_every`` steps; its metrics join that step's log line.
    """
    tc = cfg.train
    env = distributed.current()
    say = log if log is not None and env.is_main else (lambda msg: None)
    n = len(dataset)
    steps_per_epoch = n // tc.batch_size
    if steps_per_epoch == 0:
        raise SeqbenchError(f"train.batch_size {tc.batch_size} is larger than the {n} training samples of "
                            f"{cfg.dataset}; use --batch-size {max(1, n // 4)} or smaller")
    local_batch = distributed.local_batch_size(tc.batch_size, env)
    total = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total = min(total, tc.max_steps)
    warmup = min(total, tc.warmup_epochs * steps_per_epoch)
    opt, preset = build_optimizer(method, cfg)
    method.to(device)
    step, ckpt_path = 0, run_dir / CHECKPOINT
    segments: list[dict] = []
    timing = {"steps": 0, "seconds": 0.0}  # training time of earlier segments, up to their last checkpoint
    last_loss = math.nan
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        check_resumable(ck, cfg, data, ckpt_path)
        _restore(method, opt, ck, ckpt_path)
        step = int(ck["step"])
        rngs = ck.get("rng") or [{"cpu": ck["rng_cpu"], "cuda": ck.get("rng_cuda")}]  # one per rank
        set_rng_state(rngs[env.rank % len(rngs)], device)
        segments = [dict(x) for x in ck.get("segments") or []]
        timing = {**timing, **(ck.get("timing") or {})}
        last_loss = float(ck.get("train_loss", math.nan))
    elif env.rank > 0:
        torch.manual_seed(cfg.seed + 7919 * env.rank)  # same weights (built before), own dropout masks
    if env.is_main:
        segments.append({"start_step": step, "end_step": step, **git_state(), "host": socket.gethostname(),
                         "started": now()})
        dropped = cut_log(run_dir / LOG, step)
        if step or dropped:
            say(f"resuming at step {step}/{total} from {ckpt_path}" if step else "starting at step 0 (no checkpoint)")
        if dropped:
            say(f"log.jsonl cut back to step {step}: {dropped} line(s) of steps after the checkpoint removed "
                f"(they are trained again)")
    if device.type == "cpu":
        keep_host_memory()  # no page faults per step for the activations (benchmark/core/fastpath.py)
    fast = FastPaths.from_config(cfg, device)  # channels_last, fused optimiser, compile (after the checkpoint)
    fast.module(method)
    fast.optimizer(opt)
    step_fn = fast.compile_step(distributed.wrap(method, device, tc.sync_bn))
    sampler = EpochSampler(n, tc.batch_size, cfg.seed, env.rank, env.world_size)
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler,
                        num_workers=loader_workers(cfg.data.num_workers),
                        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False, worker_init_fn=ignore_scheduler_signals,
                        # its own generator: drawing worker seeds from the global one would shift the
                        # dropout stream of a run resumed mid-epoch
                        generator=torch.Generator().manual_seed(cfg.seed))
    use_amp = tc.amp and device.type == "cuda"
    views_per_sample = method.views_needed(cfg.data.seq_len)

    saved_at = step
    diverged: dict | None = None
    t_start, step_start = time.perf_counter(), step

    probe_seconds = 0.0  # spent in the online probes: not training time

    def timing_now() -> dict:
        return {"steps": timing["steps"] + step - step_start,
                "seconds": timing["seconds"] + time.perf_counter() - t_start - probe_seconds}

    def save() -> bool:  # a collective: every rank calls it, rank 0 writes; False: state not finite
        nonlocal saved_at, diverged
        bad = nonfinite(method)  # identical on every rank (DDP keeps the weights in sync)
        if bad:
            diverged = diverged or divergence(step, "parameters", f"NaN/inf in {_names(bad)}")
            return False
        saved_at = step
        rngs = distributed.gather(rng_state(device))
        if env.is_main:
            segments[-1]["end_step"] = step
            atomic_torch_save({"model": method.state_dict(), "optimizer": opt.state_dict(), "step": step,
                               "rng": rngs, "config": to_dict(cfg), "data": data or {}, "segments": segments,
                               "train_loss": last_loss, "timing": timing_now()}, ckpt_path, "checkpoint")
        return True

    # train.logger (benchmark/infra/monitor.py): the values of log.jsonl, live, cut back to this step as log.jsonl was
    monitor = open_monitor(tc.logger, run_dir, step, to_dict(cfg)) if env.is_main else NullMonitor()
    log_file = (run_dir / LOG).open("a") if env.is_main else None

    def write_log(line: dict) -> None:
        try:
            log_file.write(json.dumps(line) + "\n")
            log_file.flush()
            monitor.log(line["step"], scalars(line))
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(run_dir / LOG, "training log", e) from None
            raise

    def probe_online() -> dict[str, float]:  # its time is left out of images/s
        nonlocal probe_seconds
        t = time.perf_counter()
        metrics = online_probes()
        probe_seconds += time.perf_counter() - t
        return metrics

    every = tc.online_probe_every if online_probes is not None and env.is_main else 0
    if every and step == 0 and log_file is not None:  # the random-init reference of the online curves
        write_log({"step": 0, "epoch": 0, **probe_online()})
    bar = Progress(total, f"train {cfg.method}", "step", initial=step, enabled=tc.progress and env.is_main)
    interrupted = False
    polled_at = step
    t_window, step_window = t_start, step
    method.train()
    try:
        while step < total and not interrupted and diverged is None:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, in_epoch)
            batches = iter(loader)
            while step < total and diverged is None:
                d, error = _fetch(batches)
                # polled once per finished step (the fetch of the next batch is "after the step")
                wants_stop = stop_requested is not None and step > polled_at and stop_requested()
                polled_at = step
                stop, failed = distributed.agree(wants_stop, error is not None)
                if failed:  # a data error on any rank stops every rank now, not at the NCCL timeout
                    err = distributed.failure(error)
                    raise error if error is not None else err
                if stop:
                    interrupted = True  # the last step is finished; checkpoint at it (below) and return
                    break
                if d is None:
                    break  # end of the epoch
                lr = warmup_cosine(step, total, warmup, preset["lr"], tc.init_lr,
                                   tc.final_lr if preset["cosine"] else preset["lr"])
                for g in opt.param_groups:
                    g["lr"] = lr
                batch = fast.prepare(to_batch(d).to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = step_fn(batch)
                loss = distributed.mean(out.loss)  # the same on every rank, so all ranks stop together
                if not math.isfinite(loss):
                    diverged = divergence(step + 1, "loss", f"the training loss became {loss} (the update of "
                                                            f"step {step + 1} was not applied)")
                    break
                last_loss = loss
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                step += 1
                method.on_step_end(step, total)
                bar.update(1)
                online = every and (step % every == 0 or step == total)
                if log_file is not None and (step % tc.log_every == 0 or step == total or online):
                    now_t = time.perf_counter()
                    ips = (step - step_window) * tc.batch_size * views_per_sample / max(now_t - t_window, 1e-9)
                    line = {"step": step, "epoch": epoch, "loss": last_loss, "lr": lr, "img_per_s": round(ips, 1),
                            **out.logs}
                    if online:
                        line.update(probe_online())
                        bar.set_postfix(**{k.removeprefix("online_"): v for k, v in line.items()
                                           if k.startswith("online_")}, loss=f"{last_loss:.4f}")
                    else:
                        bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.0f}")
                    t_window, step_window = time.perf_counter(), step  # images/s leaves the probes out
                    write_log(line)
                if step % tc.checkpoint_every == 0 or step == total:
                    save()
        if saved_at != step and (diverged is None or diverged["what"] == "loss"):
            save()  # the stop step, or the last finite step before a non-finite loss
    finally:
        bar.close()
        if log_file is not None:
            try:
                log_file.close()
            except OSError:  # a full disk again: the error that got us here says so
                pass
        try:
            monitor.close()
        except OSError:
            pass
    t = timing_now()
    ips = t["steps"] * tc.batch_size * views_per_sample / t["seconds"] if t["steps"] and t["seconds"] > 0 else math.nan
    if env.is_main:
        segments[-1]["end_step"] = step
    return TrainSummary(step, total, step // steps_per_epoch, last_loss, ips, interrupted, diverged, segments)
