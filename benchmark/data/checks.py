"""Is a dataset's data where a run will look for it? Cheap checks for the launcher, before any submission.

``check_<dataset>(cfg)`` raises the loader's own :class:`DataError` (the missing path, and how to get the
data) when a folder or file a run needs is absent. Nothing is decoded: the checks look at folders,
file names and (for 3DIEBench) the split files and the first object of each split, so a sweep of
hundreds of runs is checked in well under a second per distinct data setting. The generated datasets
(``*-mini``) need no check. The registry (``benchmark/core/registry.py``) names each dataset's check.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.config import RunConfig
from benchmark.infra.errors import DataError


def check_3diebench(cfg: RunConfig) -> None:
    """Data root, the four split files (or the opt-in fallback split) and each split's first object."""
    from benchmark.data.threedie import ThreeDIEBench

    d = cfg.data
    root = d.root or os.environ.get("SEQBENCH_DATA_ROOT")
    for split in ("train", "val"):  # the loader's own validation; reads the split files, no image
        ThreeDIEBench(root, split, 1, d.image_size, d.latent_type, cfg.seed, True, d.canonical_quat,
                      d.split_dir, d.fallback_split)


def check_cifar100(cfg: RunConfig) -> None:
    from benchmark.data import cifar100

    folder = cifar100.resolve_root(cifar100.data_root(cfg))
    _need_files(folder, ("meta", "train", "test"), "CIFAR-100", cifar100.GET_IT)


def check_tinyimagenet(cfg: RunConfig) -> None:
    from benchmark.data import cifar100, tinyimagenet

    folder = tinyimagenet.resolve_root(cifar100.data_root(cfg))
    if not (folder / "train").is_dir():
        raise DataError(f"{folder / 'train'}/ is missing: expected train/<wnid>/images/*.JPEG. {tinyimagenet.GET_IT}")
    _need_files(folder, ("val/val_annotations.txt",), "Tiny ImageNet", tinyimagenet.GET_IT)


def _stl10_splits(cfg: RunConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys((cfg.data.stl10_pretrain, "train", "test")))  # pre-training, probe train, probe val


def check_stl10(cfg: RunConfig) -> None:
    from benchmark.data import cifar100, stl10

    folder = stl10.resolve_root(cifar100.data_root(cfg))
    names = [n for s in _stl10_splits(cfg) for n in stl10.FILES[s] if n]
    _need_files(folder, names, "STL-10", stl10.GET_IT)


def check_stl10_saccades(cfg: RunConfig) -> None:
    """STL-10's binaries, plus the precomputed saliency arrays when ``data.saccade.saliency=precomputed``."""
    from benchmark.data import cifar100, saccades, stl10

    check_stl10(cfg)
    if cfg.data.saccade.saliency != "precomputed":
        return
    root = cifar100.data_root(cfg)
    folder = stl10.resolve_root(root)
    search = [Path(x).expanduser() for x in (cfg.data.saccade.saliency_dir, root) if x]
    for split in _stl10_splits(cfg):
        count = (folder / stl10.FILES[split][0]).stat().st_size // stl10.IMAGE_BYTES
        saccades.SaliencyArrays(search, split, count)  # memory-mapped: checks name, shape and count only


def _need_files(folder: Path, names, dataset: str, get_it: str) -> None:
    missing = [str(folder / n) for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{dataset} file(s) missing: {', '.join(missing)}. {get_it}")
