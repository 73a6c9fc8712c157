"""Figures for the aggregator (PNG + PDF): invariance/equivariance trade-off, metrics vs sequence length,
top-1 heatmaps over training x inference length (ours beside the paper's), and training curves (loss, the
seq-JEPA batch-mean baseline loss, learning rate and the online probes ``online_*`` from each log.jsonl).

Every series is drawn with markers, so a run that logged a single point, or a cell with one length, still
shows. A run whose result.json says ``collapsed`` (benchmark/probes/health.py) is marked in every figure: a
black x over its point, "collapsed" in its label and a legend entry. Labels name the settings that set
runs of one method apart (the tables' ``variant``, shortened: "byol (lr 0.002)", "seqjepa (epochs 0 =
random init)"). Figures are saved to memory and written through benchmark/infra/fileio.py (atomic, umask mode).

Figures use matplotlib's object API on the Agg canvas (no pyplot): nothing global is touched, no display
is needed, and figures are freed as soon as they are saved.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from benchmark.reporting import tables as T
from benchmark.reporting.tables import Problem

# Colour-blind-safe colours (Okabe-Ito) and a marker per family, so a grey print still separates them.
FAMILY_STYLE = {"invariant": ("#0072B2", "o"), "equivariant": ("#D55E00", "s"), "seq-JEPA": ("#009E73", "D"),
                "external": ("#CC79A7", "^"), "other": ("#7F7F7F", "X")}
EQUI_METRICS = ("rotation_r2", "aug_r2", "position_r2", "crop_r2", "jitter_r2", "blur_r2")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, folder: Path, stem: str) -> list[Path]:
    out = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150)
        # The layout was solved for the PNG; solving it again for the PDF would double the (slow) cost.
        fig.set_layout_engine("none")
        out.append(T.write_atomic(folder / f"{stem}.{ext}", buf.getvalue()))
    return out


def _val(stat: T.Stat | None) -> tuple[float, float]:
    """(mean, std) for plotting; one seed has no spread and gets a bar of 0."""
    if stat is None or stat.n == 0:
        return math.nan, math.nan
    return stat.mean, (0.0 if math.isnan(stat.std) else stat.std)


def _equi_metric(cells: pd.DataFrame) -> str | None:
    """The equivariance R² to plot: rotation on 3DIEBench, else the first image-dataset R² we have."""
    records = cells.to_dict("records")
    return next((m for m in EQUI_METRICS if any(T.get_stat(c, m) for c in records)), None)


_VARIANT_KEY = re.compile(r"(?:^|, )([A-Za-z_][\w.]*)=")
COLLAPSED_STYLE = {"marker": "x", "color": "black", "ms": 13, "mew": 2.2, "ls": "none", "zorder": 5}
COLLAPSED_LEGEND = "collapsed (result.json `collapsed`): black x"


def variant_text(variant: str) -> str:
    """The tables' ``variant`` ("train.epochs=0, optim.lr=0.002") as a plot label: "epochs 0 = random init,
    lr 0.002" (each setting by its last name, the full name where two would read the same)."""
    keys = list(_VARIANT_KEY.finditer(variant or ""))
    items = [(m.group(1), variant[m.end():keys[i + 1].start() if i + 1 < len(keys) else len(variant)])
             for i, m in enumerate(keys)]
    last = [k.rsplit(".", 1)[-1] for k, _ in items]
    out = []
    for (key, value), short in zip(items, last, strict=True):
        name = short if last.count(short) == 1 else key
        try:
            value = f"{float(value):g}" if any(ch in value for ch in ".eE") else value
        except ValueError:
            pass
        value = "default" if value in ("nan", "None", "<NA>") else value  # null: the preset's / method's value
        out.append(f"{name} {value}" + (" = random init" if key == "train.epochs" and value == "0" else ""))
    return ", ".join(out)


def run_label(c: Mapping[str, Any]) -> str:
    """Method, "no-act" without action conditioning, and the settings that set it apart from its sibling runs."""
    text = c["method"] + (" no-act" if T.scalar(c.get("act_cond")) is False else "")
    v = variant_text(c.get("variant") or "")
    return text + (f" ({v})" if v else "")


def _line_key(c: Mapping[str, Any]) -> str:
    return run_label(c)


