"""Aggregate finished runs into the paper's tables and figures, beside the published numbers.

    python -m benchmark.aggregate [--runs results/runs] [--out results/] [--no-plots] [--no-paper]

Pipeline (pure functions; no torch, so it runs anywhere in a second):
glob ``**/result.json`` -> one DataFrame row per run (`load_runs`) -> cells = runs that share their
configuration except the seed (`assign_cells`, `drop_duplicates`) -> mean/std/n per cell (`cell_stats`)
-> tables (`benchmark.tables`) and figures (`benchmark.plots`). Whatever cannot be averaged honestly
(corrupt files, other schema versions, partial runs, NaN metrics, duplicate configs, published rows we
have no run for) is listed in coverage.md, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark import tables as T

SCHEMA_VERSION = 1
REQUIRED = ("method", "dataset", "seq_len", "seed", "config", "metrics")
# Cell identity (documented in docs/aggregate.md); config columns that vary inside one of these groups
# are appended as a "variant" so runs that differ in, say, epochs are never averaged together.
GROUP_KEY = ("method", "dataset", "seq_len", "eval_seq_len", "act_cond")
# Config columns that legitimately differ between the seeds of one cell.
IGNORED_CFG = ("cfg.seed", "cfg.sweep")
IGNORED_CFG_WORDS = ("path", "dir", "root", "output", "resume")


@dataclass(frozen=True)
class Problem:
    """One coverage finding: `kind` is skipped | partial | duplicate | nonfinite | log."""

    kind: str
    path: str
    detail: str


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Flatten nested dicts into dotted keys; lists become JSON text so they stay hashable."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, list):
        out[prefix] = json.dumps(obj)
    else:
        out[prefix] = obj


def _nonfinite(value: Any) -> bool:
    # A strict JSON writer turns NaN into null, so null counts as NaN too (the key was written).
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _parse(path: Path) -> tuple[dict[str, Any] | None, str]:
    """Read one result.json -> (flat row, "") or (None, why it is skipped)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"corrupt result.json ({type(err).__name__}: {err})"
    if not isinstance(record, dict):
        return None, "corrupt result.json (not a JSON object)"
    if record.get("schema_version") != SCHEMA_VERSION:
        return None, f"schema_version {record.get('schema_version')!r} (this aggregator reads {SCHEMA_VERSION})"
    missing = [k for k in REQUIRED if k not in record]
    if missing or not isinstance(record["metrics"], dict) or not isinstance(record["config"], dict):
        return None, f"invalid record (missing or malformed: {', '.join(missing) or 'config/metrics'})"
    if record.get("status", "complete") != "complete":
        return None, f"status {record.get('status')!r}, not 'complete'"
    model = record["config"].get("model") or {}
    row: dict[str, Any] = {
        "method": str(record["method"]), "dataset": str(record["dataset"]),
        "seq_len": int(record["seq_len"]), "eval_seq_len": record.get("eval_seq_len"),
        "act_cond": model.get("act_cond") if isinstance(model, dict) else None,
        "seed": int(record["seed"]), "path": str(path.parent),
        "end_time": str((record.get("provenance") or {}).get("end_time") or ""),
    }
    metrics: dict[str, Any] = {}
    _flatten(record["metrics"], "", metrics)
    row["nan_metrics"] = tuple(sorted(k for k, v in metrics.items() if _nonfinite(v)))
    row.update({f"m.{k}": (math.nan if v is None else v) for k, v in metrics.items()})
    _flatten(record["config"], "cfg", row)
    _flatten(record.get("provenance") or {}, "prov", row)
    return row, ""


def _partial(run_dir: Path) -> Problem:
    """Describe a run directory that has a config but no result (interrupted or still running)."""
    log = run_dir / "log.jsonl"
    steps = sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        what = f"{cfg.get('method')} {cfg.get('dataset')} L{(cfg.get('data') or {}).get('seq_len')} seed {cfg.get('seed')}"
    except (yaml.YAMLError, AttributeError, OSError):
        what = "unreadable config.yaml"
    return Problem("partial", str(run_dir), f"{what}: no result.json, {steps} steps in log.jsonl")


