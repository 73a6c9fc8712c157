"""STL-10 from the official binary files (https://cs.stanford.edu/~acoates/stl10/).

Layout (what ``stl10_binary.tar.gz`` extracts to)::

    <root>/stl10_binary/              (--data-root may also be this folder itself)
      train_X.bin  test_X.bin  unlabeled_X.bin   uint8, 3 x 96 x 96 per image, each channel COLUMN-major
      train_y.bin  test_y.bin                    uint8 labels 1..10, one per image
      class_names.txt                            10 names (optional here; checked when present)

Sizes: train 5000, test 8000, unlabeled 100000 images (27648 bytes each); files are memory-mapped.
seq-JEPA's PLS pre-trains on ``unlabeled`` and its probes train on ``train`` and test on ``test``
(docs/protocol.md §4); the registry's ``train`` split therefore maps to ``data.stl10_pretrain`` for
pre-training and to ``train`` for the probes. Unlabeled images carry label -1 (never read by an SSL loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmark.config import RunConfig
from benchmark.data.augment import AugmentedSequences, action_dim
from benchmark.data.base import find_folder
from benchmark.data.entry import data_root
from benchmark.infra.errors import DataError
from methods.contract import DataSpec

FOLDER = "stl10_binary"
SIZE = 96
IMAGE_BYTES = 3 * SIZE * SIZE
MEAN = (0.4467, 0.4398, 0.4066)  # upstream STL10_SalMap normalisation
STD = (0.2241, 0.2215, 0.2239)
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
         "unlabeled": ("unlabeled_X.bin", None)}
GET_IT = ("Get it with `python -m benchmark.data.download stl10 --root DIR`, or download "
          "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (2.6 GB) and extract it; then pass "
          "the folder holding stl10_binary/ with --data-root (or set SEQBENCH_DATA_ROOT).")


def resolve_root(root: str | Path | None) -> Path:
    return find_folder(root, FOLDER, "STL-10", GET_IT)


def split_for(split: str, fixed: bool, cfg: RunConfig) -> str:
    """seqbench split -> STL-10 file split: pre-training (not fixed) reads ``data.stl10_pretrain``."""
    if split == "val":
        return "test"
    return "train" if fixed else cfg.data.stl10_pretrain


class STL10Images:
    """One split of STL-10 (``train`` / ``test`` / ``unlabeled``); an ``ImageSource`` (augment.py)."""

    name = "stl10"
    mean, std = MEAN, STD

    def __init__(self, root: str | Path | None, split: str, num_classes: int = 10) -> None:
        folder = resolve_root(root)
        x_name, y_name = FILES[split]
        x_path = folder / x_name
        if not x_path.is_file():
            raise DataError(f"STL-10 file {x_path} is missing. {GET_IT}")
        size = x_path.stat().st_size
        if size == 0 or size % IMAGE_BYTES:
            raise DataError(f"{x_path} is truncated or not an STL-10 image file: {size} bytes is not a positive "
                            f"multiple of {IMAGE_BYTES} (3 x 96 x 96 uint8 per image); re-extract it")
        self.x = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(size // IMAGE_BYTES, 3, SIZE, SIZE))
        n = self.x.shape[0]
        if y_name is None:
            self.labels = np.full(n, -1, dtype=np.int64)
        else:
            y_path = folder / y_name
            if not y_path.is_file():
                raise DataError(f"STL-10 label file {y_path} is missing. {GET_IT}")
            y = np.fromfile(y_path, dtype=np.uint8)
            if len(y) != n:
                raise DataError(f"{y_path} holds {len(y)} labels but {x_path} holds {n} images: one of the two "
                                f"files is truncated or they belong to different splits")
            if y.min() < 1 or y.max() > num_classes:
                raise DataError(f"{y_path}: labels span {y.min()}..{y.max()}, expected 1..{num_classes} (STL-10 "
                                f"labels are 1-based); the file does not belong to this {num_classes}-class dataset")
            self.labels = y.astype(np.int64) - 1
        names = folder / "class_names.txt"
        if names.is_file():
            count = len([ln for ln in names.read_text(errors="replace").splitlines() if ln.strip()])
            if count != num_classes:
                raise DataError(f"{names} lists {count} classes, expected {num_classes}")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Tensor:
        # Stored (C, W, H) column-major: transpose to (C, H, W) (torchvision's STL10 does the same).
        return torch.from_numpy(np.ascontiguousarray(self.x[index].transpose(0, 2, 1)))


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool, root: str | Path | None = None,
          num_classes: int = 10) -> AugmentedSequences:
    """Registry builder of ``stl10``: full 96 px images as augmentation sequences (not in the paper)."""
    src = STL10Images(root or data_root(cfg), split_for(split, fixed, cfg), num_classes)
    return AugmentedSequences(src, num_views, cfg.data.image_size, cfg.data.aug, cfg.seed, fixed, num_classes)


def spec(cfg: RunConfig, num_classes: int = 10) -> DataSpec:
    # 96 px full images: the standard ImageNet stem, as solo-learn uses for STL-10 (our choice; not in the paper).
    return DataSpec(cfg.data.image_size, action_dim(cfg.data.aug), num_classes, small_images=False)
