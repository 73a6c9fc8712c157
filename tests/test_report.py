"""results/report.html and the outputs a collaborator opens: self-contained, readable, loadable.

One aggregation (figures included, about 10 s on 2 cores) of the committed fixture tree of
tests/test_aggregate.py plus three runs written here: a seq-JEPA run with k-NN top-1, online probes and
baseline_loss in its log, a SimCLR run that logged a single step, and a corrupt result.json under a folder
whose name is HTML (the report must escape it). The page is then checked as text and, when Chromium is
installed, rendered in a headless browser.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchmark.reporting import aggregate as A
from benchmark.reporting import plots as P
from benchmark.reporting.html_report import markdown_blocks
from tests.test_aggregate import RUNS

SOURCE = RUNS / "seqjepa/3diebench/L3/seed0-aaaa0001/result.json"
EVIL = "evil<img src=x onerror=alert(1)>"
TITLE = "Report test <fixture>"


def _run(root: Path, name: str, log: list[dict], **changes) -> Path:
    """A finished run derived from the fixture's seq-JEPA record (as test_aggregate derives its variants)."""
    src = json.loads(SOURCE.read_text())
    metrics = {**src["metrics"], **changes.pop("metrics", {})}
    config = {**src["config"], **changes.pop("config", {})}
    record = {**src, **changes, "metrics": metrics, "config": config}
    run = root / name
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps(record))
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log))
    return run


def _logs_with_online_probes() -> list[dict]:
    probes = lambda s: {"online_top1": 20.0 + s, "online_knn_top1": 18.0 + s, "online_rotation_r2": 0.01 * s}
    return [{"step": 0, "epoch": 0, **probes(0)},
            *({"step": s, "epoch": 0, "loss": 1.0 / s, "lr": 1e-3, "baseline_loss": 0.9} for s in (10, 20)),
            {"step": 30, "epoch": 1, "loss": 0.02, "lr": 1e-3, "baseline_loss": 0.9, **probes(30)}]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    shutil.copytree(RUNS, runs)
    one = {"seq_len": 1, "eval_seq_len": 1}
    _run(runs, "extra/seqjepa-L1", _logs_with_online_probes(), **one,
         config={"data": {"seq_len": 1, "image_size": 128, "latent_type": "rot"},
                 "probe": {"eval_seq_len": 1, "eval_seq_lens": [1]}},
         metrics={"top1": 84.5, "knn_top1": 80.25, "top1_by_eval_len": {"1": 84.5}})
    _run(runs, "extra/simclr-L1", [{"step": 5, "epoch": 0, "loss": 4.2, "lr": 1e-3}], **one, method="simclr",
         config={"method": "simclr", "data": {"seq_len": 1}, "probe": {"eval_seq_len": 1}},
         metrics={"top1": 81.0, "top1_by_eval_len": {"1": 81.0}})
    (runs / EVIL).mkdir()
    (runs / EVIL / "result.json").write_text("{ not json")
    out = root / "out"
    old = os.umask(0o022)
    try:
        A.main(["--runs", str(runs), "--out", str(out), "--title", TITLE])
    finally:
        os.umask(old)
    return out, (out / "report.html").read_text()


