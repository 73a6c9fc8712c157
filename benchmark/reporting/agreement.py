"""Agreement with the paper as a number: rank correlation between our values and the published ones.

For one metric of one table, the rows that have both our value and a published value are compared by
Spearman's rho (Pearson correlation of the ranks, ties given their average rank) and Kendall's tau-b (which
corrects for ties), both from scipy.stats. Rows whose runs collapsed (result.json ``collapsed``) are left out
and counted: a collapsed representation says nothing about the method's ordering. Below MIN_ROWS rows, or
when either side is constant (every value tied), a rank correlation is not defined and the reason is given
instead of a number.

Pure functions; used by benchmark/reporting/tables.py (Markdown, LaTeX, provenance, report.html) and the pattern study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIN_ROWS = 3  # fewer pairs give no meaningful rank correlation (two points are always +-1)
NOTE = ("Rank correlation between our means and the published values over the rows that have both: Spearman "
        "ρ (ties get their average rank) and Kendall τ-b; rows with a collapsed run are left out and counted. "
        f"Not defined below {MIN_ROWS} rows or when one side has a single distinct value.")


@dataclass(frozen=True)
class Agreement:
    """Rank agreement of one metric: `n` rows compared, `collapsed` rows with both values left out."""

    what: str  # metric label, e.g. "rot. R²" (with the dataset when a table holds several)
    n: int
    collapsed: int
    spearman: float | None  # None: not defined, see `why`
    kendall: float | None
    why: str = ""

    def number(self, value: float | None) -> str:
        return f"{value:.2f}" if value is not None else f"not defined ({self.why})"

    def sentence(self) -> str:
        """One line, e.g. "rot. R²: Spearman ρ 0.24, Kendall τ 0.18 over 10 rows (1 collapsed left out)"."""
        left = f" ({self.collapsed} collapsed left out)" if self.collapsed else ""
        if self.spearman is None:
            return f"{self.what}: not defined ({self.why}){left}"
        return (f"{self.what}: Spearman ρ {self.spearman:.2f}, Kendall τ {self.kendall:.2f} over {self.n} rows"
                f"{left}")

    def record(self) -> dict[str, Any]:
        return asdict(self)


def rank_agreement(what: str, ours: Sequence[float], published: Sequence[float],
                   collapsed: Sequence[bool] | None = None) -> Agreement:
    """Spearman and Kendall correlation of `ours` with `published` (same order, one entry per row).

    Pairs with a non-finite value on either side are dropped; pairs whose row is `collapsed` are dropped and
    counted.
    """
    flags = list(collapsed) if collapsed is not None else [False] * len(ours)
    if not len(ours) == len(published) == len(flags):
        raise ValueError(f"{what}: {len(ours)} values of ours, {len(published)} published, {len(flags)} flags")
    pairs = [(float(o), float(p), bool(c)) for o, p, c in zip(ours, published, flags, strict=True)
             if o is not None and p is not None and math.isfinite(o) and math.isfinite(p)]
    kept = [(o, p) for o, p, c in pairs if not c]
    n, left_out = len(kept), len(pairs) - len(kept)
    if n < MIN_ROWS:
        return Agreement(what, n, left_out, None, None, f"{n} row{'s' * (n != 1)} < {MIN_ROWS}")
    xs, ys = [o for o, _ in kept], [p for _, p in kept]
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        side = "ours" if len(set(xs)) == 1 else "published"
        return Agreement(what, n, left_out, None, None, f"all {side} values tied")
    from scipy import stats  # only when there is something to correlate

    return Agreement(what, n, left_out, float(stats.spearmanr(xs, ys).statistic),
                     float(stats.kendalltau(xs, ys).statistic))


def markdown(agreements: Sequence[Agreement], heading: str = "Agreement with the published values") -> list[str]:
    """A small Markdown table (one row per metric) under a ### heading, then NOTE; [] when nothing to show."""
    if not agreements:
        return []
    lines = [f"### {heading}", "", "| metric | rows compared | collapsed, left out | Spearman ρ | Kendall τ |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {a.what} | {a.n} | {a.collapsed} | {a.number(a.spearman)} | {a.number(a.kendall)} |"
              for a in agreements]
    return [*lines, "", f"- {NOTE}"]
