"""benchmark/reporting/tables.py: tables as specs, methods and datasets describing themselves, collapsed runs
marked in every format, the agreement with the paper, and ContextSSL's context row.

One aggregation (no figures) of a tree written here from the fixture's seq-JEPA record: BYOL with one of two
seeds collapsed, SIE collapsed, VICReg / EquiMod healthy, SimCLR from before the health check (no `collapsed`
key), ContextSSL with the context keys. Healthy rows are the published values shifted (top-1 + 1) or halved
(R²), so their ranks agree exactly with the paper's; collapsed rows are far off and must not count.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from benchmark.core import registry
from benchmark.reporting import aggregate as A
from benchmark.reporting import tables as T
from tests.test_report import _run

PAPER = {"byol": (82.90, 0.12, 0.25), "simclr": (81.13, 0.35, 0.54), "vicreg": (80.48, 0.20, 0.36),
         "equimod": (84.29, 0.32, 0.55), "sie": (77.49, 0.58, 0.62), "contextssl": (80.4, 0.74, 0.78)}
# (method, seed, extra metrics): healthy rows follow the paper's order, collapsed ones break it.
RUNS = [
    ("byol", 0, {"collapsed": True, "collapse_reason": "effective rank 2.6 < 4"}),
    ("byol", 1, {"collapsed": False, "collapse_reason": ""}),
    ("sie", 0, {"collapsed": True, "collapse_reason": "per-dimension std 0.001"}),
    ("vicreg", 0, {"collapsed": False}),
    ("equimod", 0, {"collapsed": False}),
    ("simclr", 0, {}),  # written before the health check: unknown, never marked
    ("contextssl", 0, {"collapsed": False, "context_top1": 81.4, "context_rotation_r2": 0.37,
                       "context_indiv_rotation_r2": 0.39, "context_color_r2": 0.05}),
]


def _metrics(method: str, extra: dict) -> dict:
    top1, rot, indiv = PAPER[method]
    if extra.get("collapsed"):
        top1, rot, indiv = {"byol": (99.0, 0.9, 0.9), "sie": (10.0, 0.0, 0.0)}[method]
    elif method == "contextssl":
        top1, rot, indiv = 10.0, 0.01, 0.02  # the encoder: far off, and never compared with the paper
    else:
        top1, rot, indiv = top1 + 1, rot / 2, indiv / 2
    return {"top1": top1, "rotation_r2": rot, "indiv_rotation_r2": indiv, "color_r2": 0.0,
            "top1_by_eval_len": {"1": top1}, **extra}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("health")
    for method, seed, extra in RUNS:
        _run(root / "runs", f"{method}/seed{seed}", [], method=method, seed=seed, seq_len=1, eval_seq_len=1,
             config={"method": method, "seed": seed, "data": {"seq_len": 1}, "probe": {"eval_seq_len": 1}},
             metrics=_metrics(method, extra))
    A.aggregate(root / "runs", root / "out", plots=False)
    return root / "out"


def test_collapsed_rows_are_marked_in_markdown_with_the_reason(out):
    md = (out / "tables" / "main_3diebench.md").read_text()
    assert "| byol (collapsed 1/2‡) | 1 | 1 | 91.45 ± 10.68 (n=2) | 82.90 |" in md  # one of its two runs
    assert "| sie (collapsed‡) | 1 | 1 |" in md
    for healthy in ("vicreg", "equimod", "simclr"):  # simclr: no `collapsed` key, so unknown and unmarked
        assert f"| {healthy} | 1 | 1 |" in md
    note = next(line for line in md.splitlines() if line.startswith("- ‡ collapsed"))
    assert "byol 3diebench M_tr=1 M_val=1: 1 of 2 runs (effective rank 2.6 < 4)" in note
    assert "sie 3diebench M_tr=1 M_val=1: 1 of 1 runs (per-dimension std 0.001)" in note
    seqlen = (out / "tables" / "seqlen_ablation.md").read_text()
    assert "| byol (collapsed 1/2‡) | 3diebench | 1 | ours |" in seqlen and "- ‡ collapsed" in seqlen


def test_agreement_leaves_collapsed_rows_out_and_counts_them(out):
    md = (out / "tables" / "main_3diebench.md").read_text()
    assert "### Agreement with the published values" in md
    # top-1 and rot. R²: vicreg, equimod, simclr and contextssl (context); byol and sie left out.
    assert "| top-1 (%) | 4 | 2 | 1.00 | 1.00 |" in md
    assert "| rot. R² | 4 | 2 | 1.00 | 1.00 |" in md
    assert "| indiv. rot. R² | 4 | 2 | 1.00 | 1.00 |" in md
    side = json.loads((out / "tables" / "main_3diebench.provenance.json").read_text())
    top1 = side["agreement_with_paper"][0]
    assert top1["what"] == "top-1 (%)" and (top1["n"], top1["collapsed"]) == (4, 2)
    assert top1["spearman"] == pytest.approx(1.0) and top1["kendall"] == pytest.approx(1.0)
    tex = (out / "tables" / "main_3diebench.tex").read_text()
    assert "% agreement with the paper: top-1 (%): Spearman ρ 1.00, Kendall τ 1.00 over 4 rows " \
           "(2 collapsed left out)" in tex


def test_latex_csv_and_html_mark_collapsed_rows(out):
    tex = (out / "tables" / "main_3diebench.tex").read_text()
    assert r"byol (collapsed 1/2$^\ddagger$) & 1 & 1 &" in tex and r"sie (collapsed$^\ddagger$) &" in tex
    frame = pd.read_csv(io.StringIO((out / "tables" / "main_3diebench.csv").read_text()))
    rows = frame.set_index("method")
    assert list(frame.columns[-2:]) == ["collapsed_runs", "collapse_reason"]
    assert rows.loc["byol", "collapsed_runs"] == 1 and rows.loc["byol", "collapse_reason"] == "effective rank 2.6 < 4"
    assert rows.loc["vicreg", "collapsed_runs"] == 0 and pd.isna(rows.loc["simclr", "collapsed_runs"])
    side = json.loads((out / "tables" / "main_3diebench.provenance.json").read_text())
    assert list(side["csv_columns"]) == list(frame.columns)
    html = (out / "report.html").read_text()
    assert '<tr class="collapsed"><td class="text">byol (collapsed 1/2‡)</td>' in html
    assert 'id="agreement-main_3diebench"' in html and "<td>top-1 (%)</td><td class=\"num\">4</td>" in html


def test_results_without_health_add_no_column_and_no_mark(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "old", [], metrics={})  # the fixture's record: no `collapsed` key
    A.aggregate(runs, tmp_path / "out", plots=False)
    for name in ("main_3diebench", "seqlen_ablation"):
        assert "collapsed" not in (tmp_path / "out" / "tables" / f"{name}.csv").read_text()
        assert "‡" not in (tmp_path / "out" / "tables" / f"{name}.md").read_text()


def test_contextssl_published_numbers_go_to_its_context_row(out):
    md = (out / "tables" / "main_3diebench.md").read_text()
    # The encoder row: ours only, no published value nor difference.
    assert "| contextssl | 1 | 1 | 10.00 (n=1) | — | — | 0.010 (n=1) | — | — | 0.020 (n=1) | — | — |" in md
    # The context row reads context_* and is compared with the published ContextSSL row.
    assert ("| contextssl (context) | 1 | 1 | 81.40 (n=1) | 80.40 | +1.00 | 0.370 (n=1) | 0.740 | -0.370 "
            "| 0.390 (n=1) | 0.780 | -0.390 | 0.050 (n=1) |") in md
    assert "note: contextssl (context): ContextSSL's transformer output" in md
    frame = pd.read_csv(io.StringIO((out / "tables" / "main_3diebench.csv").read_text())).set_index("method")
    assert frame.loc["contextssl (context)", "top1"] == pytest.approx(81.4)
    assert pd.isna(frame.loc["contextssl", "top1_paper"]) and frame.loc["contextssl (context)", "top1_paper"] == 80.4


def test_a_table_is_a_spec():
    """A new table is one TableSpec: the same builder and renderers make it."""
    runs, _ = A.load_runs(Path(__file__).parent / "fixtures" / "results_tree" / "runs" / "byol")
    runs = A.assign_cells(runs)
    runs, _ = A.drop_duplicates(runs)
    cells = T.cell_stats(runs, runs["cell"])
    spec = T.TableSpec("byol_top1", "BYOL alone", methods=("byol",), metrics=("top1",))
    paper = T.load_paper(T.PAPER_YAML)
    (table,) = T.build_tables(cells, cells, paper, False, specs=(spec,))
    assert [c.label for c in table.columns] == ["Method", "M_tr", "M_val", "top-1 (%)", "paper", "Δ"]
    assert T.cell_text(table.rows[0][3]) == "82.00 (n=1)" and T.cell_text(table.rows[0][4]) == "82.90"
    assert T.build_tables(cells, cells, paper, False, specs=(T.TableSpec("x", "x", methods=("sie",)),)) == []


def test_every_method_declares_its_family_and_label():
    """The classes say it themselves (the families the tables used to list by name), read via the registry."""
    expected = {"seqjepa": "seq-JEPA", "conv-ijepa": "seq-JEPA", "simclr": "invariant", "byol": "invariant",
                "vicreg": "invariant", "simclr+tx": "invariant", "byol+tx": "invariant", "vicreg+tx": "invariant",
                "equimod": "equivariant", "sie": "equivariant", "contextssl": "equivariant", "sen": "equivariant",
                "cond-byol": "equivariant", "vicreg-traj": "equivariant"}
    assert sorted(registry.METHODS) == sorted(expected)
    for name, family in expected.items():
        cls = registry.METHODS[name]
        assert {"family", "label"} <= set(vars(cls)), f"{cls.__name__} must declare family and label itself"
        assert T.method_info(name) == (family, cls.label) and cls.label.strip()
    assert T.method_info("cond-byol")[1] == "Conditional BYOL"
    assert T.method_info("external:dino") == ("external", "external:dino")
    assert T.method_info("brand-new") == ("other", "brand-new")


def test_family_and_table_come_from_the_registry(monkeypatch):
    toy = SimpleNamespace(family="equivariant", label="Toy")
    monkeypatch.setitem(registry.METHODS.loaders, "toy", lambda: toy)
    assert T.family("toy") == "equivariant" and T.method_info("toy") == ("equivariant", "Toy")
    # A registered entry's `table` wins over the name; unregistered names keep the old rule.
    monkeypatch.setitem(registry.DATASETS.loaders, "3diebench-toy", lambda: SimpleNamespace(table="image"))
    assert T.table_family("3diebench-toy") == "image"
    assert [T.table_family(d) for d in ("3diebench", "3diebench-mini", "cifar100-mini", "stl10-saccades")] == [
        "3diebench", "3diebench", "image", "image"]
    assert [T.table_family(d) for d in ("3diebench-retired", "foreign", "3diebenchx")] == ["3diebench", "image", None]


def test_runs_agreement_of_a_study_reads_contextssl_context_and_skips_collapsed():
    """What benchmark.studies.pattern prints: groups of runs against Table 1."""
    def runs(values: dict, n: int = 2) -> pd.DataFrame:
        return pd.DataFrame({f"m.{k}": [v] * n for k, v in values.items()})

    groups = [("vicreg", runs({"rotation_r2": 0.1}), {"rotation_r2": 0.20}),
              ("simclr", runs({"rotation_r2": 0.3}), {"rotation_r2": 0.35}),
              ("sie", runs({"rotation_r2": 0.4}), {"rotation_r2": 0.58}),
              ("byol", runs({"rotation_r2": 0.9, "collapsed": True}), {"rotation_r2": 0.12}),
              # The encoder's 0.0 would rank it last; its context output (0.5) is what the paper measured.
              ("contextssl", runs({"rotation_r2": 0.0, "context_rotation_r2": 0.5}), {"rotation_r2": 0.74})]
    (rot, indiv) = T.runs_agreement(groups, ("rotation_r2", "indiv_rotation_r2"))
    assert (rot.what, rot.n, rot.collapsed) == ("rot. R²", 4, 1) and rot.spearman == pytest.approx(1.0)
    assert (indiv.n, indiv.why) == (0, "0 rows < 3")
    # Without the context keys (results from before they existed) ContextSSL is not compared at all.
    groups[-1] = ("contextssl", runs({"rotation_r2": 0.0}), {"rotation_r2": 0.74})
    assert T.runs_agreement(groups, ("rotation_r2",))[0].n == 3