def load_runs(runs_dir: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Every result.json under `runs_dir` -> (one row per valid run, problems found on the way)."""
    rows, problems = [], []
    for path in sorted(runs_dir.rglob("result.json")):
        row, why = _parse(path)
        if row is None:
            problems.append(Problem("skipped", str(path), why))
        else:
            rows.append(row)
            problems += [Problem("nonfinite", str(path), f"{k} is NaN/inf/null") for k in row["nan_metrics"]]
    for cfg in sorted(runs_dir.rglob("config.yaml")):
        if not (cfg.parent / "result.json").exists():
            problems.append(_partial(cfg.parent))
    runs = pd.DataFrame(rows)
    if not runs.empty:
        # Nullable dtypes keep "no aggregator" (None) apart from numbers and avoid 3 -> 3.0.
        runs["eval_seq_len"] = runs["eval_seq_len"].astype("Int64")
        runs["act_cond"] = runs["act_cond"].astype("boolean")
    return runs, problems


def _cfg_varies(column: str) -> bool:
    return column.startswith("cfg.") and column not in IGNORED_CFG and not any(
        word in column.lower() for word in IGNORED_CFG_WORDS)


def assign_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `variant` (config that varies inside a GROUP_KEY group) and `cell` (a readable unique id)."""
    runs = runs.copy()
    runs["variant"] = ""
    cfg_cols = [c for c in runs.columns if _cfg_varies(c)]
    for _, group in runs.groupby(list(GROUP_KEY), dropna=False, sort=False):
        varying = [c for c in cfg_cols if group[c].astype(str).nunique() > 1]
        runs.loc[group.index, "variant"] = [
            ", ".join(f"{c[4:]}={row[c]}" for c in varying) for _, row in group.iterrows()]
    runs["cell"] = [T.cell_label(r) for r in runs.to_dict("records")]
    return runs


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Two runs of one cell with the same seed: keep the newest (provenance.end_time), report both."""
    problems, drop = [], []
    for (cell, seed), group in runs.groupby(["cell", "seed"], sort=True):
        if len(group) > 1:
            ordered = group.sort_values(["end_time", "path"])
            keep, older = ordered.iloc[-1], ordered.iloc[:-1]
            drop += list(older.index)
            problems.append(Problem("duplicate", keep["path"], (
                f"{cell}, seed {seed}: kept the newest (end_time {keep['end_time'] or '?'}); dropped "
                + ", ".join(f"`{p}` (end_time {t or '?'})" for p, t in zip(older["path"], older["end_time"], strict=True)))))
    return runs.drop(index=drop), problems


def coverage_markdown(runs_dir: Path, n_runs: int, cells: pd.DataFrame, problems: list[Problem],
                      missing: dict[str, list[str]]) -> str:
    """coverage.md: what was skipped, partial, duplicated, non-finite or missing, and seeds per cell."""
    def section(title: str, lines: list[str]) -> list[str]:
        return ["", f"## {title}", "", *(lines or ["none"])]

    by_kind = {k: [p for p in problems if p.kind == k] for k in ("skipped", "partial", "duplicate", "nonfinite", "log")}
    fmt = lambda kind: [f"- `{p.path}`: {p.detail}" for p in by_kind[kind]]
    lines = [T.GENERATED_MD, f"# Coverage of `{runs_dir}`", "",
             f"- runs aggregated: {n_runs} in {len(cells)} cells",
             f"- result.json skipped: {len(by_kind['skipped'])}; partial runs: {len(by_kind['partial'])}; "
             f"duplicate configs: {len(by_kind['duplicate'])}; non-finite metric values: {len(by_kind['nonfinite'])}"]
    lines += section("Skipped result.json (not aggregated)", fmt("skipped"))
    lines += section("Partial runs (config.yaml but no result.json)", fmt("partial"))
    lines += section("Duplicate configs (same cell and seed)", fmt("duplicate"))
    lines += section("Non-finite metrics (excluded from mean/std, counted as NaN in the tables)", fmt("nonfinite"))
    lines += section("Unreadable log lines", fmt("log"))
    lines += section("Missing cells (published rows without any run)",
                     [f"- {table}: " + "; ".join(labels) for table, labels in missing.items() if labels])
    cell_lines = ["| cell | seeds | runs | fewer seeds than this dataset's best-covered cell |", "|---|---|---:|---|"]
    if not cells.empty:
        most = cells.groupby("dataset")["n_runs"].transform("max")
        for (_, c), top in zip(cells.iterrows(), most, strict=True):
            cell_lines.append(f"| {c['cell']} | {c['seeds']} | {c['n_runs']} | {f'yes ({c.n_runs} < {top})' if c['n_runs'] < top else ''} |")
    lines += section("Cells", cell_lines)
    return "\n".join(lines) + "\n"


def aggregate(runs_dir: Path, out: Path, plots: bool = True, paper_path: Path | None = T.PAPER_YAML,
              compare_mini: bool = False) -> tuple[list[Path], list[Problem]]:
    """Write every table, figure, runs.csv and coverage.md; return (paths written, coverage findings)."""
    if not runs_dir.is_dir():
        raise SystemExit(f"error: results folder {runs_dir} does not exist (run `python -m benchmark.run` first)")
    runs, problems = load_runs(runs_dir)
    if runs.empty and not problems:
        raise SystemExit(f"error: no result.json under {runs_dir}: nothing to aggregate "
                         "(finished runs write <run dir>/result.json; run `python -m benchmark.run` first)")
    paper = T.load_paper(paper_path) if paper_path else None
    written: list[Path] = []
    tables: list[T.Table] = []
    cells = pd.DataFrame()
    if not runs.empty:
        runs = assign_cells(runs)
        runs, duplicates = drop_duplicates(runs)
        problems += duplicates
        records = runs.to_dict("records")
        cells = T.cell_stats(runs, runs["cell"])
        # The sequence-length views pool runs over the headline M_val (top1_by_eval_len covers all M_val).
        seq_cells = T.cell_stats(runs, [T.cell_label(r, with_eval=False) for r in records])
        tables = T.build_tables(cells, seq_cells, paper, compare_mini)
        written.append(T.write_atomic(out / "runs.csv", runs.drop(columns=["nan_metrics"]).to_csv(index=False)))
        for table in tables:
            written += T.write_table(table, out / "tables")
        if plots:
            from benchmark import plots as P  # matplotlib costs ~1 s; skip it with --no-plots

            figures, log_problems = P.write_figures(runs, cells, seq_cells, paper, out / "figures")
            written += figures
            problems += log_problems
    missing = {t.name: t.missing for t in tables}
    written.append(T.write_atomic(out / "coverage.md", coverage_markdown(runs_dir, len(runs), cells, problems, missing)))
    if runs.empty:
        raise SystemExit(f"error: no valid result.json under {runs_dir}; see {out / 'coverage.md'}")
    return written, problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="folder searched for **/result.json")
    parser.add_argument("--out", type=Path, default=Path("results"), help="writes tables/, figures/, coverage.md, runs.csv")
    parser.add_argument("--no-plots", action="store_true", help="tables and coverage only (no matplotlib)")
    parser.add_argument("--no-paper", action="store_true", help="omit the published numbers and differences")
    parser.add_argument("--paper", type=Path, default=T.PAPER_YAML, help="reference file of published numbers")
    parser.add_argument("--compare-mini", action="store_true",
                        help="also compare *-mini runs with the full dataset's published numbers (labelled not comparable)")
    args = parser.parse_args(argv)
    written, problems = aggregate(args.runs, args.out, plots=not args.no_plots,
                        paper_path=None if args.no_paper else args.paper, compare_mini=args.compare_mini)
    for path in written:
        print(f"wrote {path}")
    if problems:
        print(f"{len(problems)} coverage finding(s) (skipped, partial, duplicate or NaN): "
              f"see {args.out / 'coverage.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
