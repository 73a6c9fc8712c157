"""The pattern study's report: its table, trade-off figure and criteria, beside the paper's Table 1.

    python -m slurm.launch --sweep pattern --executor local      # the runs (results/runs/pattern/...)
    python -m benchmark.pattern                                   # -> docs/pattern.md (table), docs/pattern.png

Reads every finished run of the ``pattern`` sweep (``benchmark.reporting.aggregate.load_runs``), averages each row
over its seeds (mean and sample standard deviation), and rewrites the block between the markers
``<!-- pattern:start -->`` and ``<!-- pattern:end -->`` of ``docs/pattern.md`` (the prose around it is
kept), and the figure: top-1 against relative-rotation R^2, ours beside the published 3DIEBench numbers.
The criteria of the study (issue "pattern": seq-JEPA above its random init and above its no-action
ablation, SIE above VICReg) are checked per seed and printed with their margins.

Representation health (benchmark/probes/health.py): a row with a run whose result.json says ``collapsed`` is
marked in the table ("collapsed" and the seeds) and the figure (a black x), and a criterion involving a
collapsed run is not decided: it says "not compared: <row> collapsed" with the margins for information, since a
collapsed representation has no class or pose structure to compare (top-1 and R² near chance by construction).
The effective rank column is that of each run's headline top-1 representation.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.infra.errors import SeqbenchError, user_message
from benchmark.infra.fileio import atomic_write_bytes, atomic_write_text
from benchmark.reporting import tables as T
from benchmark.reporting.aggregate import load_runs
from benchmark.reporting.agreement import markdown as agreement_markdown

START, END = "<!-- pattern:start -->", "<!-- pattern:end -->"
METRICS = ("top1", "rotation_r2", "color_r2", "indiv_rotation_r2", "images_per_s")
TABLE1_METRICS = ("top1", "rotation_r2", "indiv_rotation_r2")  # compared by rank with the paper


@dataclass(frozen=True)
class Row:
    key: str  # row identity: method, "seqjepa (no actions)", "seqjepa (random init)"
    label: str
    paper_method: str | None  # method name in paper_results.yaml, or None
    paper_act_cond: bool | None = None


ROWS = (
    Row("byol", "BYOL", "byol"), Row("vicreg", "VICReg", "vicreg"), Row("simclr", "SimCLR", "simclr"),
    Row("equimod", "EquiMod", "equimod"), Row("sen", "SEN", "sen"), Row("cond-byol", "Conditional BYOL", "cond-byol"),
    Row("sie", "SIE", "sie"), Row("contextssl", "ContextSSL", "contextssl"),
    Row("seqjepa-noact", "seq-JEPA without actions", "seqjepa", False),
    Row("seqjepa", "seq-JEPA", "seqjepa", True), Row("seqjepa-init", "seq-JEPA at random init (--epochs 0)", None),
)
# (name, row, reference row, metric, required margin): per seed, row - reference >= margin
CRITERIA = (
    ("seq-JEPA rotation R² above random init", "seqjepa", "seqjepa-init", "rotation_r2", 0.15),
    ("seq-JEPA rotation R² above seq-JEPA without actions", "seqjepa", "seqjepa-noact", "rotation_r2", 0.10),
    ("SIE rotation R² above VICReg", "sie", "vicreg", "rotation_r2", 0.05),
    ("seq-JEPA top-1 above random init", "seqjepa", "seqjepa-init", "top1", 5.0),
)


def row_key(run: pd.Series) -> str:
    if run["method"] != "seqjepa":
        return str(run["method"])
    if run.get("cfg.train.epochs") == 0:
        return "seqjepa-init"
    return "seqjepa" if bool(run.get("act_cond")) else "seqjepa-noact"


def load(runs_dir: Path) -> pd.DataFrame:
    """Finished runs under ``runs_dir`` -> one row per run with ``row`` and the metric columns."""
    runs, _ = load_runs(runs_dir)
    if runs.empty:
        raise SeqbenchError(f"no finished runs under {runs_dir}; run the sweep first: python -m slurm.launch "
                            f"--sweep pattern --executor local")
    runs = runs.copy()
    runs["row"] = runs.apply(row_key, axis=1)
    for m in METRICS:
        col = f"m.{m}"
        runs[m] = pd.to_numeric(runs[col], errors="coerce") if col in runs else math.nan
    # Health (absent from results written before it existed: unknown, never "collapsed").
    runs["collapsed"] = [T.scalar(v) is True for v in runs.get("m.collapsed", pd.Series(None, index=runs.index))]
    runs["collapse_reason"] = [str(T.scalar(v) or "") for v in
                               runs.get("m.collapse_reason", pd.Series(None, index=runs.index))]
    runs["effective_rank"] = [pd.to_numeric(r.get(f"m.health_{r.get('m.headline_source.top1')}_effective_rank"),
                                            errors="coerce") for r in runs.to_dict("records")]
    return runs


def collapsed_seeds(runs: pd.DataFrame, row: str) -> list[int]:
    """Seeds of ``row`` whose run is flagged collapsed in result.json."""
    sub = runs[(runs["row"] == row) & runs["collapsed"]]
    return sorted(int(s) for s in sub["seed"])


def _label(runs: pd.DataFrame, row: Row) -> str:
    bad = collapsed_seeds(runs, row.key)
    return row.label + (f" **(collapsed: seed {', '.join(map(str, bad))})**" if bad else "")


def _fmt(values: pd.Series, digits: int) -> str:
    v = values.dropna()
    if v.empty:
        return "—"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def paper_value(paper: T.Paper, row: Row, metric: str) -> float | None:
    """Table 1 (3DIEBench; seq-JEPA at M_tr = M_val = 3) value of ``row``, if published."""
    if row.paper_method is None:
        return None
    ident = {"dataset": "3diebench", "method": row.paper_method, "seq_len": 3, "eval_seq_len": 3,
             "act_cond": row.paper_act_cond}
    ref = paper.lookup(ident, metric, kinds=("row",))
    return None if ref is None else ref.value


def table(runs: pd.DataFrame, paper: T.Paper) -> str:
    head = ("| method | seeds | top-1 (%) | rotation R² | colour R² | indiv. rot. R² | images/s | eff. rank "
            "| paper top-1 | paper rotation R² |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for row in ROWS:
        sub = runs[runs["row"] == row.key]
        if sub.empty:
            continue
        p_top1, p_rot = paper_value(paper, row, "top1"), paper_value(paper, row, "rotation_r2")
        lines.append(f"| {_label(runs, row)} | {', '.join(str(s) for s in sorted(sub['seed']))} "
                     f"| {_fmt(sub['top1'], 1)} | {_fmt(sub['rotation_r2'], 3)} | {_fmt(sub['color_r2'], 3)} "
                     f"| {_fmt(sub['indiv_rotation_r2'], 3)} | {_fmt(sub['images_per_s'], 0)} "
                     f"| {_fmt(sub['effective_rank'], 1)} "
                     f"| {'—' if p_top1 is None else f'{p_top1:.1f}'} | {'—' if p_rot is None else f'{p_rot:.2f}'} |")
    return "\n".join(lines)


def criteria(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(criterion, per-seed margins, verdict) per criterion. The verdict is "yes" / "NO" (the margin holds for
    every seed present in both rows or not), "n/a" without a paired seed, and "not compared: <row> collapsed
    (seed ...)" when a paired run of either row is collapsed (its margins are shown, not judged)."""
    labels = {r.key: r.label for r in ROWS}
    out = []
    for name, a, b, metric, need in CRITERIA:
        ra = runs[runs["row"] == a].set_index("seed")[metric]
        rb = runs[runs["row"] == b].set_index("seed")[metric]
        seeds = sorted(set(ra.index) & set(rb.index))
        if not seeds:
            out.append((f"{name} (>= {need:g})", "no paired runs", "n/a"))
            continue
        diffs = [float(ra[s] - rb[s]) for s in seeds]
        text = ", ".join(f"seed {s}: {d:+.3f}" for s, d in zip(seeds, diffs, strict=True))
        bad = [f"{labels[r]} collapsed (seed {', '.join(map(str, c))})" for r in (a, b)
               if (c := [s for s in collapsed_seeds(runs, r) if s in seeds])]
        verdict = f"not compared: {'; '.join(bad)}" if bad else ("yes" if all(d >= need for d in diffs) else "NO")
        out.append((f"{name} (>= {need:g})", text, verdict))
    return out


