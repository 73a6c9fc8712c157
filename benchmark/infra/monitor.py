"""Live monitoring: the values of every log.jsonl line, sent to the logger ``train.logger`` names.

=============  ========================================================================================
none           log.jsonl only (the default)
csv            ``<run dir>/metrics.csv``: one row per log point, a header of every key seen (a key that
               first appears later rewrites the file with the wider header); ``pandas.read_csv`` reads it
tensorboard    event files in ``<run dir>/tensorboard`` (``torch.utils.tensorboard.SummaryWriter``):
               ``tensorboard --logdir results/runs`` shows every run; tags ``train/<key>``, ``online/<probe>``
wandb          Weights & Biases, if ``import wandb`` works: offline unless ``$WANDB_MODE`` says otherwise
               (``wandb sync`` uploads later), files in ``<run dir>/wandb``, project ``$WANDB_PROJECT``
               (default seqbench); a resume continues the W&B run, a fresh start opens a new one
=============  ========================================================================================

The logger does not change what is computed (``train.logger`` is outside the run identity). On a
resume the training loop cuts log.jsonl back to the checkpoint's step and trains the later steps
again; the loggers forget those steps too (csv rows dropped, tensorboard events purged) so that every
step appears once. A fresh start (step 0) clears what an earlier attempt left.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from benchmark.infra.errors import ConfigError
from benchmark.infra.fileio import atomic_write_text

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
LOGGERS = ("none", "csv", "tensorboard", "wandb")


class Monitor(Protocol):
    """Receives the numeric values of each log point; the training loop's rank 0 alone holds one."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def scalars(line: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a log.jsonl line, ``step`` left out (it is the x axis)."""
    return {k: v for k, v in line.items() if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


def tag(key: str) -> str:
    """Dashboard name of a key: online probes under ``online/``, the rest under ``train/``."""
    return f"online/{key.removeprefix('online_')}" if key.startswith("online_") else f"train/{key}"


class NullMonitor:
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class CsvMonitor:
    """``metrics.csv``: columns ``step`` then every key in the order first seen; a blank cell = not logged then."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.fields: list[str] = ["step"]
        self.rows: list[dict[str, str]] = []
        if path.is_file() and resume_step > 0:  # a fresh start keeps nothing (as train.cut_log)
            text = path.read_text(errors="replace")
            complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]  # drop a half-written row
            reader = csv.DictReader(io.StringIO(complete))
            self.fields = list(reader.fieldnames or ["step"])
            for row in reader:
                row.pop(None, None)  # cells beyond the header: a damaged row
                try:
                    if int(row["step"]) <= resume_step:
                        self.rows.append(row)
                except (KeyError, TypeError, ValueError):
                    pass
        self._rewrite()

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.fields, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue(), "metrics.csv")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": str(step), **{k: str(v) if isinstance(v, int) else repr(float(v)) for k, v in metrics.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.fields]
        if new:
            self.fields += new
            self._rewrite()
            return
        buf = io.StringIO()
        csv.DictWriter(buf, self.fields, restval="", lineterminator="\n").writerow(row)
        with self.path.open("a") as f:
            f.write(buf.getvalue())

    def close(self) -> None:
        pass


class TensorBoardMonitor:
    """Scalars in ``<run dir>/tensorboard``; a resume at step s hides the events of steps > s written before."""

    def __init__(self, log_dir: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if resume_step == 0 and log_dir.is_dir():
            shutil.rmtree(log_dir)  # an earlier attempt's curves: the run starts over
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step > 0 else None)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(tag(k), v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def require_wandb() -> Any:
    """The ``wandb`` module, or a ConfigError saying how to get it (checked when the config is validated)."""
    try:
        import wandb
    except Exception as e:  # ImportError, or a broken install failing inside its own import
        raise ConfigError(f"train.logger=wandb needs the wandb package, which cannot be imported here "
                          f"({type(e).__name__}: {e}); install it with `pip install wandb`, or pick another "
                          f"logger: --set train.logger=tensorboard (or csv, or none)") from None
    return wandb


class WandbMonitor:
    """A W&B run under ``<run dir>/wandb``; a resumed run continues the W&B run it started (id kept in RUN_ID_FILE),
    a fresh start opens a new one (W&B cannot take back the steps an earlier attempt logged)."""

    RUN_ID_FILE = "seqbench-run-id"

    def __init__(self, run_dir: Path, config: dict, resume_step: int) -> None:
        wandb = require_wandb()
        id_file = run_dir / WANDB_DIR / self.RUN_ID_FILE
        run_id = id_file.read_text().strip() if resume_step > 0 and id_file.is_file() else ""
        if not run_id:
            run_id = f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
            id_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(id_file, run_id + "\n", "W&B run id")
        # dir: wandb writes into <dir>/wandb, next to our id file
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "seqbench"), name="/".join(run_dir.parts[-4:]),
                              id=run_id, resume="allow", dir=str(run_dir),
                              mode=os.environ.get("WANDB_MODE", "offline"), config=config)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log({tag(k): v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_monitor(kind: str, run_dir: Path, resume_step: int, config: dict | None = None) -> Monitor:
    """The ``train.logger`` monitor of ``run_dir``, set up for a (re)start at ``resume_step``."""
    if kind == "none":
        return NullMonitor()
    if kind == "csv":
        return CsvMonitor(run_dir / CSV_FILE, resume_step)
    if kind == "tensorboard":
        return TensorBoardMonitor(run_dir / TENSORBOARD_DIR, resume_step)
    if kind == "wandb":
        return WandbMonitor(run_dir, config or {}, resume_step)
    raise ConfigError(f"train.logger {kind!r} is not one of {', '.join(LOGGERS)}")
