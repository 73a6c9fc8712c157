"""Live monitoring (benchmark/infra/monitor.py), kNN top-1 (benchmark/probes/knn.py) and progress reports
(benchmark/infra/progress.py): real tiny runs write what the loggers promise, and read back right."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightly.utils.benchmarking import knn_predict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from benchmark.config import ProbeConfig, config_hash
from benchmark.core.resolve import resolve
from benchmark.core.runner import main as run_main
from benchmark.core.runner import run_one
from benchmark.infra import monitor as M
from benchmark.infra.errors import ConfigError
from benchmark.infra.progress import Progress, progress
from benchmark.probes import knn as knn_mod
from benchmark.probes.heads import fit_head, make_head
from benchmark.probes.knn import knn_top1
from tests.conftest import tiny_args
from tests.test_resume import stop_after, tiny_cfg


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    """One tiny seq-JEPA run (4 steps, a log line each) with the tensorboard logger: its run directory."""
    out = tmp_path_factory.mktemp("tb")
    sets = {"train.logger": "tensorboard", "train.log_every": 1, "train.max_steps": 4, "train.epochs": 2,
            "train.online_probe_every": 2}
    assert run_main(tiny_args(out, **sets)) == 0
    (run,) = [p.parent for p in out.rglob("result.json")]
    return run


@pytest.mark.slow
def test_tensorboard_run_logs_the_loss_at_every_log_point(tb_run):
    lines = _log(tb_run)
    assert any((tb_run / "tensorboard").glob("events.out.tfevents.*"))
    loss = _scalars(tb_run / "tensorboard", "train/loss")
    want = [(ln["step"], ln["loss"]) for ln in lines if "loss" in ln]
    assert [s for s, _ in loss] == [1, 2, 3, 4] == [s for s, _ in want]
    assert [v for _, v in loss] == pytest.approx([v for _, v in want], rel=1e-6)  # float32 in the event file
    acc = EventAccumulator(str(tb_run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/lr", "train/img_per_s", "train/baseline_loss", "online/top1", "online/knn_top1",
            "online/rotation_r2", "online/effective_rank", "online/std", "online/collapsed"} <= tags
    online = [ln for ln in lines if "online_effective_rank" in ln]
    for key in ("effective_rank", "std", "collapsed"):  # the health figures, as log.jsonl has them
        got = _scalars(tb_run / "tensorboard", f"online/{key}")
        assert [s for s, _ in got] == [ln["step"] for ln in online] == [0, 2, 4]
        assert [v for _, v in got] == pytest.approx([ln[f"online_{key}"] for ln in online], rel=1e-6)
    assert [s for s, _ in _scalars(tb_run / "tensorboard", "online/top1")] == [0, 2, 4]  # step 0: random init


@pytest.mark.slow
def test_knn_top1_is_in_result_json(tb_run):
    m = json.loads((tb_run / "result.json").read_text())["metrics"]
    assert 0.0 <= m["knn_top1"] <= 100.0
    assert m["headline_source"]["knn_top1"] == m["headline_source"]["top1"]
    assert m["probe_fit"]["knn_k"] == 200 and m["probe_fit"]["knn_t"] == 0.1


@pytest.mark.slow
def test_health_is_in_result_json(tb_run):
    """Every representation the probes read has its health figures; the verdict names a headline one."""
    m = json.loads((tb_run / "result.json").read_text())["metrics"]
    for rep in ("encoder", "aggregate"):  # seq-JEPA's view and sequence representations
        assert m[f"health_{rep}_effective_rank"] >= 0 and 0 <= m[f"health_{rep}_std"] <= 1
    assert isinstance(m["collapsed"], bool) and isinstance(m["collapse_reason"], str)
    assert (m["collapse_reason"] != "") == m["collapsed"] and "effective rank" in m["health_rule"]


def test_logger_is_not_part_of_the_run_identity():
    base = resolve({"dataset": "3diebench-mini"})
    for kind in M.LOGGERS[:3]:
        assert config_hash(resolve({"dataset": "3diebench-mini", "train": {"logger": kind}})) == config_hash(base)
    assert config_hash(resolve({"dataset": "3diebench-mini", "probe": {"knn_k": 20}})) != config_hash(base)
    with pytest.raises(ConfigError, match="train.logger"):
        resolve({"train": {"logger": "mlflow"}})
    with pytest.raises(ConfigError, match="knn_t"):
        resolve({"probe": {"knn_t": 0}})


@pytest.mark.slow
def test_csv_logger_loads_in_pandas_and_a_resume_logs_every_step_once(tmp_path):
    """Interrupted after 3 of 6 steps, plus two rows a killed process logged past its checkpoint: the resumed
    run leaves one row per log point, steps 1-6."""
    cfg = tiny_cfg(tmp_path, **{"train.logger": "csv"})
    first = run_one(cfg, stop_requested=stop_after(3), log=lambda m: None)
    assert first.status == "interrupted"
    csv_path = first.run_dir / M.CSV_FILE
    assert pd.read_csv(csv_path)["step"].tolist() == [1, 2, 3]
    with csv_path.open("a") as f:  # what a kill -9 after step 5 would leave: rows past the checkpoint
        f.write("4" + "," * (len(pd.read_csv(csv_path).columns) - 1) + "\n5,0,0.5")
    done = run_one(cfg, log=lambda m: None)
    assert done.status == "complete"
    df = pd.read_csv(csv_path)
    lines = _log(done.run_dir)
    assert df["step"].tolist() == [ln["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]
    assert list(df.columns) == list(lines[0])  # step, epoch, loss, lr, img_per_s, baseline_loss
    assert df["loss"].tolist() == pytest.approx([ln["loss"] for ln in lines])
    assert df.notna().all().all()


def test_monitors_forget_the_steps_after_the_checkpoint(tmp_path):
    """Resumed at step 3: csv rows and tensorboard events of steps 4-5 from before are gone, the new ones kept."""
    for kind in ("csv", "tensorboard"):
        mon = M.open_monitor(kind, tmp_path, 0)
        for s in range(1, 6):
            mon.log(s, {"loss": float(s), "epoch": 0})
        mon.close()
        mon = M.open_monitor(kind, tmp_path, 3)
        for s in (4, 5):
            mon.log(s, {"loss": 10.0 * s, "new_key": 1.5})
        mon.close()
    df = pd.read_csv(tmp_path / M.CSV_FILE)
    assert df["step"].tolist() == [1, 2, 3, 4, 5] and df["loss"].tolist() == [1, 2, 3, 40, 50]
    assert df["new_key"].isna().tolist() == [True, True, True, False, False] and df["epoch"].dtype.kind in "fi"
    assert _scalars(tmp_path / M.TENSORBOARD_DIR, "train/loss") == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50)]
    M.open_monitor("csv", tmp_path, 0).close()  # a fresh start keeps nothing
    assert pd.read_csv(tmp_path / M.CSV_FILE).empty


def test_wandb_missing_is_a_config_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install wandb.*train.logger=tensorboard"):
        resolve({"train": {"logger": "wandb"}})
    assert run_main(tiny_args(tmp_path, **{"train.logger": "wandb"})) == 2
    err = capsys.readouterr().err
    assert "pip install wandb" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_wandb_is_offline_in_the_run_directory_and_resumes_its_run(monkeypatch, tmp_path):
    calls: list[dict] = []
    logged: list[tuple] = []

    class FakeRun:
        def log(self, data, step):
            logged.append((step, data))

        def finish(self):
            logged.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "seqjepa" / "3diebench-mini" / "L3" / "seed0-abcd1234"
    run.mkdir(parents=True)
    mon = M.open_monitor("wandb", run, 0, {"seed": 0})
    mon.log(1, M.scalars({"step": 1, "loss": 0.5, "online_top1": 40.0, "online_collapsed": 1, "note": "x"}))
    mon.close()
    assert logged == [(1, {"train/loss": 0.5, "online/top1": 40.0, "online/collapsed": 1}), ("finish",)]
    assert calls[0]["mode"] == "offline" and calls[0]["dir"] == str(run) and calls[0]["config"] == {"seed": 0}
    assert calls[0]["name"] == "seqjepa/3diebench-mini/L3/seed0-abcd1234"
    monkeypatch.setenv("WANDB_MODE", "online")
    M.open_monitor("wandb", run, 5).close()  # a resume continues the same W&B run
    M.open_monitor("wandb", run, 0).close()  # a fresh start opens a new one
    assert calls[1]["mode"] == "online" and calls[1]["id"] == calls[0]["id"] != calls[2]["id"]


def test_knn_known_answer():
    """One-hot class features (+ tiny noise) give 100 %; random features give about chance (10 %)."""
    g = torch.Generator().manual_seed(0)
    y_tr, y_va = torch.arange(500) % 10, torch.arange(200) % 10
    onehot = lambda y: nn.functional.one_hot(y, 10).float() + 0.01 * torch.randn(len(y), 10, generator=g)
    assert knn_top1(onehot(y_tr), y_tr, onehot(y_va), y_va, 10) == 100.0
    noise = knn_top1(torch.randn(500, 32, generator=g), y_tr, torch.randn(200, 32, generator=g), y_va, 10)
    assert 2.0 <= noise <= 20.0


def test_knn_chunks_agree_with_lightly(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x_tr, x_va = torch.randn(300, 8, generator=g), torch.randn(50, 8, generator=g)
    y_tr, y_va = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (50,), generator=g)
    bank = nn.functional.normalize(x_tr, dim=1).T
    pred = knn_predict(nn.functional.normalize(x_va, dim=1), bank, y_tr, 4, knn_k=7, knn_t=0.5)[:, 0]
    want = 100.0 * float((pred == y_va).float().mean())
    assert knn_top1(x_tr, y_tr, x_va, y_va, 4, k=7, t=0.5) == pytest.approx(want)
    monkeypatch.setattr(knn_mod, "MAX_SIM_ENTRIES", 300 * 3)  # 3 queries per chunk
    assert knn_top1(x_tr, y_tr, x_va, y_va, 4, k=7, t=0.5) == pytest.approx(want)
    assert knn_top1(x_tr[:5], y_tr[:5], x_va, y_va, 4, k=200) >= 0  # k capped at the bank size


def test_progress_off_a_terminal_prints_plain_lines():
    buf = io.StringIO()
    assert list(progress(range(50), "extract", unit="batch", stream=buf)) == list(range(50))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in buf.getvalue()
    assert lines[0].startswith("extract: 5/50 batch (10 %)") and lines[-1].startswith("extract: 50/50 batch (100 %)")
    quiet = io.StringIO()
    list(progress(range(5), "x", stream=quiet, enabled=False))
    assert quiet.getvalue() == ""
    timed = io.StringIO()
    with Progress(None, "download", "B", stream=timed, every_s=0.0, unit_scale=True) as bar:
        bar.update(3 << 20)
    assert timed.getvalue().startswith("download: 3.00M B")  # unknown total: by time, sizes scaled


def test_progress_on_a_terminal_draws_a_bar():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    list(progress(range(5), "extract", stream=buf))
    assert "\r" in buf.getvalue() and "5/5" in buf.getvalue() and buf.getvalue().endswith("\n")  # left on screen


def test_probe_fitting_reports_each_head(capsys):
    """Probe fitting (silent before) prints a line per head off a terminal, with its epochs and loss."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(ProbeConfig(), epochs=3, batch_size=8)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    fit_head(make_head("linear", 4, 2, 0), lambda e: (x, y), nn.functional.cross_entropy, cfg, 0,
             "probe top1 (aggregate)", progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("probe top1 (aggregate): 3/3 epoch (100 %)") and "loss=" in err[-1]
    fit_head(make_head("linear", 4, 2, 0), lambda e: (x, y), nn.functional.cross_entropy, cfg, 0)
    assert capsys.readouterr().err == ""  # the online probes fit quietly
