"""The registry's ``tinyimagenet``: the official folder layout read by ``benchmark/data/tinyimagenet.py``.

Torch-free: the loader is imported when a split is built or the files are checked (benchmark/data/entry.py).
"""

from __future__ import annotations

from benchmark.config import RunConfig
from benchmark.data.entry import DatasetEntry, data_root, deferred, need_files
from benchmark.data.preflight import fixed_sizes
from benchmark.infra.errors import DataError


def _loader():
    from benchmark.data import tinyimagenet

    return tinyimagenet


build, spec = deferred(_loader)  # the loader's build(cfg, split, num_views, fixed) and spec(cfg)


def check(cfg: RunConfig) -> None:
    from benchmark.data import tinyimagenet

    folder = tinyimagenet.resolve_root(data_root(cfg))
    if not (folder / "train").is_dir():
        raise DataError(f"{folder / 'train'}/ is missing: expected train/<wnid>/images/*.JPEG. {tinyimagenet.GET_IT}")
    need_files(folder, ("val/val_annotations.txt",), "Tiny ImageNet", tinyimagenet.GET_IT)


ENTRY = DatasetEntry(
    build=build, spec=spec, table="image", check=check,
    sizes=fixed_sizes(100_000, "Tiny ImageNet's 100000 training images"),
    # No released Tiny ImageNet script: the CIFAR100 example's budget at 64 px (uncertain).
    defaults={"data": {"image_size": 64, "seq_len": 3, "num_workers": 8},
              "train": {"epochs": 2000, "batch_size": 256}},
    description="Tiny ImageNet (--data-root: the folder holding tiny-imagenet-200/)",
)
