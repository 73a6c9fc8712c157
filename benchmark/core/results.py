"""The result record: one function writes ``<run dir>/result.json``, atomically.

Schema (``SCHEMA_VERSION`` 1): schema_version, method, dataset, seq_len, eval_seq_len, seed, status
("complete", or "diverged" with a ``divergence`` record {step, what, detail} and empty metrics),
run_dir, config (fully resolved), metrics (headline ``top1`` [%], ``knn_top1`` [%] (kNN on the same
representation; optional: results written before it lack it), ``rotation_r2``, ``color_r2`` plus
global-mean variants, per-representation numbers and ``headline_source``), provenance (git commit and
dirty flag, torch/CUDA versions, device, wall time, start/end time, host).
"""

from __future__ import annotations

import json
import math
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.config import RunConfig, to_dict
from benchmark.infra.fileio import atomic_write_text, now  # noqa: F401 - results.now: the same clock as the records

if TYPE_CHECKING:
    import torch

# No torch import at module level: the run directory (benchmark/core/rundir.py) reads results with this module,
# and the aggregator and ``--help`` must not pay for torch. ``provenance`` imports it when it is called.

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


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



def provenance(device: torch.device, start_time: str, wall_time_s: float, extra: dict | None = None) -> dict:
    import torch

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
    torch = sys.modules.get("torch")  # without torch imported there is no tensor to convert
    if torch is not None and isinstance(x, torch.Tensor):
        return x.item()
    if isinstance(x, float) and math.isfinite(x):
        return round(x, 6)
    return x


STATUSES = ("complete", "diverged")  # what a result.json may say; anything else is not a result
REQUIRED = ("schema_version", "method", "dataset", "seq_len", "seed", "status", "config", "metrics", "provenance")


def write_result(run_dir: Path, cfg: RunConfig, metrics: dict, prov: dict, status: str = "complete",
                 divergence: dict | None = None) -> Path:
    """The only writer of result.json. A diverged run has no metrics and says where it diverged."""
    if status not in STATUSES or (status == "diverged") != (divergence is not None):
        raise ValueError(f"result status {status!r} with divergence {divergence!r}")  # a bug, not user input
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
    if divergence is not None:
        record["divergence"] = divergence
    path = Path(run_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps(_json_safe(record), indent=2, sort_keys=False) + "\n", "result")
    return path


def check_result(run_dir: Path) -> tuple[dict | None, str]:
    """(record, "") for a valid result.json; (None, why not) otherwise ("" when there is none at all).

    Valid = a JSON object of this schema version with every required key and a known status. Anything
    else (truncated or hand-edited JSON, ``schema_version`` 0, another version's layout) means the run is
    **not done**: ``benchmark.core.runner``, the launcher and the aggregator all say so and never count it.
    """
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None, ""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"corrupt result.json ({type(e).__name__}: {e})"
    if not isinstance(record, dict):
        return None, "corrupt result.json (not a JSON object)"
    if record.get("schema_version") != SCHEMA_VERSION:
        return None, f"result.json has schema_version {record.get('schema_version')!r}, not {SCHEMA_VERSION}"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return None, f"result.json lacks {', '.join(missing)}"
    if record["status"] not in STATUSES:
        return None, f"result.json has status {record['status']!r} (valid: {', '.join(STATUSES)})"
    if not isinstance(record["metrics"], dict) or not isinstance(record["config"], dict):
        return None, "result.json has malformed config/metrics (not JSON objects)"
    if record["status"] == "diverged" and not isinstance(record.get("divergence"), dict):
        return None, "result.json says diverged but has no divergence record"
    return record, ""


def read_result(run_dir: Path) -> dict | None:
    """The valid result.json of ``run_dir``, or None (missing or not valid: see :func:`check_result`)."""
    return check_result(run_dir)[0]
