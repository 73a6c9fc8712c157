"""One run directory: its file names, its lock, its config check, its state and the records written in it.

``RunDir(benchmark.config.run_dir(cfg))`` is the only place that knows what a run directory holds:

==================  ==========================================================================================
``config.yaml``     the resolved config, written when the run starts (a record: never read back; a hand edit
                    is refused, see :meth:`RunDir.check_config`)
``checkpoint.pt``   the training state a run resumes from (benchmark/core/trainstate.py writes and reads it)
``log.jsonl``       one JSON line per logged training step (benchmark/core/steplog.py)
``result.json``     the result record, written by ``benchmark.core.results.write_result`` alone
``result.json.invalid``  an unreadable result.json, kept aside when the run runs again
``submission.json`` which SLURM job the launcher last submitted for the run (slurm/launch.py)
``.lock``           held (``fcntl.flock``) by the process running or evaluating the run; says "host, pid"
==================  ==========================================================================================

States (:meth:`RunDir.state`), in the order they are decided:

* ``finished``: a valid result.json with status "complete" (``benchmark.core.results.check_result``);
* ``diverged``: a valid result.json with status "diverged" (NaN/inf ended the run; no metrics);
* ``running``: another process holds the lock;
* ``interrupted``: training started (a checkpoint or a log) but there is no valid result: the same
  command resumes it;
* ``invalid``: an unreadable or foreign result.json and nothing else: the run runs again;
* ``new``: nothing to resume and no result (config.yaml alone counts as new).

No torch import: the launcher and the aggregator ask this module without paying for torch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.config import RunConfig, config_diff, run_dir, semantic, to_dict
from benchmark.core.results import RESULT_FILE, check_result, write_result
from benchmark.infra import yamlio
from benchmark.infra.errors import SeqbenchError
from benchmark.infra.fileio import atomic_write_text, exclusive_lock

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
LOCK_FILE = ".lock"  # held (fcntl.flock) by the process running the run; says "host, pid"
SUBMISSION_FILE = "submission.json"  # which job the launcher last submitted for the run
INVALID_SUFFIX = ".invalid"  # an unreadable result.json is kept as result.json.invalid when the run re-runs
STATES = ("new", "running", "interrupted", "finished", "diverged", "invalid")


@dataclass(frozen=True)
class RunDir:
    """The run directory at ``path`` (it need not exist yet)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, cfg: RunConfig) -> RunDir:
        """The run directory ``cfg`` identifies (``benchmark.config.run_dir``)."""
        return cls(run_dir(cfg))

    # ------------------------------------------------------------------------------------ files
    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def result(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def submission(self) -> Path:
        return self.path / SUBMISSION_FILE

    # ------------------------------------------------------------------------------------ state
    def check_result(self) -> tuple[dict | None, str]:
        """(record, "") for a valid result.json; (None, why not) otherwise ("" when there is none)."""
        return check_result(self.path)

    def read_result(self) -> dict | None:
        return self.check_result()[0]

    def trained(self) -> bool:
        """Training started here: a checkpoint or a log exists."""
        return self.checkpoint.is_file() or self.log.is_file()

    def state(self) -> str:
        """One of :data:`STATES` (see the module docstring for what each means)."""
        record, why = self.check_result()
        if record is not None:
            return "diverged" if record["status"] == "diverged" else "finished"
        if self.lock_holder() is not None:
            return "running"
        if self.trained():
            return "interrupted"
        return "invalid" if why else "new"

    def lock_holder(self) -> str | None:
        """"host, pid, since ..." of the process holding the lock, or None if nobody holds it.

        A lock file left by a killed process (``kill -9`` cannot remove it) is not held: the probe takes
        the lock for an instant and lets it go, without removing or writing anything.
        """
        import fcntl

        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return self.lock_file.read_text().strip() or "holder unknown"
            except OSError:
                return "holder unknown"
        except OSError:  # no lock support on this filesystem: nobody can be seen holding it
            return None
        finally:
            os.close(fd)  # releases the probe's flock, if it got it
        return None

    def last_logged_step(self) -> str:
        """The step of the last line of log.jsonl ("0" without lines, "?" if unreadable)."""
        try:
            lines = [ln for ln in self.log.read_text().splitlines() if ln.strip()]
            return str(json.loads(lines[-1])["step"]) if lines else "0"
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return "?"

    # ------------------------------------------------------------------------------------ lock
    def lock(self, what: str, wait_s: float = 0.0,
             on_wait: Callable[[str], None] | None = None) -> AbstractContextManager[None]:
        """``with rd.lock(f"run {path}"):`` one process at a time; :class:`benchmark.infra.fileio.LockHeld` names
        the holder when another process keeps it for longer than ``wait_s`` (``fileio.exclusive_lock``)."""
        return exclusive_lock(self.lock_file, what, wait_s, on_wait)

    # ------------------------------------------------------------------------------------ records
    def start(self, cfg: RunConfig, force: bool, log: Callable[[str], None]) -> dict | None:
        """Under the lock, before training: the valid result if another process finished the run meanwhile
        (unless ``force``); else clear a forced run, keep an unreadable result aside, check and write
        config.yaml, and return None."""
        record, why = self.check_result()
        if record is not None and not force:
            return record
        if force:
            for f in (self.result, self.checkpoint, self.log):
                f.unlink(missing_ok=True)
        elif why:
            self.set_invalid_aside()
        self.check_config(cfg, force, log)
        self.write_config(cfg)
        return None

    def set_invalid_aside(self) -> None:
        """Keep an unreadable result.json as result.json.invalid (a new result would overwrite it)."""
        os.replace(self.result, self.path / f"{RESULT_FILE}{INVALID_SUFFIX}")

    def write_config(self, cfg: RunConfig) -> Path:
        return atomic_write_text(self.config, yamlio.dump(to_dict(cfg)), "config")

    def check_config(self, cfg: RunConfig, force: bool, log: Callable[[str], None]) -> None:
        """config.yaml records the run's settings and is never read back: a hand edit is refused, not lost."""
        path = self.config
        if force or not path.is_file():
            return
        fix = (f"seqbench writes config.yaml to record a run's settings and never reads it back, so an edit there "
               f"does not change the run; it was left as it is. Pass other settings with --set KEY=VALUE or --config "
               f"FILE (they get their own run directory); to discard the edit, delete {path} (or re-run with --force "
               f"to start the run over)")
        try:
            old = yamlio.load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise SeqbenchError(f"{path} cannot be read ({type(e).__name__}); {fix}") from None
        new = json.loads(json.dumps(to_dict(cfg)))
        if not isinstance(old, dict):
            raise SeqbenchError(f"{path} does not hold a config mapping; {fix}")
        diff = config_diff(semantic(old), semantic(new), "config.yaml", "this command")
        if diff:
            more = f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""
            raise SeqbenchError(f"{path} differs from this command's config in {'; '.join(diff[:8])}{more}. {fix}")
        other = config_diff(old, new, "config.yaml", "now")
        if other:
            log(f"config.yaml updated in fields that do not change the run: {'; '.join(other)}")

    def write_result(self, cfg: RunConfig, metrics: dict, prov: dict) -> Path:
        """result.json of a finished run (through ``benchmark.core.results.write_result``, its one writer)."""
        return write_result(self.path, cfg, metrics, prov)

    def write_divergence(self, cfg: RunConfig, prov: dict, divergence: dict) -> Path:
        """result.json of a diverged run: status "diverged", the divergence record, no metrics."""
        return write_result(self.path, cfg, {}, prov, "diverged", divergence)

    def read_submission(self) -> dict:
        """submission.json as a mapping ({} if missing or unreadable)."""
        try:
            data = json.loads(self.submission.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_submission(self, record: dict) -> Path:
        record = {**record, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return atomic_write_text(self.submission, json.dumps(record) + "\n", "submission record")