def figure(runs: pd.DataFrame, paper: T.Paper, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axp) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.get_cmap("tab20").colors
    for i, row in enumerate(ROWS):
        sub = runs[runs["row"] == row.key]
        if not sub.empty:
            x, y = sub["top1"], sub["rotation_r2"]
            bad = collapsed_seeds(runs, row.key)
            label = row.label + (f" (collapsed: seed {', '.join(map(str, bad))})" if bad else "")
            ax.errorbar(x.mean(), y.mean(), xerr=x.std(ddof=1) if len(x) > 1 else None,
                        yerr=y.std(ddof=1) if len(y) > 1 else None, fmt="o", color=colours[i], label=label,
                        capsize=3, mfc="white" if bad else colours[i])
            if bad:
                ax.plot(x.mean(), y.mean(), marker="x", color="black", ms=11, mew=2, ls="none", zorder=5)
        p_top1, p_rot = paper_value(paper, row, "top1"), paper_value(paper, row, "rotation_r2")
        if p_top1 is not None and p_rot is not None:
            axp.plot(p_top1, p_rot, "s", color=colours[i], label=row.label)
    ax.set(title="ours: pose-only 3diebench-mini, CPU regime (mean ± sd over seeds)", xlabel="top-1 (%)",
           ylabel="relative-rotation R²")
    axp.set(title="published: 3DIEBench, seq-JEPA Table 1", xlabel="top-1 (%)", ylabel="relative-rotation R²")
    for a in (ax, axp):
        a.grid(alpha=0.3)
    if runs["collapsed"].any():
        ax.plot([], [], marker="x", color="black", ls="none", label="collapsed (hollow, x): result.json `collapsed`")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), "figure")  # atomic, umask mode, like every aggregator output


