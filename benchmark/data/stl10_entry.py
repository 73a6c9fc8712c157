"""The registry's ``stl10``: the official binaries read by ``benchmark/data/stl10.py`` as augmentation sequences.

Torch-free: the loader is imported when a split is built or the files are checked (benchmark/data/entry.py).
"""

from __future__ import annotations

from benchmark.config import RunConfig
from benchmark.data.entry import DatasetEntry, data_root, deferred, need_files
from benchmark.data.preflight import DataSizes


def _loader():
    from benchmark.data import stl10

    return stl10


build, spec = deferred(_loader)  # the loader's build(cfg, split, num_views, fixed) and spec(cfg)


def file_splits(cfg: RunConfig) -> tuple[str, ...]:
    """The STL-10 file splits a run reads: pre-training (``data.stl10_pretrain``), probe train, probe val."""
    return tuple(dict.fromkeys((cfg.data.stl10_pretrain, "train", "test")))


def check(cfg: RunConfig) -> None:
    from benchmark.data import stl10

    names = [n for s in file_splits(cfg) for n in stl10.FILES[s] if n]
    need_files(stl10.resolve_root(data_root(cfg)), names, "STL-10", stl10.GET_IT)


def sizes(cfg: RunConfig) -> DataSizes:
    n = {"unlabeled": 100_000, "train": 5_000}[cfg.data.stl10_pretrain]
    return DataSizes(n, None, f"STL-10's {cfg.data.stl10_pretrain} split (data.stl10_pretrain)")


ENTRY = DatasetEntry(
    build=build, spec=spec, table="image", check=check, sizes=sizes,
    # Not in the paper: 96 px augmentation sequences with the CIFAR100 recipe and budget.
    defaults={"data": {"image_size": 96, "seq_len": 3, "num_workers": 8},
              "train": {"epochs": 2000, "batch_size": 256}},
    description="STL-10 binaries as augmentation sequences (--data-root: the folder holding stl10_binary/)",
)
