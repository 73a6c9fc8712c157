"""Launch a sweep: ``python -m slurm.launch --sweep NAME [--dry-run] [--cluster PRESET] [--only 0,3,5-9]``.

Every selected run of the sweep (``benchmark/core/sweeps.py`` or a YAML file) is resolved first, so a bad
sweep, setting, preset or a missing ``sbatch`` fails before anything is submitted. Runs with a valid
result.json are skipped, as are runs whose earlier submission is still queued or running; the rest
go out as one SLURM job array through submitit (``--executor slurm``), or run on this machine
(``local``: subprocesses, ``debug``: in this process). Each job is a :class:`slurm.job.RunJob`, which
resumes from the run directory's checkpoint and requeues itself on timeout or preemption.

Failing closed: if ``squeue`` exists but fails, nothing is submitted (queued runs would look
unfinished and be submitted twice). A launch holds the sweep lock ``<out>/<sweep>/.launch.lock``, and
writes each run's ``submission.json`` atomically: state "submitting" before sbatch, "submitted" with
the job id after it. A launch killed in between leaves "submitting"; the next launch treats such a run
as possibly queued while any job named after the sweep is live in squeue.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import submitit

from benchmark.config import Overrides, RunConfig, from_dict, layer, load_yaml, merge, set_overrides, stack
from benchmark.core import sweeps
from benchmark.core.rundir import SUBMISSION_FILE as SUBMISSION_FILE  # noqa: F401 - named by tests and docs
from benchmark.core.rundir import RunDir
from benchmark.infra.errors import ConfigError, DataError, SeqbenchError, user_message
from benchmark.infra.fileio import LockHeld, exclusive_lock

# Modules that import torch (benchmark.core.results, benchmark.core.train, slurm.job) are imported where they are
# used, so that `--help` answers at once (benchmark.infra.fileio imports no torch).

CLUSTERS_DIR = Path(__file__).resolve().parent / "clusters"
LAUNCH_LOCK = ".launch.lock"  # in <out>/<sweep>/: one launch of a sweep at a time


@dataclass(frozen=True)
class ClusterPreset:
    """Resources of every job of a sweep (slurm/clusters/*.yaml; keys explained in slurm/README.md)."""

    partition: str | None  # None = the cluster's default partition
    gpus_per_node: int  # 0 = request no GPU at all
    cpus_per_task: int
    mem_gb: int
    timeout_min: int
    account: str | None = None
    qos: str | None = None
    tasks_per_node: int | None = None  # None = one task per GPU (DDP), or 1 without GPUs
    array_parallelism: int = 8  # runs of the array that may run at once
    signal_delay_s: int = 90  # submitit's default: requeue signal 90 s before the time limit
    max_num_timeout: int = 3  # requeues after hitting the time limit (preemptions do not count)
    constraint: str | None = None
    additional: dict = field(default_factory=dict)  # other sbatch options
    setup: tuple[str, ...] = ()  # shell lines run before the job
    description: str = ""

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


REQUIRED = [f.name for f in fields(ClusterPreset) if f.default is MISSING and f.default_factory is MISSING]


def load_preset(name_or_path: str, overrides: dict) -> ClusterPreset:
    """A preset by name (slurm/clusters/NAME.yaml) or path, with CLI ``overrides`` applied."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = CLUSTERS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in CLUSTERS_DIR.glob("*.yaml")))
            raise ConfigError(f"unknown cluster preset {name_or_path!r}; presets: {known} (or a YAML file path)")
    data = merge(load_yaml(path), overrides)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"cluster preset {path} lacks the required key(s) {', '.join(missing)}; every preset sets "
                          f"{', '.join(REQUIRED)} (partition: null = the cluster's default; see slurm/README.md)")
    preset = from_dict(ClusterPreset, data, source=f"cluster preset {path}")
    _check_control_characters(preset, path)
    for k in ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism"):
        if getattr(preset, k) < (0 if k == "gpus_per_node" else 1):
            raise ConfigError(f"cluster preset {path}: {k} must be >= {0 if k == 'gpus_per_node' else 1}")
    return preset


def _check_control_characters(preset: ClusterPreset, path: Path) -> None:
    """Preset strings end up in the sbatch script, one per line: a newline in one would end the
    ``#SBATCH`` header early (sbatch stops reading directives at the first command, so the requeue
    signal would be lost) or inject a command."""
    def strings(value: Any, where: str):
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from strings(k, f"{where} key")
                yield from strings(v, f"{where}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                yield from strings(v, f"{where}[{i}]")

    for f in fields(ClusterPreset):
        if f.name == "description":
            continue
        for where, text in strings(getattr(preset, f.name), f.name):
            bad = [c for c in text if ord(c) < 32 or ord(c) == 127]
            if bad:
                raise ConfigError(f"cluster preset {path}: {where} = {text!r} contains a control character "
                                  f"({', '.join(sorted({repr(c) for c in bad}))}); preset values are written into "
                                  f"the sbatch script one per line, so a newline would end its #SBATCH header "
                                  f"(losing the requeue signal) or inject a command. Use one plain line")


def executor_parameters(preset: ClusterPreset, job_name: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters; slurm_* ones are ignored by the local and debug executors."""
    params: dict[str, Any] = {
        "name": job_name, "timeout_min": preset.timeout_min, "nodes": 1, "tasks_per_node": preset.tasks,
        "cpus_per_task": preset.cpus_per_task, "mem_gb": preset.mem_gb,
        "slurm_array_parallelism": preset.array_parallelism, "slurm_signal_delay_s": preset.signal_delay_s,
    }
    if preset.gpus_per_node > 0:  # a GPU-less node rejects even an explicit request for GPUs
        params["gpus_per_node"] = preset.gpus_per_node
    optional = {"slurm_partition": preset.partition, "slurm_account": preset.account, "slurm_qos": preset.qos,
                "slurm_constraint": preset.constraint, "slurm_additional_parameters": preset.additional or None,
                "slurm_setup": list(preset.setup) or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


# ---------------------------------------------------------------------------------------- run status
def parse_only(spec: str, n: int) -> list[int]:
    """``"0,3,5-9"`` -> [0, 3, 5, 6, 7, 8, 9] (each index < n)."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(f"--only {spec!r}: expected indices and ranges like 0,3,5-9")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo > hi or hi >= n:
            raise ConfigError(f"--only {spec!r}: {part.strip()} is not within the sweep's runs 0-{n - 1}")
        out += [i for i in range(lo, hi + 1) if i not in out]
    return out


class SlurmQueryError(SeqbenchError):
    """squeue exists but did not answer: which runs are queued is unknown, so nothing may be submitted."""


def live_slurm_jobs() -> dict[str, str] | None:
    """Job id -> state of every queued/running SLURM job (array tasks as ``123_4``); None without squeue.

    Raises :class:`SlurmQueryError` if squeue is installed but fails (fail closed).
    """
    jobs = _squeue()
    return None if jobs is None else {job: state for job, (state, _name) in jobs.items()}


def live_sweep_jobs(name: str) -> list[str]:
    """Ids of the queued/running jobs named ``name`` (the launcher names a sweep's array after it)."""
    return [job for job, (_state, job_name) in (_squeue() or {}).items() if job_name == name]


def _squeue() -> dict[str, tuple[str, str]] | None:
    if shutil.which("squeue") is None:
        return None
    cmd = ["squeue", "-h", "-r", "-o", "%i %T %j"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmQueryError(f"squeue did not answer ({type(e).__name__}: {e}); without it the launcher cannot "
                              f"tell which runs are already queued or running, so nothing was submitted. "
                              f"Retry when `squeue` works (check `squeue --me` and the SLURM controller)") from None
    if res.returncode != 0:
        said = (res.stderr.strip() or res.stdout.strip() or "no message").splitlines()[-1][:300]
        raise SlurmQueryError(f"squeue failed (exit {res.returncode}: {said}); without it the launcher cannot tell "
                              f"which runs are already queued or running, so nothing was submitted. Retry when "
                              f"`squeue` works (check `squeue --me` and the SLURM controller)")
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return out


def run_status(directory: Path, live: dict[str, str] | None, sweep_jobs: list[str] | None = None) -> str:
    """done | diverged | queued/running (job id) | submitting? | partial (last logged step) | pending.

    queued/running needs the job id the launcher recorded in the run directory and squeue to see it.
    A result.json that is corrupt or of another schema does not count as done (the status says why).
    "submitting?" is a run whose last launch died between its marker and sbatch while jobs named after
    the sweep (``sweep_jobs``) are live: possibly queued, so not submitted again.
    """
    rd = RunDir(directory)
    record, invalid = rd.check_result()
    if record is not None:
        return "diverged" if record["status"] == "diverged" else "done"
    note = f"; {invalid}, not done" if invalid else ""
    sub = rd.read_submission()
    if live is not None and sub.get("job_id") in live:  # a requeued job is PENDING again
        job_id = sub["job_id"]
        state = {"PENDING": "queued", "REQUEUED": "queued", "CONFIGURING": "running", "COMPLETING": "running"}
        return f"{state.get(live[job_id], live[job_id].lower())} ({job_id})"
    if sub.get("state") == "submitting" and sweep_jobs:
        return f"submitting? (an interrupted launch; live jobs of this sweep: {', '.join(sweep_jobs[:3])})"
    if rd.trained():
        return f"partial (step {rd.last_logged_step()}{note})"
    return f"pending{' (' + note[2:] + ')' if note else ''}"


def submittable(status: str) -> bool:
    return status.startswith(("pending", "partial"))


def print_table(sweep: sweeps.Sweep, indices: list[int], cfgs: dict[int, RunConfig], status: dict[int, str],
                log=print) -> None:
    keys = sweep.varying_keys()
    rows = [(str(i), status[i], sweeps.describe(sweep[i], keys) or "-", str(RunDir.of(cfgs[i]).path))
            for i in indices]
    head = ("idx", "status", "settings", "run directory")
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(3)]
    for r in [head, *rows]:
        log("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)) + "  " + r[3])


# ---------------------------------------------------------------------------------------- launch
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slurm.launch",
                                description="Run a sweep as a SLURM job array (or here); done runs are skipped.",
                                epilog=f"named sweeps: {', '.join(sweeps.SWEEPS)}; cluster presets: "
                                       f"{', '.join(sorted(x.stem for x in CLUSTERS_DIR.glob('*.yaml')))}")
    p.add_argument("--sweep", required=True, help="a named sweep or a sweep YAML file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs (directory, status), the resources and GPU-hours they would take, and check "
                        "their data; submit nothing")
    p.add_argument("--only", help="run indices to consider, e.g. 0,3,5-9 (default: all)")
    p.add_argument("--executor", choices=("slurm", "local", "debug"), default="slurm",
                   help="slurm: job array via sbatch; local: subprocesses here; debug: in this process, one run "
                        "after another, and on an error it opens a pdb post-mortem prompt at the failing line "
                        "(ipdb with PYTHONBREAKPOINT=ipdb.set_trace; q continues): for interactive debugging only")
    p.add_argument("--cluster", default="local", help="preset name in slurm/clusters/ or a YAML file (default local)")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--gpus", type=int, dest="gpus_per_node", help="GPUs per job (= DDP processes)")
    g.add_argument("--cpus", type=int, dest="cpus_per_task", help="CPUs per task")
    g.add_argument("--mem-gb", type=int, dest="mem_gb")
    g.add_argument("--time", type=int, dest="timeout_min", help="time limit per job, minutes")
    g.add_argument("--array-parallelism", type=int, dest="array_parallelism")
    g.add_argument("--signal-delay", type=int, dest="signal_delay_s", help="seconds before the limit to requeue")
    r = p.add_argument_group("overrides of every run")
    r.add_argument("--out", help="parent of run directories (default: <repo>/results/runs)")
    r.add_argument("--data-root", help="dataset root")
    r.add_argument("--device", help="cpu | cuda | auto")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field; changes the run identity unless it is out/device/data.root/...")
    p.add_argument("--logs", help="submitit folder (default: <out>/../submitit/<sweep>/<launch time>)")
    p.add_argument("--wait", action="store_true", help="wait for the jobs and report how they ended")
    return p


@dataclass
class Launch:
    """What a launch did: the jobs it submitted (index -> job) and the final status table."""

    sweep: sweeps.Sweep
    jobs: dict[int, Any] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # index -> status (done, queued, running)
    failed: list[int] = field(default_factory=list)  # known only when waited for


def run_overrides(args: argparse.Namespace) -> Overrides:
    """``--out``, ``--device``, ``--data-root`` and ``--set`` (later wins), each named as its flag in errors."""
    from benchmark.core.results import REPO_ROOT

    out = Path(args.out).resolve() if args.out else REPO_ROOT / "results" / "runs"
    flags = [layer({"out": str(out)}, "--out")]  # absolute: jobs may start in another directory
    if args.device:
        flags.append(layer({"device": args.device}, "--device"))
    if args.data_root:
        flags.append(layer({"data": {"root": str(Path(args.data_root).resolve())}}, "--data-root"))
    return stack(*flags, set_overrides(args.set))


def preset_overrides(args: argparse.Namespace) -> dict:
    names = ("partition", "account", "qos", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
             "array_parallelism", "signal_delay_s")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def check_executor(kind: str) -> None:
    if kind == "slurm":
        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if missing:
            raise SeqbenchError(f"{' and '.join(missing)} not found on PATH: --executor slurm must run where SLURM's "
                                f"client commands are (a login node). To run here instead, use --executor local")


# ---------------------------------------------------------------------------------------- pre-submit report
def resources(preset: ClusterPreset, executor: str, n_jobs: int) -> list[str]:
    """What the submission would ask for: the resource lines of the dry-run and of every launch."""
    hours = preset.timeout_min / 60
    if executor != "slurm":
        at_once = 1 if executor == "debug" else preset.array_parallelism
        return [f"resources: --executor {executor} runs {n_jobs} run(s) on this machine, {at_once} at a time "
                f"(time limit {preset.timeout_min} min each); no SLURM resources are requested"]
    partition = preset.partition or "(the cluster's default partition)"
    gpus = f"{preset.gpus_per_node} GPU(s)" if preset.gpus_per_node else "no GPU"
    extra = ", ".join(f"{k} {v}" for k, v in (("account", preset.account), ("qos", preset.qos),
                                                ("constraint", preset.constraint)) if v)
    lines = [f"resources: partition {partition}; per job {gpus}, {preset.tasks} task(s) x {preset.cpus_per_task} "
             f"CPU(s), {preset.mem_gb} GB, time limit {preset.timeout_min} min ({hours:g} h)"
             + (f"; {extra}" if extra else ""),
             f"job array: {n_jobs} task(s), at most {preset.array_parallelism} running at once; a task that hits "
             f"the time limit is requeued up to {preset.max_num_timeout} time(s) and resumes from its checkpoint"]
    if preset.gpus_per_node:
        bound = n_jobs * preset.gpus_per_node * hours
        lines.append(f"estimated GPU-hours: at most {bound:g} for one pass ({n_jobs} job(s) x {preset.gpus_per_node} "
                     f"GPU(s) x {hours:g} h time limit); each requeue after a time limit can add up to that again")
    else:
        cpu = n_jobs * preset.tasks * preset.cpus_per_task * hours
        lines.append(f"estimated GPU-hours: 0 (no GPU requested); CPU-hours at most {cpu:g} for one pass")
    return lines


def check_data(cfgs: dict[int, RunConfig], todo: list[int], world_size: int = 1) -> None:
    """Every run about to be submitted finds its data root and split files, and fits its data (batch size
    vs training samples, sequence lengths vs views: benchmark/data/preflight.py); one message for all problems.

    The data is checked once per distinct dataset setting (``DatasetEntry.check``; generated datasets
    need nothing); ``world_size``: data-parallel processes per job, which share the global batch.
    """
    from benchmark.core.registry import dataset_entry
    from benchmark.core.resolve import check_fit
    from benchmark.data import preflight

    missing: dict[str, list[int]] = {}
    unfit: dict[str, list[int]] = {}
    seen: dict[tuple, str | preflight.DataSizes | None] = {}
    for i in todo:
        cfg = cfgs[i]
        key = (cfg.dataset, repr(cfg.data))
        if key not in seen:
            entry = dataset_entry(cfg.dataset)
            try:
                if entry.check is not None:
                    entry.check(cfg)
                seen[key] = entry.sizes(cfg) if entry.sizes is not None else None
            except DataError as e:
                seen[key] = f"{cfg.dataset}: {e}"
        sizes = seen[key]
        if isinstance(sizes, str):
            missing.setdefault(sizes, []).append(i)
        elif sizes is not None:
            try:
                check_fit(cfg, world_size, sizes=sizes)
            except ConfigError as e:
                unfit.setdefault(str(e), []).append(i)
    if missing:
        lines = [f"run(s) {_ranges(runs)}: {msg}" for msg, runs in missing.items()]
        raise DataError("the data of some runs is missing, so nothing was submitted:\n  " + "\n  ".join(lines))
    if unfit:
        lines = [f"run(s) {_ranges(runs)}: {msg}" for msg, runs in unfit.items()]
        raise ConfigError("some runs do not fit their data, so nothing was submitted:\n  " + "\n  ".join(lines))


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the --only syntax)."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{start}-{i}" if i > start else str(i))
            start = None
    return ",".join(parts)


def launch(args: argparse.Namespace, log=print) -> Launch:
    """Validate everything, print the table, submit what is not done. Raises SeqbenchError on bad input."""
    sweep = sweeps.load(args.sweep)
    indices = parse_only(args.only, len(sweep)) if args.only else list(range(len(sweep)))
    overrides = run_overrides(args)
    cfgs = dict(zip(indices, sweep.configs(overrides, indices), strict=True))
    preset = load_preset(args.cluster, preset_overrides(args))
    if args.dry_run:
        return _launch(args, sweep, indices, cfgs, preset, overrides, log)
    check_executor(args.executor)
    lock = Path(overrides.values["out"]) / sweep.name / LAUNCH_LOCK
    try:
        with exclusive_lock(lock, f"a launch of sweep {sweep.name!r}", on_wait=log):
            return _launch(args, sweep, indices, cfgs, preset, overrides, log)
    except LockHeld as e:
        raise SeqbenchError(f"{e} Runs already submitted by it are skipped by the next launch.") from None


def _launch(args, sweep, indices, cfgs, preset, overrides, log) -> Launch:
    dirs = {i: RunDir.of(cfgs[i]) for i in indices}
    status = _statuses(dirs, sweep.name, args, log)
    result = Launch(sweep, skipped={i: s for i, s in status.items() if not submittable(s)})
    log(f"sweep {sweep.name}: {sweep.description} ({len(sweep)} runs, {len(indices)} selected)")
    print_table(sweep, indices, cfgs, status, log)
    todo = [i for i in indices if submittable(status[i])]
    counts = ", ".join(f"{n} {s}" for s, n in _count(status.values()).items())
    if todo:
        for line in resources(preset, args.executor, len(todo)):
            log(line)
        # a sweep without its data fails here, not in every job on its node (debug runs in this one process)
        check_data(cfgs, todo, 1 if args.executor == "debug" else preset.tasks)
    if args.dry_run:
        log(f"dry run: {counts}; {len(todo)} would be submitted")
        return result
    if not todo:
        log(f"nothing to submit: every selected run is done or already queued ({counts})")
        return result
    logs = Path(args.logs) if args.logs else (Path(overrides.values["out"]).parent / "submitit" / sweep.name /
                                              time.strftime("%Y%m%d-%H%M%S"))
    executor = submitit.AutoExecutor(folder=logs / "%j", cluster=args.executor,
                                     slurm_max_num_timeout=preset.max_num_timeout)
    executor.update_parameters(**executor_parameters(preset, sweep.name))
    if args.executor != "slurm":
        # Local jobs die with this process: run them in waves of array_parallelism and wait.
        width = 1 if args.executor == "debug" else preset.array_parallelism
        for start in range(0, len(todo), width):
            wave = _submit(executor, cfgs, todo[start:start + width])
            result.jobs.update(wave)
            result.failed += _wait(wave, log)
        return result
    result.jobs = _submit(executor, cfgs, todo, dirs, logs)
    log(f"submitted {len(todo)} run(s) as job array {result.jobs[todo[0]].job_id.split('_')[0]} "
        f"(at most {preset.array_parallelism} at once); logs: {logs}")
    for i, job in result.jobs.items():
        log(f"  run {i} -> job {job.job_id}")
    if args.wait:
        result.failed = _wait(result.jobs, log)
    return result


def _statuses(dirs: dict[int, RunDir], sweep_name: str, args: argparse.Namespace, log) -> dict[int, str]:
    """:func:`run_status` of every run. squeue only matters for runs with a recorded submission (nothing else
    can be queued): it is asked then, and fails closed if it does not answer (a dry run says "unknown")."""
    records = {i: d.read_submission() for i, d in dirs.items()}
    try:
        live = live_slurm_jobs() if any(records.values()) else None
        if live is None and any(records.values()) and args.executor == "slurm":
            raise SlurmQueryError("squeue is not on PATH, so the launcher cannot tell which of the runs submitted "
                                  "before are still queued or running; nothing was submitted. Launch from a "
                                  "node with SLURM's client commands")
        interrupted = any(r.get("state") == "submitting" for r in records.values())
        mine = live_sweep_jobs(sweep_name) if interrupted else []
    except SlurmQueryError as e:
        if not args.dry_run:
            raise
        log(f"warning: {e} (dry run: runs with a recorded submission are shown as unknown)")
        return {i: "unknown (squeue failed)" if d.submission.is_file() else run_status(d.path, None)
                for i, d in dirs.items()}
    return {i: run_status(d.path, live, mine) for i, d in dirs.items()}


def _submit(executor: submitit.AutoExecutor, cfgs: dict[int, RunConfig], todo: list[int],
            dirs: dict[int, RunDir] | None = None, logs: Path | None = None) -> dict[int, Any]:
    """Submit ``todo`` in one batch (a job array on SLURM). With ``dirs``, each run's submission.json says
    "submitting" before sbatch (a launch killed during it leaves a trace the next one sees), is put back if
    sbatch fails (nothing was submitted), and says "submitted" with the job id after it."""
    from slurm.job import RunJob

    previous = {i: dirs[i].read_submission() for i in todo} if dirs else {}
    for i in previous:
        dirs[i].write_submission({"state": "submitting", "index": i, "logs": str(logs)})
    try:
        with executor.batch():
            jobs = [executor.submit(RunJob(cfgs[i])) for i in todo]
    except BaseException:
        for i, record in previous.items():  # put back what was there
            if record:
                dirs[i].write_submission(record)
            else:
                dirs[i].submission.unlink(missing_ok=True)
        raise
    for i, job in zip(todo, jobs, strict=True):
        if dirs:
            dirs[i].write_submission({"state": "submitted", "job_id": job.job_id, "index": i, "logs": str(logs)})
    return dict(zip(todo, jobs, strict=True))


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = v.split(" ")[0]
        out[key] = out.get(key, 0) + 1
    return out


def _wait(jobs: dict[int, Any], log) -> list[int]:
    """Wait for every job; report each one's end. Returns the indices that failed."""
    failed = []
    for i, job in jobs.items():
        try:
            res = job.results()[0]  # rank 0's (a multi-GPU job has one result per task)
            log(f"run {i}: {res['status']} ({res['run_dir']})" + (f": {res['message']}" if res.get("message") else ""))
            if res["status"] != "complete" and res["status"] != "skipped":
                failed.append(i)
        except Exception as e:  # the job's own traceback is in its log
            failed.append(i)
            log(f"run {i}: FAILED ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}); "
                f"log: {getattr(job.paths, 'stderr', '?')}")
    return failed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = launch(args)
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except submitit.core.utils.FailedJobError as e:  # sbatch refused the array: nothing was submitted
        print(f"error: sbatch refused the job array (check the preset against sinfo): {e}", file=sys.stderr)
        return 2
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