def report(runs_dir: Path, doc: Path, fig_path: Path, paper_path: Path = T.PAPER_YAML) -> str:
    """Write the figure and the generated block of ``doc``; return the block."""
    runs = load(runs_dir)
    paper = T.load_paper(paper_path)
    lines = [START, "", f"Generated by `python -m benchmark.pattern --runs {runs_dir}` from {len(runs)} finished "
             "runs; mean ± sample sd over seeds. Paper columns: seq-JEPA Table 1 on 3DIEBench (M_tr = M_val = 3 "
             "for seq-JEPA); colour R² is not in the paper's Table 1. eff. rank: effective rank of the headline "
             "top-1 representation; a collapsed run (docs/protocol.md, \"Representation health\") is marked and "
             "not compared in the criteria.", "", table(runs, paper), ""]
    table1 = [(r.paper_method, runs[runs["row"] == r.key], {m: paper_value(paper, r, m) for m in TABLE1_METRICS})
              for r in ROWS if r.paper_method and (runs["row"] == r.key).any()]
    lines += [*agreement_markdown(T.runs_agreement(table1, TABLE1_METRICS), "Agreement with the paper's Table 1"), ""]
    lines += ["| criterion (per seed) | margins | holds |", "|---|---|---|"]
    for name, text, verdict in criteria(runs):
        lines.append(f"| {name} | {text} | {verdict} |")
    lines += ["", f"![trade-off]({fig_path.name})", "", END]
    block = "\n".join(lines)
    figure(runs, paper, fig_path)
    text = doc.read_text() if doc.is_file() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    atomic_write_text(doc, text, "generated document")
    return block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.pattern", description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="results/runs/pattern", help="the pattern sweep's run directories")
    p.add_argument("--doc", default="docs/pattern.md", help="Markdown file whose generated block is rewritten")
    p.add_argument("--figure", default="docs/pattern.png", help="trade-off figure (PNG)")
    args = p.parse_args(argv)
    try:
        block = report(Path(args.runs), Path(args.doc), Path(args.figure))
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
