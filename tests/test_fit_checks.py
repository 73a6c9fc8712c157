"""One data-fit check (benchmark.core.resolve.check_fit) behind a run, --print-config and the launcher's dry
run: a sweep whose every job would fail on its data is refused before anything is submitted or printed."""

from __future__ import annotations

import pytest

from benchmark.core.registry import METHODS, build_method
from benchmark.core.resolve import resolve
from benchmark.core.runner import main as run_main
from slurm.launch import main as launch_main
from tests.conftest import tiny_args


def test_dry_run_refuses_a_sequence_longer_than_the_views(tmp_path, capsys):
    # the smoke sweep's mini has 6 views per object; seq-JEPA at M_tr = 6 needs 6 observations + 1 target
    out = tmp_path / "runs"
    assert launch_main(["--sweep", "smoke", "--dry-run", "--out", str(out), "--set", "data.seq_len=6"]) == 2
    err = capsys.readouterr().err
    assert "do not fit their data" in err and "needs 7 views per training sample" in err and "has 6" in err
    assert not out.exists()
    assert launch_main(["--sweep", "smoke", "--dry-run", "--out", str(out), "--set", "data.seq_len=5"]) == 0


def test_print_config_runs_the_same_fit_check(tmp_path, capsys):
    assert run_main([*tiny_args(tmp_path), "--method", "seqjepa", "--seq-len", "6", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "needs 7 views" in err and "--seq-len" in err
    assert run_main([*tiny_args(tmp_path), "--method", "simclr", "--seq-len", "6", "--print-config"]) == 0
    assert "seq_len: 6" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing rendered, no run directory


@pytest.mark.parametrize("name", sorted(METHODS))
def test_views_needed_is_known_before_the_model_is_built(name):
    cfg = resolve({"method": name, "dataset": "3diebench-mini", "data": {"image_size": 32}})
    cls = METHODS[name]
    method, _ = build_method(cfg)
    assert cls.views_needed(3) == method.views_needed(3) >= 2
