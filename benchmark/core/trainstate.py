"""The training state a run resumes from: ``checkpoint.pt`` of its run directory, written and read here.

(benchmark/tools/checkpoint_formats.py is something else: it reads and writes encoders in other tools' layouts.)

A checkpoint holds only tensors and plain containers: model, optimiser, step, every rank's RNG state,
the config, data digests, resume segments, the last loss and the training time. It is read with
``torch.load(weights_only=True)``, so a file carrying pickled code is refused, never executed. Resuming
checks the checkpoint's config and data digests against the current ones, so a run never mixes two
configurations or two datasets.

:class:`Checkpointer` saves every ``train.checkpoint_every`` steps, at the last step and at the step a
stop request ended training at; before each save the weights are checked for NaN/inf
(``benchmark.core.divergence``), so a non-finite state is never saved. Saving is a collective under data
parallelism (every rank calls it; rank 0 writes), and atomic (``benchmark.infra.fileio.atomic_torch_save``):
a kill mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import math
import pickle
import socket
from pathlib import Path

import torch

from benchmark.config import RunConfig, config_diff, semantic, to_dict
from benchmark.core.divergence import DivergenceWatch
from benchmark.core.results import git_state, now
from benchmark.core.rundir import RunDir
from benchmark.core.steplog import TrainClock
from benchmark.infra import distributed
from benchmark.infra.errors import SeqbenchError
from benchmark.infra.fileio import atomic_torch_save
from methods.contract import Method

CHECKPOINT_KEYS = ("model", "optimizer", "step", "config")  # and "rng" (or the older "rng_cpu")
FIX = "delete it to restart the run from step 0, or re-run with --force"


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
                                f"was not written by seqbench (or was tampered with); {FIX}") from None
        raise SeqbenchError(f"{where} cannot be unpickled ({text.splitlines()[0] if text else e!r}); {FIX}") from None
    except Exception as e:  # truncated or foreign file: say so instead of a zip/pickle traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SeqbenchError(f"{where} cannot be read ({type(e).__name__}: {first}); the file is truncated or "
                            f"not a seqbench checkpoint; {FIX}") from None
    if not isinstance(ck, dict):
        raise SeqbenchError(f"{where} holds a {type(ck).__name__}, not a seqbench checkpoint; {FIX}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck] + ([] if "rng" in ck or "rng_cpu" in ck else ["rng"])
    if missing:
        raise SeqbenchError(f"{where} lacks {', '.join(repr(k) for k in missing)} (it has "
                            f"{', '.join(map(repr, ck)) or 'nothing'}), so the run cannot resume from it "
                            f"exactly: it was not written by seqbench's training loop, or was edited; {FIX}")
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


def restore(method: Method, opt: torch.optim.Optimizer, ck: dict, path: Path) -> None:
    """Load the checkpoint's model and optimiser states; a one-paragraph error if they do not fit."""
    try:
        method.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SeqbenchError(f"checkpoint {path} does not fit the {type(method).__name__} model ({first[:300]}); "
                            f"{FIX}") from None
    try:
        opt.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError, TypeError) as e:
        raise SeqbenchError(f"checkpoint {path} holds an optimiser state that does not fit this model ({e}); "
                            f"{FIX}") from None


class Checkpointer:
    """Resumes a run from its checkpoint and saves its training state (see the module docstring).

    ``step`` is the last finished step and ``loss`` its loss (the checkpoint's until this start trains
    one); ``segments`` lists every start of the run (start/end step, git commit, host).
    """

    def __init__(self, rd: RunDir, cfg: RunConfig, method: Method, opt: torch.optim.Optimizer,
                 device: torch.device, total: int, watch: DivergenceWatch, clock: TrainClock,
                 data: dict | None = None) -> None:
        self.rd, self.cfg, self.method, self.opt, self.device = rd, cfg, method, opt, device
        self.total, self.every, self.data = total, cfg.train.checkpoint_every, data
        self.watch, self.clock = watch, clock
        self.step = self.saved_at = 0
        self.loss = math.nan
        self.segments: list[dict] = []

    def resume(self) -> int:
        """Restore model, optimiser, RNG and timing from checkpoint.pt if there is one; the step to start at.

        Rank 0 opens a new segment. Without a checkpoint, ranks > 0 reseed: same weights (built before),
        their own dropout masks.
        """
        env, path = distributed.current(), self.rd.checkpoint
        if path.is_file():
            ck = load_checkpoint(path)
            check_resumable(ck, self.cfg, self.data, path)
            restore(self.method, self.opt, ck, path)
            self.step = self.saved_at = int(ck["step"])
            rngs = ck.get("rng") or [{"cpu": ck["rng_cpu"], "cuda": ck.get("rng_cuda")}]  # one per rank
            set_rng_state(rngs[env.rank % len(rngs)], self.device)
            self.segments = [dict(x) for x in ck.get("segments") or []]
            self.clock.carry(ck.get("timing"))
            self.loss = float(ck.get("train_loss", math.nan))
        elif env.rank > 0:
            torch.manual_seed(self.cfg.seed + 7919 * env.rank)
        if env.is_main:
            self.segments.append({"start_step": self.step, "end_step": self.step, **git_state(),
                                  "host": socket.gethostname(), "started": now()})
        return self.step

    def maybe_save(self, step: int, loss: float) -> bool:
        """Step ``step`` finished with ``loss``: save if it is due. False if the weights hold NaN/inf."""
        self.step, self.loss = step, loss
        if step % self.every == 0 or step == self.total:
            return self.save()
        return True

    def save(self) -> bool:
        """Save the state at ``step`` (a collective: every rank calls it, rank 0 writes); False, and nothing
        saved, if it is not finite."""
        if not self.watch.check_state(self.step, self.method):
            return False
        self.saved_at = self.step
        rngs = distributed.gather(rng_state(self.device))
        if distributed.current().is_main:
            self.segments[-1]["end_step"] = self.step
            atomic_torch_save({"model": self.method.state_dict(), "optimizer": self.opt.state_dict(),
                               "step": self.step, "rng": rngs, "config": to_dict(self.cfg), "data": self.data or {},
                               "segments": self.segments, "train_loss": self.loss,
                               "timing": self.clock.total(self.step)}, self.rd.checkpoint, "checkpoint")
        return True

    def finish(self) -> None:
        """After the loop: save the step it ended at (a stop, or the last finite step before a NaN/inf
        loss) unless saved already or the weights diverged; close this start's segment."""
        if self.saved_at != self.step and self.watch.keeps_last_state:
            self.save()
        if distributed.current().is_main:
            self.segments[-1]["end_step"] = self.step
