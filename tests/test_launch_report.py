"""The launcher's pre-submit report: resources and GPU-hours in the dry run, data checked before anything is
submitted, and the debug executor's documented behaviour."""

from __future__ import annotations

import pytest

from benchmark.config import MiniConfig
from benchmark.core.registry import DATASETS
from benchmark.data.mini3d import generate
from slurm import launch
from slurm.launch import main


def _sweep(tmp_path, dataset: str = "3diebench", **fixed) -> str:
    path = tmp_path / "datacheck.yaml"
    extra = "".join(f"\n  {k}: {v}" for k, v in fixed.items())
    path.write_text(f"name: datacheck\nfixed:\n  dataset: {dataset}{extra}\nruns:\n  method: [seqjepa, simclr]\n")
    return str(path)


def test_dry_run_prints_resources_and_gpu_hours(tmp_path, capsys):
    out = str(tmp_path / "runs")
    assert main(["--sweep", "smoke", "--dry-run", "--out", out]) == 0
    text = capsys.readouterr().out
    assert ("resources: partition (the cluster's default partition); per job no GPU, 1 task(s) x 1 CPU(s), 2 GB, "
            "time limit 30 min (0.5 h)") in text
    assert "job array: 2 task(s), at most 2 running at once" in text
    assert "estimated GPU-hours: 0 (no GPU requested); CPU-hours at most 1 for one pass" in text

    argv = ["--sweep", "smoke", "--dry-run", "--out", out, "--cluster", "example-gpu", "--gpus", "2", "--time", "90",
            "--partition", "a100", "--only", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert ("resources: partition a100; per job 2 GPU(s), 2 task(s) x 10 CPU(s), 64 GB, time limit 90 min "
            "(1.5 h)") in text
    assert "job array: 1 task(s), at most 16 running at once" in text and "requeued up to 20 time(s)" in text
    assert "estimated GPU-hours: at most 3 for one pass (1 job(s) x 2 GPU(s) x 1.5 h time limit)" in text
    assert "dry run: 1 pending; 1 would be submitted" in text


def test_local_executors_say_they_request_nothing():
    preset = launch.load_preset("local", {})
    (line,) = launch.resources(preset, "debug", 3)
    assert "runs 3 run(s) on this machine, 1 at a time" in line and "no SLURM resources" in line


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_missing_data_fails_before_submission_naming_path_and_download(tmp_path, monkeypatch, capsys, executor):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch: the data check must come first anyway
    monkeypatch.delenv("SEQBENCH_DATA_ROOT", raising=False)
    out = tmp_path / "runs"
    missing = tmp_path / "nowhere"
    args = ["--sweep", _sweep(tmp_path), "--out", str(out), "--data-root", str(missing)]
    assert main([*args, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "estimated GPU-hours" in captured.out  # the report comes first, then the error
    err = captured.err
    assert err.startswith("error: the data of some runs is missing, so nothing was submitted")
    assert "run(s) 0-1: 3diebench: 3DIEBench root " + str(missing) in err
    assert "python -m benchmark.data.download 3diebench" in err and "Traceback" not in err
    if executor == "local":
        monkeypatch.undo()
        monkeypatch.delenv("SEQBENCH_DATA_ROOT", raising=False)
        assert main([*args, "--executor", "local"]) == 2
        assert "nothing was submitted" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "submitit").exists()


def test_split_files_are_checked_and_a_complete_tree_passes(tmp_path, capsys):
    root = generate(MiniConfig(classes=3, objects_per_class=5, views=6, resolution=32), progress=False)
    # the 3diebench preset's batch of 512 cannot fit the 12 training objects of this tree: refused at launch
    args = ["--sweep", _sweep(tmp_path), "--out", str(tmp_path / "runs"), "--dry-run"]
    assert main([*args, "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: some runs do not fit their data, so nothing was submitted")
    assert "run(s) 0-1: train.batch_size = 512 is larger than the 12 training samples of 3diebench" in err
    args = ["--sweep", _sweep(tmp_path, **{"train.batch_size": 4}), "--out", str(tmp_path / "runs"), "--dry-run"]
    assert main([*args, "--data-root", str(root)]) == 0  # official layout, split files in the root
    assert "2 would be submitted" in capsys.readouterr().out

    bare = tmp_path / "3DIEBench"
    (bare / "02691156" / "obj").mkdir(parents=True)
    assert main([*args, "--data-root", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "split files train_images.npy, train_labels.npy not found in " + str(bare) in err
    assert "data.fallback_split=true" in err


def test_image_dataset_files_are_checked(tmp_path, capsys):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("meta", "train"):
        (folder / name).write_bytes(b"x")
    args = ["--sweep", _sweep(tmp_path, "cifar100"), "--out", str(tmp_path / "runs"), "--dry-run"]
    assert main([*args, "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"CIFAR-100 file(s) missing: {folder / 'test'}" in err and "download cifar100" in err


def test_every_downloadable_dataset_has_a_data_check():
    for name, entry in DATASETS.items():
        assert (entry.check is None) == name.endswith("-mini"), name


def test_help_documents_the_debug_executor(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "pdb post-mortem prompt" in text and "GPU-hours" in text
