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

# Every key a result.json ``metrics`` record may hold, with its meaning: ``<target>`` is a probe target of the
# dataset (rotation, color, indiv_rotation on 3DIEBench; augmentation parameters or fixation shifts on the image
# datasets), ``<rep>`` a representation the method declares (encoder, aggregate, inv, equi, ...), ``<metric>`` any
# scalar key above. docs/protocol.md's table is generated from this (python -m benchmark.tools.docgen) and
# tests/test_result_keys.py checks real runs against it, so a new key cannot land undocumented.
METRIC_KEYS: dict[str, str] = {
    "top1": "linear-probe top-1 (%) of the headline invariant representation (at M_val = probe.eval_seq_len "
            "for sequence methods)",
    "top1_by_eval_len": "{M_val: top-1 (%)} for every probe.eval_seq_lens (sequence methods)",
    "knn_top1": "k-nearest-neighbour top-1 (%) on the same features (probe.knn_k, probe.knn_t)",
    "<target>_r2": "equivariance probe R^2 of a target, mean of per-dimension R^2 (the headline definition)",
    "<target>_r2_global": "the same probe scored as 1 - SSE/SST about one mean over all dimensions",
    "headline_source": "{headline metric: the representation it was read from}",
    "per_representation": "{representation: every probe figure}: the headline numbers come from here",
    "probe_protocol": "how the probes were fitted and scored (the heads' optimiser, views, splits), in words",
    "probe_preset": "the probe.preset used (sie or seqjepa)",
    "probe_fit": "the probe fitting settings as used (optimiser, lr, weight decay, batch, epochs, views, kNN) "
                 "and which of them were set explicitly",
    "probe_samples": "objects (and view-bank sizes) the probes were fitted and scored on",
    "path_r2": "path-integration R^2 at M_val (M = 2 when M_val = 1), datasets with a path composition",
    "path_r2_by_eval_len": "{M: path-integration R^2 (per-dimension mean)}",
    "path_r2_global_by_eval_len": "{M: path-integration R^2, global definition}",
    "path_r2_no_vision_by_eval_len": "{M: R^2 from the actions alone} (action-conditioned methods)",
    "path_source": "the representation the path probe read",
    "path_protocol": "how the path probe was fitted, in words",
    "context_len": "ContextSSL-style methods: context pairs c before each query (the paper row's c, capped)",
    "context_env": "the environment of the context (rot, color, none)",
    "context_top1": "top-1 (%) of the context representation (the transformer output for a query)",
    "context_<target>_r2": "R^2 of the context representation, global definition (upstream's r2_score; "
                           "the number compared with the published one)",
    "context_<target>_r2_per_dim": "the same, mean of per-dimension R^2",
    "context_protocol": "how the context representation was built and probed, in words",
    "health_<rep>_effective_rank": "effective rank (exp of the entropy of the normalised singular values) of a "
                                   "probed representation's training features",
    "health_<rep>_std": "per-dimension std of the L2-normalised features times sqrt(D) (1 when spread, 0 collapsed)",
    "collapsed": "true when a headline representation breaks the collapse rule (docs/protocol.md §8)",
    "collapse_reason": "which representation and figure broke the rule (\"\" when healthy)",
    "health_rule": "the collapse rule and its thresholds, in words",
    "val_<metric>": "the same figure on the validation split carved from the training objects "
                    "(probe.validation_objects > 0; for per-method selection, never the held-out objects)",
    "validation": "the validation split used for val_* (objects, per class, fit objects)",
    "train_loss_final": "training loss at the last step (null at random init: train.epochs = 0)",
    "images_per_s": "training throughput, probes excluded (null at random init; varies with the machine)",
}


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
