"""The registry's ``3diebench``: the official layout read by ``benchmark/data/threedie.py`` (or its decoded cache).

Torch-free: the loader is imported when a split is built or the data is checked (benchmark/data/entry.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.config import RunConfig
from benchmark.data.entry import DatasetEntry, data_root
from benchmark.data.preflight import DataSizes

if TYPE_CHECKING:
    from benchmark.data.threedie import ThreeDIEBench
    from methods.contract import DataSpec

NUM_CLASSES = 55


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> ThreeDIEBench:
    from benchmark.data.view_cache import threedie_loader

    d = cfg.data
    return threedie_loader(cfg)(data_root(cfg), split, num_views, d.image_size, d.latent_type, cfg.seed, fixed,
                                d.canonical_quat, d.split_dir, d.fallback_split)


def spec(cfg: RunConfig, num_classes: int = NUM_CLASSES) -> DataSpec:
    from benchmark.data.rotations import ACTION_DIMS
    from methods.contract import DataSpec

    return DataSpec(cfg.data.image_size, ACTION_DIMS[cfg.data.latent_type], num_classes)


def _splits(cfg: RunConfig) -> tuple[ThreeDIEBench, ThreeDIEBench]:
    """Train and val as a run opens them: data root, split files (or the opt-in fallback split) and the first
    object of each split, by the loader's own validation (which reads no image)."""
    from benchmark.data.threedie import ThreeDIEBench

    d = cfg.data
    train, val = (ThreeDIEBench(data_root(cfg), split, 1, d.image_size, d.latent_type, cfg.seed, True,
                                d.canonical_quat, d.split_dir, d.fallback_split) for split in ("train", "val"))
    return train, val


def check(cfg: RunConfig) -> None:
    _splits(cfg)


def sizes(cfg: RunConfig) -> DataSizes:
    """Objects of the training split and views of the first object of each split."""
    train, val = _splits(cfg)
    views = min(train.views_per_object, val.views_per_object)
    return DataSizes(len(train.objects), views, f"the training split of {train.root}, {views} views per object")


ENTRY = DatasetEntry(
    build=build, spec=spec, table="3diebench", check=check, sizes=sizes,
    # seq-JEPA's 3DIEBench script (docs/protocol.md §2): 1000 epochs, batch 512, 128 px, M_tr = 3. The probes draw
    # from every view of an object (bank_views 0 = all 50), as SIE's and seq-JEPA's evaluations do.
    defaults={"data": {"image_size": 128, "seq_len": 3, "num_workers": 8},
              "train": {"epochs": 1000, "batch_size": 512}, "probe": {"bank_views": 0}},
    description="3DIEBench, official layout (--data-root or $SEQBENCH_DATA_ROOT)",
)
