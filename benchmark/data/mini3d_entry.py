"""The registry's ``3diebench-mini``: ``benchmark/data/mini3d.py`` renders it, the 3DIEBench loader reads it back.

Torch-free: the generator and the loader are imported when a split is built (benchmark/data/entry.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.config import RunConfig
from benchmark.data import threedie_entry
from benchmark.data.entry import DatasetEntry
from benchmark.data.preflight import DataSizes

if TYPE_CHECKING:
    from benchmark.data.threedie import ThreeDIEBench
    from methods.contract import DataSpec

NOTE = "3diebench-mini: embedded procedural stand-in, not comparable with published 3DIEBench numbers"


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> ThreeDIEBench:
    """Render once (cached by ``data.mini``), then read through the 3DIEBench loader (or its decoded cache)."""
    from benchmark.data import mini3d
    from benchmark.data.view_cache import threedie_loader

    d = cfg.data
    root = mini3d.generate(d.mini, cache_dir=d.root, progress=cfg.train.progress)
    ds = threedie_loader(cfg)(root, split, num_views, d.image_size, d.latent_type, cfg.seed, fixed, d.canonical_quat,
                              num_classes=d.mini.classes)
    ds.label_note = NOTE
    return ds


def spec(cfg: RunConfig) -> DataSpec:
    return threedie_entry.spec(cfg, num_classes=cfg.data.mini.classes)


def sizes(cfg: RunConfig) -> DataSizes:
    from benchmark.data import mini3d

    m = cfg.data.mini
    mini3d.check_settings(m)
    per_class = mini3d.split_sizes(m)[0]
    return DataSizes(m.classes * per_class, m.views, f"data.mini: {m.classes} classes x {per_class} training "
                     f"objects, {m.views} views each")


ENTRY = DatasetEntry(
    build=build, spec=spec, table="3diebench", sizes=sizes,
    # Small enough for ~10 minutes on 2 CPU cores, generation included.
    defaults={"data": {"image_size": 64, "seq_len": 3, "num_workers": 1},
              "train": {"epochs": 27, "batch_size": 32, "warmup_epochs": 2, "checkpoint_every": 100},
              "probe": {"epochs": 100, "train_samples": 4, "val_samples": 4}},
    description="embedded procedural stand-in in the 3DIEBench layout (generated on first use)",
)
