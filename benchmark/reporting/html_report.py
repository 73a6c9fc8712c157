"""report.html: the aggregator's outputs on one self-contained page, for a collaborator without the repository.

Written by ``python -m benchmark.aggregate`` beside tables/, figures/ and coverage.md. The page holds the
paper-shaped tables beside the published numbers, every PNG figure (embedded as a base64 ``data:`` URI),
coverage.md and a provenance summary of the runs (commits, hosts, torch versions, counts); it loads nothing
else (no CDN, no local file), so it can be mailed or attached as it is. The layout is the Jinja2 template
``benchmark/reporting/templates/report.html.j2``, rendered with autoescaping on: every run-derived string is escaped.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.reporting import tables as T
from benchmark.reporting.agreement import NOTE as AGREEMENT_NOTE

TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE = "report.html.j2"
# Figure sections of the page, in order: (title, file-name prefixes, what the reader sees).
FIGURE_SECTIONS = (
    ("Invariance / equivariance trade-off", ("tradeoff_",),
     "Top-1 of the linear probe against the equivariance R²: one point per cell (±1 std over seeds), "
     "published points hollow."),
    ("Sequence length", ("seqlen_", "heatmap_"),
     "Top-1 and equivariance R² against the training (M_tr) and inference (M_val) sequence lengths; "
     "the paper dashed; heatmaps of top-1 over M_val × M_tr, ours beside the paper's."),
    ("Training curves", ("curves_",),
     "From each run's log.jsonl: training loss (seq-JEPA's baseline_loss, the loss of predicting the "
     "batch-mean target, dashed), learning rate and the online probes (online_*)."),
)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI (the page embeds, never links, its figures)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _inline(text: str) -> list[tuple[str, bool]]:
    """Split Markdown text on backticks: [(text, is_code), ...] (the template escapes each piece)."""
    return [(part, i % 2 == 1) for i, part in enumerate(text.split("`")) if part]


def markdown_blocks(text: str) -> list[dict[str, Any]]:
    """The Markdown subset coverage.md uses (headings, bullets, pipe tables, paragraphs) as template blocks.

    Parsed into data rather than converted to HTML, so the template's autoescaping covers every path and
    detail a run directory or a result.json put into coverage.md.
    """
    blocks: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line or line.startswith("<!--"):
            continue
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            blocks.append({"kind": "heading", "level": min(len(heading[1]) + 2, 6), "text": _inline(heading[2])})
        elif line.startswith("- "):
            if not blocks or blocks[-1]["kind"] != "list":
                blocks.append({"kind": "list", "items": []})
            blocks[-1]["items"].append(_inline(line[2:]))
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue  # the header rule
            if not blocks or blocks[-1]["kind"] != "table":
                blocks.append({"kind": "table", "header": [_inline(c) for c in cells], "rows": []})
            else:
                blocks[-1]["rows"].append([_inline(c) for c in cells])
        else:
            blocks.append({"kind": "para", "text": _inline(line)})
    return blocks


def html_table(table: T.Table) -> dict[str, Any]:
    """A Table as template data: header, rows of (text, css class) with the Markdown cell text (a collapsed
    row marked as in the Markdown, and classed "collapsed"), notes, and the agreement with the paper."""
    source = next((i for i, c in enumerate(table.columns) if c.key == "source"), None)
    health = table.health or [None] * len(table.rows)
    rows = []
    for r, shown, h in zip(table.rows, T.shown_rows(table), health, strict=True):
        cells = []
        for c, x in zip(table.columns, shown, strict=True):
            kind = "num" if c.kind != "text" else "text"
            ref = isinstance(x, T.Ref) or c.key.endswith(("_paper", "_delta"))
            cells.append((T.cell_text(x), f"{kind} ref" if ref else kind))
        classes = ([f"src-{r[source]}"] if source is not None else []) + (["collapsed"] if h and h.collapsed else [])
        rows.append({"cls": " ".join(classes), "cells": cells})
    header = [(c.label, "num" if c.kind != "text" else "text") for c in table.columns]
    agreement = [(a.what, a.n, a.collapsed, a.number(a.spearman), a.number(a.kendall)) for a in table.agreement]
    return {"name": table.name, "title": table.title, "header": header, "rows": rows, "notes": table.notes,
            "agreement": agreement}


def _counts(values: Iterable[Any]) -> list[tuple[str, int]]:
    """Distinct values with how many runs have each, most common first; unrecorded ones as one entry."""
    series = pd.Series([("not recorded" if T.scalar(v) in (None, "") else str(v)) for v in values], dtype=object)
    return [(str(k), int(n)) for k, n in series.value_counts().items()]


def provenance_summary(runs: pd.DataFrame, problems: Sequence[T.Problem]) -> dict[str, Any]:
    """Who produced the aggregated runs: commits, hosts, torch/CUDA, devices, time span, counts by kind."""
    def col(name: str) -> list[Any]:
        return list(runs[name]) if name in runs else [None] * len(runs)

    commits = [None if T.scalar(c) is None else str(c)[:12] + (" (dirty)" if T.scalar(d) is True else "")
               for c, d in zip(col("prov.git_commit"), col("prov.git_dirty"), strict=True)]
    torch = [None if T.scalar(t) is None else f"{t}" + (f", CUDA {c}" if T.scalar(c) else ", no CUDA")
             for t, c in zip(col("prov.torch"), col("prov.cuda"), strict=True)]
    walls = pd.to_numeric(pd.Series(col("prov.wall_time_s"), dtype=object), errors="coerce")
    starts = sorted(str(t) for t in col("prov.start_time") if T.scalar(t))
    ends = sorted(str(t) for t in col("prov.end_time") if T.scalar(t))
    by_cell = runs.groupby(["dataset", "method"]).size() if len(runs) else pd.Series(dtype=int)
    kinds = {"skipped": "skipped result.json", "diverged": "diverged runs", "partial": "partial runs",
             "duplicate": "duplicate configs", "nonfinite": "NaN metrics", "log": "unreadable log lines"}
    devices = col("prov.device_name") if "prov.device_name" in runs else col("prov.device")
    return {
        "facets": [("git commit", _counts(commits)), ("host", _counts(col("prov.host"))),
                   ("torch", _counts(torch)), ("device", _counts(devices))],
        "runs_by": [(d, m, int(n)) for (d, m), n in by_cell.items()],
        "wall_hours": float(walls.sum()) / 3600 if walls.notna().any() else None,
        "span": (starts[0] if starts else "?", ends[-1] if ends else "?"),
        "findings": [(label, sum(p.kind == k for p in problems)) for k, label in kinds.items()],
    }


def figure_sections(figures: Sequence[Path]) -> list[dict[str, Any]]:
    """The written PNGs grouped into FIGURE_SECTIONS, each embedded as a data URI."""
    pngs = sorted(p for p in figures if p.suffix == ".png")
    return [{"title": title, "about": about,
             "figures": [{"name": p.stem, "uri": data_uri(p.read_bytes())} for prefix in prefixes for p in pngs
                         if p.name.startswith(prefix)]}
            for title, prefixes, about in FIGURE_SECTIONS]


def render_report(*, title: str, runs_dir: Path, runs: pd.DataFrame, n_cells: int, tables: Sequence[T.Table],
                  figures: Sequence[Path], plots: bool, coverage_md: str, problems: Sequence[T.Problem]) -> str:
    """The HTML text of report.html (see the module docstring)."""
    import jinja2  # only the report needs it; the aggregator's --help stays light

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(
        title=title, runs_dir=str(runs_dir), generated=datetime.now(UTC).isoformat(timespec="seconds"),
        generated_by=T.GENERATED, agreement_note=AGREEMENT_NOTE, n_runs=len(runs), n_cells=n_cells, plots=plots,
        tables=[html_table(t) for t in tables], figure_sections=figure_sections(figures) if plots else [],
        coverage=markdown_blocks(coverage_md), provenance=provenance_summary(runs, problems))
