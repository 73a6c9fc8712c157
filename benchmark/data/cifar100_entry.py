"""The registry's ``cifar100``: the official python batches read by ``benchmark/data/cifar100.py``.

Torch-free: the loader is imported when a split is built or the files are checked (benchmark/data/entry.py).
"""

from __future__ import annotations

from benchmark.config import RunConfig
from benchmark.data.entry import DatasetEntry, data_root, deferred, need_files
from benchmark.data.preflight import fixed_sizes


def _loader():
    from benchmark.data import cifar100

    return cifar100


build, spec = deferred(_loader)  # the loader's build(cfg, split, num_views, fixed) and spec(cfg)


def check(cfg: RunConfig) -> None:
    from benchmark.data import cifar100

    need_files(cifar100.resolve_root(data_root(cfg)), ("meta", "train", "test"), "CIFAR-100", cifar100.GET_IT)


ENTRY = DatasetEntry(
    build=build, spec=spec, table="image", check=check,
    sizes=fixed_sizes(50_000, "CIFAR-100's 50000 training images"),
    # seq-JEPA README's CIFAR100 example: 2000 epochs, batch 256, 32 px, M_tr = 3, --cifar-resnet.
    defaults={"data": {"image_size": 32, "seq_len": 3, "num_workers": 8},
              "train": {"epochs": 2000, "batch_size": 256}},
    description="CIFAR-100 python batches (--data-root: the folder holding cifar-100-python/)",
)
