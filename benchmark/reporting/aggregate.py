"""Aggregate finished runs into the paper's tables and figures, beside the published numbers.

    python -m benchmark.aggregate [--runs results/runs] [--out results/] [--no-plots] [--no-paper]
                                  [--latex paper] [--title TEXT]

Pipeline (pure functions; torch only to read each method class's family and label, through the registry):
glob ``**/result.json`` -> one DataFrame row per run (`load_runs`) -> cells = runs that share their
configuration except the seed (`assign_cells`, `drop_duplicates`) -> mean/std/n per cell (`cell_stats`)
-> tables (`benchmark.reporting.tables`) and figures (`benchmark.reporting.plots`) -> report.html, all of it on one
self-contained page (`benchmark.reporting.html_report`). Whatever cannot be averaged honestly (corrupt files,
other schema versions, partial runs, NaN metrics, duplicate configs, published rows we have no run for) is listed in
coverage.md, never silently dropped. Every file is written atomically with the umask's mode
(benchmark/infra/fileio.py), so collaborators can read it and never see half of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark.core.rundir import CONFIG_FILE, RESULT_FILE, RunDir
from benchmark.infra import yamlio
from benchmark.reporting import tables as T
from benchmark.reporting.tables import Problem

SCHEMA_VERSION = 1
REQUIRED = ("method", "dataset", "seq_len", "seed", "config", "metrics")
# Cell identity (documented in docs/aggregate.md); config columns that vary inside one of these groups
# are appended as a "variant" so runs that differ in, say, epochs are never averaged together.
GROUP_KEY = ("method", "dataset", "seq_len", "eval_seq_len", "act_cond")
# Config columns that never split a cell: the seed and sweep name (they differ between the runs we want
# to average), fields already in GROUP_KEY (probe.eval_seq_len may be null = "same as seq_len"), the extra
# M_val list (it adds numbers, it changes none), and benchmark.config.NON_SEMANTIC (fields that do not
# change what is computed; tests/test_aggregate.py checks this mirror stays complete).
IGNORED_CFG = frozenset({
    "cfg.seed", "cfg.sweep", "cfg.method", "cfg.dataset", "cfg.data.seq_len", "cfg.model.act_cond",
    "cfg.probe.eval_seq_len", "cfg.probe.eval_seq_lens",
    "cfg.device", "cfg.out", "cfg.data.num_workers", "cfg.data.root", "cfg.data.split_dir",
    "cfg.train.progress", "cfg.train.log_every", "cfg.train.checkpoint_every",
    "cfg.data.decoded_cache", "cfg.train.channels_last", "cfg.train.fused_optimizer", "cfg.train.compile",
    "cfg.train.online_probe_every", "cfg.train.online_probe_objects", "cfg.train.logger",
})
IGNORED_CFG_WORDS = ("path", "dir", "root", "output", "resume")  # paths of any future field
# Training figures a random-init run (train.epochs=0) has none of by design: "n/a (random init)", not non-finite.
TRAINING_ONLY = ("train_loss_final", "images_per_s")


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Flatten nested dicts into dotted keys; lists become JSON text so they stay hashable."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)
    else:
        out[prefix] = obj


def _nonfinite(key: str, value: Any) -> bool:
    """NaN, inf, null (a strict JSON writer's NaN), or a table metric that is not a number at all."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return True
    table_metric = key in T.METRIC_LABELS or key in T.VIEW_KEYS or key.startswith(T.BY_EVAL_LEN)
    return table_metric and (isinstance(value, bool) or not isinstance(value, int | float))


def _parse(path: Path) -> tuple[dict[str, Any] | None, str]:
    """Read one result.json -> (flat row, "") or (None, why it is skipped)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"corrupt result.json ({type(err).__name__}: {err})"
    if not isinstance(record, dict):
        return None, "corrupt result.json (not a JSON object)"
    if record.get("schema_version") != SCHEMA_VERSION:
        found = record.get("schema_version")
        return None, f"schema_version {found!r} (this aggregator reads {SCHEMA_VERSION})"
    missing = [k for k in REQUIRED if k not in record]
    if missing or not isinstance(record["metrics"], dict) or not isinstance(record["config"], dict):
        return None, f"invalid record (missing or malformed: {', '.join(missing) or 'config/metrics'})"
    if record.get("status") == "diverged":
        d = record.get("divergence") if isinstance(record.get("divergence"), dict) else {}
        return None, f"diverged at step {d.get('step', '?')} ({d.get('what', '?')}: {d.get('detail', '?')})"
    if record.get("status", "complete") != "complete":
        return None, f"status {record.get('status')!r}, not 'complete'"
    model = record["config"].get("model")
    try:
        row: dict[str, Any] = {
            "method": str(record["method"]), "dataset": str(record["dataset"]),
            "seq_len": int(record["seq_len"]), "seed": int(record["seed"]),
            "eval_seq_len": None if record.get("eval_seq_len") is None else int(record["eval_seq_len"]),
            "act_cond": model.get("act_cond") if isinstance(model, dict) else None,
            "path": str(path.parent), "end_time": str((record.get("provenance") or {}).get("end_time") or "")}
    except (TypeError, ValueError) as err:
        return None, f"invalid record (seq_len, seed and eval_seq_len must be integers: {err})"
    metrics: dict[str, Any] = {}
    _flatten(record["metrics"], "", metrics)
    bad = sorted(k for k, v in metrics.items() if _nonfinite(k, v))
    # Non-finite table metrics become NaN, so one bad value cannot turn a whole column into text.
    row.update({f"m.{k}": (math.nan if k in bad else v) for k, v in metrics.items()})
    _flatten(record["config"], "cfg", row)
    untrained = row.get("cfg.train.epochs") == 0
    row["nan_metrics"] = tuple(k for k in bad if not (untrained and k in TRAINING_ONLY))
    row["na_metrics"] = tuple(k for k in bad if k not in row["nan_metrics"])
    _flatten(record.get("provenance") or {}, "prov", row)
    return row, ""


def _partial(run_dir: Path) -> Problem:
    """Describe a run directory that has a config but no result (interrupted or still running)."""
    log = RunDir(run_dir).log
    steps = sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0
    try:
        cfg = yamlio.load(RunDir(run_dir).config.read_text()) or {}
        seq_len = (cfg.get("data") or {}).get("seq_len")
        what = f"{cfg.get('method')} {cfg.get('dataset')} L{seq_len} seed {cfg.get('seed')}"
    except (yaml.YAMLError, AttributeError, OSError):
        what = "unreadable config.yaml"
    return Problem("partial", str(run_dir), f"{what}: no result.json, {steps} steps in log.jsonl")


def load_runs(runs_dir: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Every result.json under `runs_dir` -> (one row per valid run, problems found on the way)."""
    rows, problems = [], []
    for path in sorted(runs_dir.rglob(RESULT_FILE)):
        row, why = _parse(path)
        if row is None:
            problems.append(Problem("diverged" if why.startswith("diverged") else "skipped", str(path), why))
        else:
            rows.append(row)
            problems += [Problem("nonfinite", str(path), f"{k} is NaN/inf/null or not a number")
                         for k in row["nan_metrics"]]
            if row["na_metrics"]:
                problems.append(Problem("n/a", str(path), f"{', '.join(row['na_metrics'])}: n/a (random init, "
                                        "train.epochs=0: no training)"))
    for cfg in sorted(runs_dir.rglob(CONFIG_FILE)):
        if not RunDir(cfg.parent).result.exists():
            problems.append(_partial(cfg.parent))
    runs = pd.DataFrame(rows)
    if not runs.empty:
        # Nullable dtypes keep "no aggregator" (None) apart from numbers and avoid 3 -> 3.0.
        runs["eval_seq_len"] = runs["eval_seq_len"].astype("Int64")
        runs["act_cond"] = runs["act_cond"].astype("boolean")
    return runs, problems


def _cfg_varies(column: str) -> bool:
    return (column.startswith("cfg.") and column not in IGNORED_CFG
            and not any(word in column.lower() for word in IGNORED_CFG_WORDS))


def assign_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `variant` (config that varies inside a GROUP_KEY group) and `cell` (a readable unique id)."""
    runs = runs.copy()
    runs["variant"] = ""
    cfg_cols = [c for c in runs.columns if _cfg_varies(c)]
    for _, group in runs.groupby(list(GROUP_KEY), dropna=False, sort=False):
        # dropna=False: a setting left null (the default) in one run and set in another splits the cell too
        varying = [c for c in cfg_cols if group[c].astype(str).nunique(dropna=False) > 1]
        runs.loc[group.index, "variant"] = [", ".join(f"{c[4:]}={row[c]}" for c in varying)
                                            for _, row in group.iterrows()]
    runs["cell"] = [T.cell_label(r) for r in runs.to_dict("records")]
    return runs


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Two runs of one cell with the same seed: keep the newest (provenance.end_time), report both."""
    problems, drop = [], []
    for (cell, seed), group in runs.groupby(["cell", "seed"], sort=True):
        if len(group) > 1:
            ordered = group.sort_values(["end_time", "path"])  # ISO times sort as text; path breaks ties
            keep, older = ordered.iloc[-1], ordered.iloc[:-1]
            drop += list(older.index)
            pairs = zip(older["path"], older["end_time"], strict=True)
            dropped = ", ".join(f"`{p}` (end_time {t or '?'})" for p, t in pairs)
            problems.append(Problem("duplicate", keep["path"], f"{cell}, seed {seed}: kept the newest "
                                    f"(end_time {keep['end_time'] or '?'}); dropped {dropped}"))
    return runs.drop(index=drop), problems


def coverage_markdown(runs_dir: Path, n_runs: int, cells: pd.DataFrame, problems: list[Problem],
                      missing: dict[str, list[str]]) -> str:
    """coverage.md: what was skipped, partial, duplicated, non-finite or missing, and seeds per cell."""
    kinds = ("skipped", "diverged", "partial", "duplicate", "nonfinite", "n/a", "log")
    by_kind = {k: [p for p in problems if p.kind == k] for k in kinds}
    counts = ", ".join(f"{k}: {len(v)}" for k, v in by_kind.items())
    sections = {
        "Skipped result.json (not aggregated)": by_kind["skipped"],
        "Diverged runs (status \"diverged\": no metrics, left out of every table)": by_kind["diverged"],
        "Partial runs (config.yaml but no result.json)": by_kind["partial"],
        "Duplicate configs (same cell and seed)": by_kind["duplicate"],
        "Non-finite metrics (left out of mean/std, counted as NaN in the tables)": by_kind["nonfinite"],
        "Training figures of random-init runs (n/a: nothing was trained)": by_kind["n/a"],
        "Unreadable log.jsonl lines (found while drawing the training curves)": by_kind["log"],
    }
    lines = [T.GENERATED_MD, f"# Coverage of `{runs_dir}`", "",
             f"- runs aggregated: {n_runs} in {len(cells)} cells", f"- findings: {counts}"]
    for title, found in sections.items():
        lines += ["", f"## {title}", "", *([f"- `{p.path}`: {p.detail}" for p in found] or ["none"])]
    gaps = [f"- {table}: " + "; ".join(labels) for table, labels in missing.items() if labels]
    lines += ["", "## Missing cells (published rows without any run)", "", *(gaps or ["none"])]
    lines += ["", "## Cells", "", "| cell | seeds | runs | incomplete metrics | note |",
              "|---|---|---:|---|---|"]
    if not cells.empty:
        most = cells.groupby("dataset")["n_runs"].transform("max")
        for c, top in zip(cells.to_dict("records"), most, strict=True):
            stats = {m: T.get_stat(c, m) for m in T.METRIC_LABELS}
            holes = "; ".join(f"{m}: {s.count()[1:-1]}" for m, s in stats.items()
                              if s and (s.nan or s.missing))
            few = f"fewer seeds than the best {c['dataset']} cell ({top})" if c["n_runs"] < top else ""
            lines.append(f"| {c['cell']} | {c['seeds']} | {c['n_runs']} | {holes} | {few} |")
    return "\n".join(lines) + "\n"


DEFAULT_TITLE = "seqbench results"


def aggregate(runs_dir: Path, out: Path, plots: bool = True, paper_path: Path | None = T.PAPER_YAML,
              compare_mini: bool = False, latex: str = "annotated",
              title: str = DEFAULT_TITLE) -> tuple[list[Path], list[Problem]]:
    """Write every table, figure, runs.csv, coverage.md and report.html; return (paths written, findings).

    `latex` is the style of the .tex tables (`benchmark.reporting.tables.LATEX_STYLES`); `title` heads report.html.

    Raises SystemExit with a message (no traceback) when there is nothing to aggregate.
    """
    if not runs_dir.is_dir():
        raise SystemExit(f"error: results folder {runs_dir} does not exist "
                         "(run `python -m benchmark.run` first, or pass --runs)")
    runs, problems = load_runs(runs_dir)
    if runs.empty and not problems:
        raise SystemExit(f"error: no result.json under {runs_dir}: nothing to aggregate (a finished run "
                         "writes <run dir>/result.json; run `python -m benchmark.run` first)")
    try:
        paper = T.load_paper(paper_path) if paper_path else None
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise SystemExit(f"error: cannot read the published-numbers file {paper_path}: {err!r}") from None
    written: list[Path] = []
    tables: list[T.Table] = []
    cells = pd.DataFrame()
    if not runs.empty:
        runs = assign_cells(runs)
        runs, duplicates = drop_duplicates(runs)
        problems += duplicates
        cells = T.cell_stats(runs, runs["cell"])
        # The sequence-length views pool runs over the headline M_val (top1_by_eval_len covers all M_val).
        seq_cells = T.cell_stats(runs, [T.cell_label(r, with_eval=False) for r in runs.to_dict("records")])
        tables = T.build_tables(cells, seq_cells, paper, compare_mini)
        flat = runs.drop(columns=["nan_metrics", "na_metrics"]).to_csv(index=False)
        written.append(T.write_atomic(out / "runs.csv", flat))
        context = {"runs": str(runs_dir), "runs_aggregated": len(runs), "cells": len(cells)}
        for table in tables:
            written += T.write_table(table, out / "tables", latex, context)
        if plots:
            from benchmark.reporting import plots as P  # matplotlib costs ~1 s; --no-plots skips it

            figures, log_problems = P.write_figures(runs, cells, seq_cells, paper, out / "figures",
                                                    compare_mini)
            written += figures
            problems += log_problems
    coverage = coverage_markdown(runs_dir, len(runs), cells, problems, {t.name: t.missing for t in tables})
    written.append(T.write_atomic(out / "coverage.md", coverage))
    if runs.empty:
        raise SystemExit(f"error: no valid result.json under {runs_dir}; see {out / 'coverage.md'}")
    from benchmark.reporting.html_report import render_report  # jinja2 only when a report is written

    html = render_report(title=title, runs_dir=runs_dir, runs=runs, n_cells=len(cells), tables=tables,
                         figures=written, plots=plots, coverage_md=coverage, problems=problems)
    written.append(T.write_atomic(out / "report.html", html))
    return written, problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.aggregate",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--runs", type=Path, default=Path("results/runs"), help="folder searched for **/result.json")
    add("--out", type=Path, default=Path("results"),
        help="gets tables/, figures/, coverage.md, runs.csv and report.html")
    add("--no-plots", action="store_true", help="tables and coverage only (no matplotlib)")
    add("--no-paper", action="store_true", help="leave out the published numbers and differences")
    add("--paper", type=Path, default=T.PAPER_YAML, help="reference file of published numbers")
    add("--compare-mini", action="store_true",
        help="compare *-mini runs with the full dataset's published numbers too (labelled not comparable)")
    add("--latex", choices=T.LATEX_STYLES, default="annotated",
        help="annotated: '$mean \\pm std$ (n=...)' in our cells; paper: '$mean \\pm std$' only, ready to paste")
    add("--title", default=DEFAULT_TITLE, help="heading of report.html (say what the results are)")
    args = parser.parse_args(argv)
    paper = None if args.no_paper else args.paper
    written, problems = aggregate(args.runs, args.out, not args.no_plots, paper, args.compare_mini, args.latex,
                                  args.title)
    for path in written:
        print(f"wrote {path}")
    if problems:
        print(f"{len(problems)} coverage finding(s) (skipped, diverged, partial, duplicate, NaN, unreadable log "
              f"lines): see {args.out / 'coverage.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