class _Refs(HTMLParser):
    """Every URL-bearing attribute of a page, and the tags used."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data", "poster")]


def test_report_is_self_contained(report):
    out, html = report
    refs = _Refs()
    refs.feed(html)
    assert not refs.tags & {"script", "link", "iframe", "object", "embed"}
    images = [v for tag, k, v in refs.urls if tag == "img"]
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(images) == len(pngs) >= 8
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    others = [(tag, k, v) for tag, k, v in refs.urls if tag != "img"]
    assert others and all(v.startswith("#") for _, _, v in others), others  # in-page anchors only
    assert "url(" not in html and "@import" not in html and "http://" not in html and "https://" not in html


def test_report_holds_tables_figures_coverage_and_provenance(report):
    _, html = report
    assert "<title>Report test &lt;fixture&gt;</title>" in html
    for title in ("3DIEBench main table (3diebench)", "Action-conditioning ablation", "Sequence-length ablation",
                  "Image dataset cifar100"):
        assert title in html
    assert "<td class=\"num\">86.25 ± 0.35 (n=2)</td>" in html and "<td class=\"num ref\">86.14</td>" in html
    assert "k-NN top-1 (%)" in html and "80.25 (n=1)" in html  # the optional column, one run has it
    for fig in ("tradeoff_3diebench", "seqlen_3diebench", "heatmap_seqjepa_3diebench", "curves_3diebench",
                "curves_cifar100"):
        assert f'alt="{fig}"' in html
    assert "Coverage of <code>" in html and "schema_version 99" in html and "corrupt result.json" in html
    assert EVIL not in html and "evil&lt;img src=x onerror=alert(1)&gt;" in html  # autoescaped
    assert "<code>000000000000</code>" in html and "2.14.1, no CUDA" in html and "runs aggregated" in html


def test_every_csv_loads_with_named_columns_and_has_a_sidecar(report):
    out, _ = report
    csvs = sorted(out.rglob("*.csv"))
    assert out / "runs.csv" in csvs and len(csvs) >= 5
    for path in csvs:
        frame = pd.read_csv(path)
        assert len(frame) and len(frame.columns) > 3, path
        assert not [c for c in frame.columns if c.startswith(("Unnamed", "#"))], path
        if path.parent.name == "tables":
            side = json.loads(path.with_suffix(".provenance.json").read_text())
            assert side["generated_by"].startswith("generated by") and side["runs_aggregated"] == 7
            assert list(side["csv_columns"]) == list(frame.columns)
    main = pd.read_csv(out / "tables" / "main_3diebench.csv")
    assert main.loc[main["knn_top1"].notna(), "knn_top1"].tolist() == [80.25]


def test_outputs_are_0644_under_umask_022(report):
    out, _ = report
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"report.html", "coverage.md", "runs.csv"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_curves_show_one_logged_point_and_the_online_probes(tmp_path):
    single, probed = tmp_path / "single", tmp_path / "probed"
    single.mkdir()
    probed.mkdir()
    (single / "log.jsonl").write_text(json.dumps({"step": 5, "loss": 4.2, "lr": 1e-3}) + "\n")
    (probed / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in _logs_with_online_probes()))
    runs = pd.DataFrame([{"method": "simclr", "path": str(single)}, {"method": "seqjepa", "path": str(probed)}])
    fig = P.curves(runs, "3diebench", [])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[:2] == ["training loss vs step", "learning rate vs step"]
    assert {"online probe: top-1 (%) vs step", "online probe: k-NN top-1 (%) vs step",
            "online probe: rot. R² vs step"} <= set(titles)
    loss = fig.axes[0].lines
    one = next(line for line in loss if len(line.get_xdata()) == 1)
    assert one.get_marker() == "o"  # a run that logged once is a visible dot, not an invisible segment
    assert any(line.get_linestyle() == "--" for line in loss)  # seq-JEPA's baseline_loss
    online = next(ax for ax in fig.axes if ax.get_title().startswith("online probe: top-1"))
    assert list(online.lines[0].get_xdata()) == [0, 30]  # step 0 (random init) and the last probe


def test_markdown_blocks_keep_text_as_data():
    blocks = markdown_blocks("<!-- x -->\n# T `a<b>`\n\n- one\n- two `p`\n\n| h | k |\n|---|---:|\n| 1 | 2 |\n"
                             "plain")
    assert [b["kind"] for b in blocks] == ["heading", "list", "table", "para"]
    assert blocks[0]["text"] == [("T ", False), ("a<b>", True)]
    assert blocks[1]["items"] == [[("one", False)], [("two ", False), ("p", True)]]
    assert blocks[2]["header"] == [[("h", False)], [("k", False)]] and blocks[2]["rows"] == [[[("1", False)],
                                                                                             [("2", False)]]]


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not found on PATH (.ci/run installs the Debian package `chromium` as root)")
    Image = pytest.importorskip("PIL.Image")
    out, _ = report
    shot = tmp_path / "out.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           (out / "report.html").resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {res.returncode}):\n{res.stderr[-2000:]}"
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1200, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20)
        white = sum(n for n, c in colours if min(c) >= 250)
    assert len(colours) > 50, "the page rendered as a few flat colours"
    assert 1 - white / (1200 * 2000) > 0.01, "the page rendered (almost) blank"
