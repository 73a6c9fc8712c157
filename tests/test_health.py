"""Representation health (benchmark/probes/health.py): known answers of the effective rank and the normalised std,
and the collapse rule on constant, rank-deficient, near-constant and whitened features."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from benchmark.probes import health


def _gauss(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_effective_rank_known_answers():
    # Orthogonal directions with equal spread: exactly k (the centred matrix has k equal singular values).
    eye = torch.eye(8, dtype=torch.float64)
    x = torch.cat([eye[:4], -eye[:4]])  # +-e_i for i < 4: mean 0, four equal singular values
    assert health.effective_rank(x) == pytest.approx(4.0, abs=1e-9)
    # Singular values (2, 1, 1): p = (.5, .25, .25), entropy 1.5 ln 2 -> exp = 2^1.5.
    x = torch.cat([torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)) * s for s in (1, -1)])
    assert health.effective_rank(x) == pytest.approx(2 ** 1.5, rel=1e-9)
    # A mean shared by every sample is not a dimension: centring removes it.
    assert health.effective_rank(x + 100.0) == pytest.approx(2 ** 1.5, rel=1e-9)


def test_constant_features_are_collapsed():
    x = torch.ones(300, 128) * torch.linspace(-1, 1, 128)
    h = health.assess(x, num_classes=8)
    assert h.effective_rank == 0.0 and h.std == 0.0
    assert h.collapsed and "effective rank 0.00 < 4.2" in h.reason and "std" in h.reason


def test_whitened_gaussian_features_are_healthy():
    d = 128
    h = health.assess(_gauss(4000, d), num_classes=8)
    assert not h.collapsed and h.reason == ""
    # Isotropic: close to full rank, and per-dimension std of the unit vectors 1/sqrt(d).
    assert h.effective_rank > 0.9 * d
    assert h.std == pytest.approx(1 / math.sqrt(d), rel=0.03)


def test_rank_deficient_features_are_collapsed():
    # Variance in 2 directions of 128 (dimensional collapse, as BYOL / SIE in the pattern regime): rank ~2 < 4.2.
    x = _gauss(500, 2) @ _gauss(2, 128, seed=1) + 5.0
    h = health.assess(x, num_classes=8)
    assert 1.0 < h.effective_rank < 2.01 and h.collapsed and "effective rank" in h.reason
    # The same 2 directions are enough for 3 classes (threshold 1): healthy.
    assert not health.assess(x, num_classes=3).collapsed


def test_near_constant_features_are_collapsed_despite_a_high_rank():
    # Every embedding points the same way; the tiny differences are isotropic noise (high effective rank).
    x = torch.ones(400, 64, dtype=torch.float64) + 1e-4 * _gauss(400, 64)
    h = health.assess(x, num_classes=8)
    assert h.effective_rank > 30 and h.collapsed and "std of the normalised features" in h.reason


def test_threshold_is_relative_to_classes_and_dimension():
    assert health.rank_threshold(8, 128) == pytest.approx(4.2)  # the pattern regime: 3.0 / 2.6 vs 6-12
    assert health.rank_threshold(55, 512) == pytest.approx(32.4)
    assert health.rank_threshold(1000, 128) == pytest.approx(76.2)  # capped by the dimension
    # Features with effective rank ~ 10: healthy for 8 classes, collapsed for 55.
    x = _gauss(2000, 10) @ torch.linalg.qr(_gauss(128, 10, seed=2))[0].T
    assert not health.assess(x, 8).collapsed and health.assess(x, 55).collapsed


def test_non_finite_features_are_flagged():
    x = _gauss(50, 16)
    x[3, 2] = math.nan
    h = health.assess(x, 4)
    assert h.collapsed and "non-finite" in h.reason


def test_rows_are_capped_evenly_without_random_draws():
    x = _gauss(health.MAX_ROWS * 3, 32)
    state = torch.random.get_rng_state()
    r = health.effective_rank(x)
    assert torch.equal(state, torch.random.get_rng_state())
    assert r == health.effective_rank(x) and r == pytest.approx(health.effective_rank(x[::3]), rel=1e-3)
    # Rows from the whole matrix, not its head: a degenerate first two thirds does not decide the figure.
    y = torch.cat([torch.zeros(health.MAX_ROWS * 2, 32, dtype=torch.float64), x[: health.MAX_ROWS]])
    assert health.effective_rank(y) > 10


def test_health_metrics_names_headline_collapse_only():
    good, bad = _gauss(600, 32), torch.zeros(600, 32)
    m = health.health_metrics({"encoder": good, "aggregate": bad}, headline=["encoder"], num_classes=8)
    assert set(m) == {"health_encoder_effective_rank", "health_encoder_std", "health_aggregate_effective_rank",
                      "health_aggregate_std", "collapsed", "collapse_reason", "health_rule"}
    assert m["collapsed"] is False and m["collapse_reason"] == "" and m["health_aggregate_effective_rank"] == 0.0
    m = health.health_metrics({"encoder": good, "aggregate": bad}, headline=["encoder", "aggregate"], num_classes=8)
    assert m["collapsed"] is True and m["collapse_reason"].startswith("aggregate: ")
    assert "effective rank 0.00 < 4.2" in m["collapse_reason"] and "encoder" not in m["collapse_reason"]


def test_probe_health_reads_the_bank_or_the_sampled_views_and_m_val():
    n, d = 200, 16
    tr = {"view": {"encoder": torch.zeros(n, 2, d)}, "seq": {"aggregate": {2: torch.zeros(n, d), 3: _gauss(n, d)}}}

    class Bank:
        feats = {"encoder": _gauss(n * 4, d).reshape(n, 4, d)}

    m = health.probe_health(tr, Bank(), 3, ["encoder", "aggregate"], 4)
    assert not m["collapsed"] and m["health_encoder_effective_rank"] > 10
    m = health.probe_health(tr, None, 2, ["aggregate"], 4)
    assert m["collapsed"] and m["health_encoder_effective_rank"] == 0.0 and "aggregate" in m["collapse_reason"]


# --- the aggregator's figures and coverage.md on runs with health figures ---------------------------------------

def _result(out, method: str, metrics: dict, log: list[dict] | None = None, **user) -> None:
    """A finished run written by the real result writer (and, optionally, its log.jsonl)."""
    import json

    from benchmark.config import run_dir
    from benchmark.core.resolve import resolve
    from benchmark.core.results import write_result

    cfg = resolve({"method": method, "dataset": "3diebench-mini", "out": str(out), **user})
    d = run_dir(cfg)
    d.mkdir(parents=True)
    full = {"top1": 50.0, "rotation_r2": 0.2, "images_per_s": 100.0, "train_loss_final": 0.5, "collapsed": False,
            "collapse_reason": "", **metrics}
    write_result(d, cfg, full, {"end_time": "2026-01-01T00:00:00"})
    if log:
        (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))


@pytest.fixture(scope="module")
def health_runs(tmp_path_factory):
    """Two BYOL runs that differ in lr (one collapsed), seq-JEPA trained and at random init (--epochs 0)."""
    out = tmp_path_factory.mktemp("runs")
    bad = {"collapsed": True, "collapse_reason": "encoder: effective rank 2.60 < 4.2", "top1": 19.0,
           "rotation_r2": 0.0}
    log = [{"step": 0, "online_top1": 20.0, "online_effective_rank": 5.0, "online_collapsed": 0},
           {"step": 10, "loss": 1.0, "lr": 1e-3, "online_top1": 20.0, "online_effective_rank": 2.5,
            "online_collapsed": 1}]
    _result(out, "byol", bad, log)
    _result(out, "byol", {"top1": 60.0}, log[:1], train={"lr": 0.002})
    _result(out, "seqjepa", {"top1": 70.0})
    _result(out, "seqjepa", {"top1": 15.0, "train_loss_final": None, "images_per_s": None}, train={"epochs": 0})
    return out


def _frames(out):
    from benchmark.reporting import aggregate as A
    from benchmark.reporting import plots as P
    from benchmark.reporting import tables as T

    runs, _ = A.load_runs(out)
    runs = A.assign_cells(runs)
    cells = T.cell_stats(runs, runs["cell"])
    seq = T.cell_stats(runs, [T.cell_label(r, with_eval=False) for r in runs.to_dict("records")])
    return runs, *P.with_collapse(runs, cells, seq)


def test_plot_labels_tell_runs_apart_and_mark_collapsed_ones(health_runs):
    from benchmark.reporting import plots as P

    runs, cells, seq = _frames(health_runs)
    fig = P.tradeoff(cells, None, "3diebench-mini", False)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    epochs = runs.loc[runs["method"] == "seqjepa", "cfg.train.epochs"].max()  # the method's default
    assert labels == ["byol (lr 0.002) [3]", "byol (lr default) [3] collapsed", "seqjepa (epochs 0 = random init) [3]",
                      f"seqjepa (epochs {epochs}) [3]"]
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in crosses] == [(0.0, 19.0)]
    assert P.COLLAPSED_LEGEND in [t.get_text() for t in ax.get_legend().get_texts()]
    # Sequence-length panels: the collapsed cell's point crossed, its line labelled.
    fig = P.seqlen(cells, seq, None, "3diebench-mini", False)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "byol (lr default) collapsed" in legend
    assert P.COLLAPSED_LEGEND in legend and any(ln.get_marker() == "x" for ln in fig.axes[0].lines)
    # Training curves: the collapsed run dotted with x markers, the online health panels present.
    fig = P.curves(runs, "3diebench-mini", [])
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert "online health: effective rank vs step" in titles and "online health: collapsed (1 = yes) vs step" in titles
    rank_ax = fig.axes[titles.index("online health: effective rank vs step")]
    styles = sorted((len(ln.get_xdata()), ln.get_linestyle(), ln.get_marker()) for ln in rank_ax.lines)
    assert styles == [(1, "-", "o"), (2, ":", "x")]
    assert "collapsed run: dotted, x" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_variant_text():
    from benchmark.reporting.plots import variant_text

    assert variant_text("") == ""
    assert variant_text("train.epochs=0") == "epochs 0 = random init"
    assert variant_text("train.epochs=75, train.lr=0.0020") == "epochs 75, lr 0.002"
    assert variant_text("train.lr=nan, model.ema_decay=0.99") == "lr default, ema_decay 0.99"
    assert variant_text("train.lr=1e-3, probe.lr=0.01") == "train.lr 0.001, probe.lr 0.01"  # same last name
    assert variant_text("probe.eval_seq_lens=[2, 3], model.act_cond=False") == "eval_seq_lens [2, 3], act_cond False"


def test_coverage_says_random_init_has_no_training_figures(health_runs, tmp_path):
    from benchmark.reporting import aggregate as A

    _, problems = A.aggregate(health_runs, tmp_path, plots=False, paper_path=None)
    text = (tmp_path / "coverage.md").read_text()
    init = next(ln for ln in text.splitlines() if "n/a (random init" in ln)
    assert "images_per_s, train_loss_final: n/a (random init" in init
    assert not [p for p in problems if p.kind == "nonfinite"]  # absent by design, not non-finite
    runs_csv = (tmp_path / "runs.csv").read_text().splitlines()[0].split(",")
    assert "na_metrics" not in runs_csv and "m.collapsed" in runs_csv


def test_heatmap_crosses_out_a_collapsed_training_length():
    from benchmark.reporting import plots as P
    from benchmark.reporting import tables as T

    def cell(m_tr: int, collapsed: tuple[int, int]) -> dict:
        stats = {T.stat_col(f"{T.BY_EVAL_LEN}{v}", "mean"): 50.0 + v for v in (1, 3)}
        return {"method": "seqjepa", "dataset": "3diebench-mini", "seq_len": m_tr, "eval_seq_len": 3,
                "act_cond": True, "variant": "", "collapsed": collapsed, **stats}

    group = pd.DataFrame([cell(1, (0, 2)), cell(3, (1, 2))])
    fig = P.heatmap(group.iloc[0].to_dict(), group, None, False)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["1", "3\ncollapsed (1/2 seeds)"] and "x = collapsed M_tr" in ax.get_title()
    crosses = [ln for ln in ax.lines if list(ln.get_xdata()) == [1, 2]]  # both diagonals over column 3 only
    assert len(crosses) == 2 and not [ln for ln in ax.lines if list(ln.get_xdata()) == [0, 1]]
