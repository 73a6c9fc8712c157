"""The result record: one function writes ``<run dir>/result.json``, atomically.

Schema (``SCHEMA_VERSION`` 1): schema_version, method, dataset, seq_len, eval_seq_len, seed, status,
run_dir, config (fully resolved), metrics (headline ``top1`` [%], ``rotation_r2``, ``color_r2`` plus
global-mean variants, per-representation numbers and ``headline_source``), provenance (git commit and
dirty flag, torch/CUDA versions, device, wall time, start/end time, host).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmark.config import RunConfig, to_dict

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
REPO_ROOT = Path(__file__).resolve().parent.parent


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_state() -> dict:
    """Commit and dirty flag of the seqbench checkout (None when not run from a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def provenance(device: torch.device, start_time: str, wall_time_s: float, extra: dict | None = None) -> dict:
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {
        **git_state(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": str(device),
        "device_name": dev_name,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "start_time": start_time,
        "end_time": now(),
        "wall_time_s": round(wall_time_s, 2),
        **(extra or {}),
    }


def _json_safe(x: Any) -> Any:
    """NaN/inf stay JSON NaN/Infinity (Python's json reads them); tensors become floats."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item()
    if isinstance(x, float) and math.isfinite(x):
        return round(x, 6)
    return x


def write_result(run_dir: Path, cfg: RunConfig, metrics: dict, prov: dict, status: str = "complete") -> Path:
    """The only writer of result.json."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "method": cfg.method,
        "dataset": cfg.dataset,
        "seq_len": cfg.data.seq_len,
        "eval_seq_len": cfg.eval_seq_len if "top1_by_eval_len" in metrics else None,
        "seed": cfg.seed,
        "backbone": cfg.model.get("backbone"),  # model.backbone (None for external encoders)
        "status": status,
        "run_dir": str(run_dir),
        "config": to_dict(cfg),
        "metrics": metrics,
        "provenance": prov,
    }
    path = Path(run_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps(_json_safe(record), indent=2, sort_keys=False) + "\n")
    return path


def read_result(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
