"""The registry's ``stl10-saccades``: PLS glimpse sequences of STL-10 (``benchmark/data/saccades.py``).

Torch-free: the loader is imported when a split is built or the files are checked (benchmark/data/entry.py).
"""

from __future__ import annotations

from pathlib import Path

from benchmark.config import RunConfig
from benchmark.data import stl10_entry
from benchmark.data.entry import DatasetEntry, data_root, deferred


def _loader():
    from benchmark.data import saccades

    return saccades


build, spec = deferred(_loader)  # the loader's build(cfg, split, num_views, fixed) and spec(cfg)


def check(cfg: RunConfig) -> None:
    """STL-10's binaries, plus the precomputed saliency arrays when ``data.saccade.saliency=precomputed``."""
    from benchmark.data import saccades, stl10

    stl10_entry.check(cfg)
    if cfg.data.saccade.saliency != "precomputed":
        return
    root = data_root(cfg)
    folder = stl10.resolve_root(root)
    search = [Path(x).expanduser() for x in (cfg.data.saccade.saliency_dir, root) if x]
    for split in stl10_entry.file_splits(cfg):
        count = (folder / stl10.FILES[split][0]).stat().st_size // stl10.IMAGE_BYTES
        saccades.SaliencyArrays(search, split, count)  # memory-mapped: checks name, shape and count only


ENTRY = DatasetEntry(
    build=build, spec=spec, table="image", check=check, sizes=stl10_entry.sizes,
    # scripts/script_pls.sh: 2000 epochs, batch 512, 5 saccades (M_tr = 4), fovea 32, DeepGaze saliency.
    defaults={"data": {"image_size": 32, "seq_len": 4, "num_workers": 8},
              "train": {"epochs": 2000, "batch_size": 512}},
    description="STL-10 PLS glimpse sequences (--data-root: stl10_binary/ + salmap-stl10/ saliency arrays)",
)