def collapsed_by(runs: pd.DataFrame, labels: list[str] | pd.Series) -> dict[str, tuple[int, int]]:
    """Cell label -> (runs flagged ``collapsed`` in result.json, runs) for the runs grouped by ``labels``."""
    flags = runs["m.collapsed"] if "m.collapsed" in runs else pd.Series(False, index=runs.index)
    out: dict[str, tuple[int, int]] = {}
    for label, flag in zip(labels, flags, strict=True):
        n, k = out.get(label, (0, 0))
        out[label] = (n + (T.scalar(flag) is True), k + 1)
    return out


def with_collapse(runs: pd.DataFrame, cells: pd.DataFrame,
                  seq_cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``cells`` and ``seq_cells`` (benchmark.reporting.aggregate) with a ``collapsed`` column: (collapsed runs,
    runs) per cell, from the runs' result.json ``collapsed``."""
    seq_labels = [T.cell_label(r, with_eval=False) for r in runs.to_dict("records")]
    return (cells.assign(collapsed=cells["cell"].map(collapsed_by(runs, runs["cell"]))),
            seq_cells.assign(collapsed=seq_cells["cell"].map(collapsed_by(runs, seq_labels))))


def _collapse_note(c: Mapping[str, Any]) -> str:
    """" collapsed" / " collapsed (1/2 seeds)" for a cell with collapsed runs, else ""."""
    counts = c.get("collapsed")
    n, k = counts if isinstance(counts, tuple) else (0, 0)
    return "" if not n else " collapsed" + ("" if n == k else f" ({n}/{k} seeds)")


def tradeoff(cells: pd.DataFrame, paper: T.Paper | None, dataset: str, compare_mini: bool) -> Figure | None:
    """Top-1 (invariance) against equivariance R²: one point per cell, error bars over seeds."""
    x_metric = _equi_metric(cells)
    if x_metric is None:
        return None
    fig = _figure(8.0, 6.0)
    ax = fig.add_subplot()
    families = set()
    for c in cells.to_dict("records"):
        (x, xe), (y, ye) = _val(T.get_stat(c, x_metric)), _val(T.get_stat(c, "top1"))
        if math.isnan(x) or math.isnan(y):
            continue
        families.add(T.family(c["method"]))
        color, marker = FAMILY_STYLE[T.family(c["method"])]
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt=marker, color=color, ms=8, capsize=3, elinewidth=1)
        note = _collapse_note(c)
        if note:
            ax.plot(x, y, **COLLAPSED_STYLE)
        lens = f"{c['seq_len']}/{c['eval_seq_len']}" if T.scalar(c["eval_seq_len"]) else str(c["seq_len"])
        ax.annotate(f"{run_label(c)} [{lens}]{note}", (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8,
                    color=color)
    pds = T.paper_dataset(dataset, compare_mini)
    published = [e for e in (paper.entries if paper else []) if e.kind == "row" and e.ident["dataset"] == pds
                 and {"top1", x_metric} <= set(e.values)]
    for e in published:
        color, marker = FAMILY_STYLE[T.family(e.ident["method"])]
        xy = (e.values[x_metric], e.values["top1"])
        ax.plot(*xy, marker=marker, ms=8, mfc="none", mec=color, ls="none", alpha=0.7)
        ax.annotate(("≈" if e.approx else "") + e.label, xy, xytext=(6, -9), textcoords="offset points",
                    fontsize=6.5, color="0.45", style="italic")
    families |= {T.family(e.ident["method"]) for e in published}
    handles = [Line2D([], [], color=FAMILY_STYLE[f][0], marker=FAMILY_STYLE[f][1], ls="none", ms=8, label=f)
               for f in T.FAMILY_ORDER if f in families]
    handles.append(Line2D([], [], color="0.2", marker="o", ms=7, label="ours: filled, bars = ±1 std over seeds"))
    if published:
        handles.append(Line2D([], [], color="0.4", marker="o", mfc="none", ls="none", ms=7, label="published: hollow"))
    if any(_collapse_note(c) for c in cells.to_dict("records")):
        handles.append(Line2D([], [], **{**COLLAPSED_STYLE, "ms": 8}, label=COLLAPSED_LEGEND))
    ax.legend(handles=handles, loc="best", fontsize=8.5, title="method family", title_fontsize=9, framealpha=0.9)
    x_name = "relative-rotation R²" if x_metric == "rotation_r2" else T.METRIC_LABELS[x_metric]
    ax.set_xlabel(f"{x_name} of the equivariance probe (unitless, ↑ more equivariant)", fontsize=10)
    ax.set_ylabel("top-1 accuracy of the linear probe (%, ↑ more invariant)", fontsize=10)
    ax.set_title(f"{dataset}: invariance vs equivariance trade-off\n"
                 "labels: method (settings that differ between its runs) [M_tr/M_val: training / inference length]",
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    return fig


def _vs_train_len(ax: Axes, cells: pd.DataFrame, metric: str | None, paper_curve: dict[int, float]) -> None:
    """One line per method (and headline M_val for top-1): metric against training length M_tr."""
    lines: dict[str, list[tuple[int, float, float, bool]]] = {}
    for c in cells.to_dict("records"):
        ev = T.scalar(c["eval_seq_len"])
        key = _line_key(c) + (f" (M_val={ev})" if ev is not None and metric == "top1" else "")
        stat = _val(T.get_stat(c, metric) if metric else None)
        lines.setdefault(key, []).append((c["seq_len"], *stat, bool(_collapse_note(c))))
    for label, pts in sorted(lines.items()):
        pts = sorted(p for p in pts if not math.isnan(p[1]))
        if pts:
            xs, ys, es, bad = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label + (" collapsed" if any(bad) else ""))
            _mark_collapsed(ax, xs, ys, bad)
    if paper_curve:
        ax.plot(list(paper_curve), list(paper_curve.values()), "k--", marker="x", label="seqjepa, paper (≈)")
    ticks = {p[0] for pts in lines.values() for p in pts} | set(paper_curve)
    ax.set_xticks(sorted(ticks))  # sequence lengths are integers: no 1.975 ticks around a single point


def _mark_collapsed(ax: Axes, xs, ys, bad) -> None:
    """The black x over the points of collapsed cells (legend entry: COLLAPSED_LEGEND)."""
    pts = [(x, y) for x, y, b in zip(xs, ys, bad, strict=True) if b]
    if pts:
        ax.plot(*zip(*pts, strict=True), **COLLAPSED_STYLE, label=COLLAPSED_LEGEND)


def _dedup_legend(ax: Axes, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one "collapsed" entry however many cells carry one
    ax.legend(unique.values(), unique.keys(), **kw)


def seqlen(cells: pd.DataFrame, seq_cells: pd.DataFrame, paper: T.Paper | None, dataset: str,
           compare_mini: bool) -> Figure:
    """(a) top-1 vs M_tr, (b) top-1 vs M_val per M_tr, (c) equivariance R² vs M_tr; the paper dashed."""
    fig = _figure(15.0, 4.8)
    axes = fig.subplots(1, 3)
    pds, equi = T.paper_dataset(dataset, compare_mini), _equi_metric(cells)
    curve = {e.ident["seq_len"]: e.values[equi] for e in (paper.entries if paper and pds and equi else [])
             if e.kind == "by_seq_len" and equi in e.values and e.ident["dataset"] == pds}
    _vs_train_len(axes[0], cells, "top1", {})
    _vs_train_len(axes[2], cells, equi, curve)
    lens = T.eval_lens(seq_cells)
    for c in seq_cells.to_dict("records"):
        pts = [(v, *_val(T.get_stat(c, f"{T.BY_EVAL_LEN}{v}"))) for v in lens]
        pts = [p for p in pts if not math.isnan(p[1])]
        if not pts:
            continue
        xs, ys, es = zip(*pts, strict=True)
        note = _collapse_note(c)
        line = axes[1].errorbar(xs, ys, yerr=es, marker="o", capsize=3,
                                label=f"{_line_key(c)} M_tr={c['seq_len']}{note}")
        _mark_collapsed(axes[1], xs, ys, [bool(note)] * len(xs))
        refs = T.heatmap_refs(c, paper, compare_mini)
        if refs:
            axes[1].plot(list(refs), [r.value for r in refs.values()], ls="--", marker="x",
                         color=line.lines[0].get_color(), label=f"paper M_tr={c['seq_len']}")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    equi_label = T.METRIC_LABELS.get(equi or "", "equivariance R²")
    panels = (("top-1 vs training length (at the headline M_val)", "training sequence length M_tr",
               "top-1 accuracy (%)"),
              ("top-1 vs inference length", "inference sequence length M_val", "top-1 accuracy (%)"),
              (f"{equi_label} vs training length", "training sequence length M_tr", f"{equi_label} (unitless)"))
    for ax, (title, xlabel, ylabel) in zip(axes, panels, strict=True):
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            _dedup_legend(ax, fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
    fig.suptitle(f"{dataset}: metrics vs sequence length (ours: mean ± std over seeds; dashed: paper)")
    return fig


def heatmap(c: Mapping[str, Any], group: pd.DataFrame, paper: T.Paper | None, compare_mini: bool) -> Figure:
    """Top-1 over M_val (rows) x M_tr (columns) for one method/dataset; the paper's heatmap beside it."""
    lens = T.eval_lens(group)
    records = group.to_dict("records")
    ours = pd.DataFrame({r["seq_len"]: {v: r.get(T.stat_col(f"{T.BY_EVAL_LEN}{v}", "mean"), math.nan) for v in lens}
                         for r in records}).sort_index(axis=1)
    bad = {r["seq_len"]: _collapse_note(r) for r in records if _collapse_note(r)}
    if bad:  # collapsed training lengths: named in their column label
        ours.columns = [f"{m}\n{bad[m].strip()}" if m in bad else m for m in ours.columns]
    panels = [("ours: mean top-1 (%) over seeds" + ("; x = collapsed M_tr" if bad else ""), ours)]
    ident = {k: T.scalar(c[k]) for k in T.IDENT} | {"dataset": T.paper_dataset(c["dataset"], compare_mini)}
    pub = [e for e in (paper.entries if paper else []) if e.kind == "heatmap"
           and e.matches(ident | {"seq_len": e.ident["seq_len"], "eval_seq_len": e.ident["eval_seq_len"]})]
    if pub:
        ref = pd.DataFrame([(e.ident["eval_seq_len"], e.ident["seq_len"], e.values["top1"]) for e in pub])
        panels.append((f"paper: {paper.sources[pub[0].source]}", ref.pivot(index=0, columns=1, values=2)))
    values = np.concatenate([p.to_numpy(dtype=float).ravel() for _, p in panels])
    finite = values[np.isfinite(values)]
    # One colour scale for both panels, so equal colours mean equal accuracy.
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fig = _figure(5.2 * len(panels), 4.8)
    for ax, (title, frame) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        sns.heatmap(frame.astype(float), ax=ax, annot=True, fmt=".1f", cmap="viridis", vmin=vmin, vmax=vmax,
                    cbar_kws={"label": "top-1 (%)"}, annot_kws={"fontsize": 8})
        ax.set(title=title, xlabel="training length M_tr", ylabel="inference length M_val")
        ax.title.set_fontsize(9)
        if frame is ours:
            for j, col in enumerate(frame.columns):
                if "collapsed" in str(col):  # the whole column crossed out
                    ax.plot([j, j + 1], [0, len(frame)], color="black", lw=1.5)
                    ax.plot([j, j + 1], [len(frame), 0], color="black", lw=1.5)
    fig.suptitle(f"{_line_key(c)} on {c['dataset']}")
    return fig


def _read_log(path: Path, problems: list[Problem]) -> pd.DataFrame:
    rows, bad = [], 0
    for line in filter(str.strip, path.read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1  # typically the last line of a run killed mid-write
    if bad:
        problems.append(Problem("log", str(path), f"{bad} unreadable line(s) skipped"))
    return pd.DataFrame([r for r in rows if isinstance(r, dict)])


def _series(ax: Axes, log: pd.DataFrame, col: str, **style: Any) -> None:
    """One run's `col` against step; markers (thinned on long logs) so a single logged point shows."""
    pts = log[["step", col]].apply(pd.to_numeric, errors="coerce").dropna()
    if not pts.empty:
        ax.plot(pts["step"], pts[col], **{"marker": "o", "ms": 3, "markevery": max(1, len(pts) // 25), "lw": 1,
                                          "alpha": 0.8, **style})


CURVE_LABELS = {"loss": "training loss", "lr": "learning rate",
                "online_effective_rank": "online health: effective rank", "online_std": "online health: std of "
                "L2-normalised features", "online_collapsed": "online health: collapsed (1 = yes)"}


def curves(runs: pd.DataFrame, dataset: str, problems: list[Problem]) -> Figure | None:
    """Loss (seq-JEPA's baseline_loss dashed), learning rate and each online probe against step.

    One line per run, coloured by its label (method and the settings that set it apart); a run whose result.json
    says ``collapsed`` is dotted with x markers. The online probes (``online_top1``, ``online_knn_top1``,
    ``online_<target>_r2``) are logged every ``train.online_probe_every`` steps and once at step 0.
    """
    paths = [(run_label(r), T.scalar(r.get("m.collapsed")) is True, Path(r["path"]) / "log.jsonl")
             for r in runs.to_dict("records")]
    logs = [(m, bad, _read_log(p, problems)) for m, bad, p in paths if p.exists()]
    logs = [(m, bad, log) for m, bad, log in logs if "step" in log.columns
            and ("loss" in log.columns or any(c.startswith("online_") for c in log.columns))]
    if not logs:
        return None
    online = sorted({c for _, _, log in logs for c in log.columns if c.startswith("online_")},
                    key=lambda c: (c != "online_top1", c != "online_knn_top1", c in CURVE_LABELS, c))  # top-1 first
    panels = ["loss", "lr", *online]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(5.0 * ncols, 3.8 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    methods = sorted({m for m, _, _ in logs})
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))
    baseline = False
    for method, bad, log in logs:
        style = {"ls": ":", "marker": "x", "ms": 6} if bad else {}
        for ax, col in zip(axes, panels, strict=False):
            if col in log:
                _series(ax, log, col, **{"color": colors[method], **style})
        if "baseline_loss" in log:
            _series(axes[0], log, "baseline_loss", color=colors[method], ls="--", mfc="none")
            baseline = True
    for ax, col in zip(axes, panels, strict=False):
        label = CURVE_LABELS.get(col) or "online probe: " + T.METRIC_LABELS.get(col[7:], col[7:])
        ax.set(xlabel="training step", ylabel=label, title=f"{label} vs step")
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[m], marker="o", ms=3, label=m) for m in methods]
    if baseline:
        handles.append(Line2D([], [], color="0.3", ls="--", label="baseline_loss (batch-mean target)"))
    if any(bad for _, bad, _ in logs):
        handles.append(Line2D([], [], color="black", ls=":", marker="x", label="collapsed run: dotted, x"))
    axes[0].legend(handles=handles, fontsize=8, title="run")
    fig.suptitle(f"{dataset}: training curves (one line per run, from log.jsonl)")
    return fig


def write_figures(runs: pd.DataFrame, cells: pd.DataFrame, seq_cells: pd.DataFrame, paper: T.Paper | None,
                  folder: Path, compare_mini: bool = False) -> tuple[list[Path], list[Problem]]:
    """Every figure for every dataset present; returns (paths written, unreadable-log findings)."""
    written: list[Path] = []
    problems: list[Problem] = []
    cells, seq_cells = with_collapse(runs, cells, seq_cells)
    for dataset in sorted(set(cells["dataset"])):
        sub, seq_sub = cells[cells["dataset"] == dataset], seq_cells[seq_cells["dataset"] == dataset]
        figs = {f"tradeoff_{dataset}": tradeoff(sub, paper, dataset, compare_mini),
                f"seqlen_{dataset}": seqlen(sub, seq_sub, paper, dataset, compare_mini),
                f"curves_{dataset}": curves(runs[runs["dataset"] == dataset], dataset, problems)}
        with_lens = [c for c in seq_sub.to_dict("records")
                     if any(T.get_stat(c, f"{T.BY_EVAL_LEN}{v}") for v in T.eval_lens(seq_sub))]
        groups: dict[str, list[dict]] = {}
        for c in with_lens:  # one heatmap per method / act_cond / variant; its columns are the M_tr values
            groups.setdefault(_line_key(c), []).append(c)
        for i, (_, members) in enumerate(sorted(groups.items())):
            c = members[0]
            name = c["method"] + ("-noact" if T.scalar(c["act_cond"]) is False else "")
            name += f"-v{i}" if c["variant"] else ""  # variants are spelled out in the figure title
            stem = f"heatmap_{re.sub(r'[^A-Za-z0-9.+-]+', '-', name)}_{dataset}"
            figs[stem] = heatmap(c, pd.DataFrame(members), paper, compare_mini)
        for stem, fig in figs.items():
            if fig is not None:
                written += _save(fig, folder, stem)
    return written, problems
