"""CIFAR-100 from the official python pickle batches (https://www.cs.toronto.edu/~kriz/cifar.html).

Layout (what ``cifar-100-python.tar.gz`` extracts to)::

    <root>/cifar-100-python/      (--data-root may also be this folder itself)
      train   pickled dict: b"data" uint8 (50000, 3072), rows = 1024 R, 1024 G, 1024 B of a row-major 32x32
              image; b"fine_labels" (50000 ints in 0..99); b"coarse_labels"; b"filenames"; b"batch_label"
      test    the same with 10000 images
      meta    b"fine_label_names" (100 names), b"coarse_label_names" (20)

The pickles are read with an unpickler that only resolves numpy's array-rebuilding functions, so a
tampered file cannot run code. seq-JEPA uses the 100 fine labels, 32 px views and the CIFAR ResNet
stem (docs/protocol.md §4); the SSL split is ``train``, the probes train on ``train`` and test on ``test``.
"""

from __future__ import annotations

import pickle
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

FOLDER = "cifar-100-python"
SPLITS = {"train": "train", "val": "test"}  # seqbench split -> file
MEAN = (0.5071, 0.4867, 0.4408)  # upstream CIFAR100_aug normalisation
STD = (0.2675, 0.2565, 0.2761)
GET_IT = ("Get it with `python -m benchmark.data.download cifar100 --root DIR`, or download "
          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (161 MB) and extract it; then pass the "
          "folder holding cifar-100-python/ with --data-root (or set SEQBENCH_DATA_ROOT).")
# The only globals a CIFAR pickle needs: numpy's ndarray reconstruction (old and numpy>=2 module paths),
# and _codecs.encode, which protocol-2 pickles written by Python 3 use for byte strings.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR batch as a dict with str keys (the files are python-2 pickles with byte-string keys)."""
    if not path.is_file():
        raise DataError(f"CIFAR-100 file {path} is missing. {GET_IT}")
    try:
        with path.open("rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise DataError(f"CIFAR-100 file {path} is corrupt or not a CIFAR python pickle ({type(e).__name__}: "
                        f"{e}); re-extract cifar-100-python.tar.gz") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-100 file {path} holds a {type(obj).__name__}, expected a dict of arrays")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def resolve_root(root: str | Path | None) -> Path:
    return find_folder(root, FOLDER, "CIFAR-100", GET_IT)


class CIFAR100Images:
    """One split of CIFAR-100 held in memory as uint8 (N, 3, 32, 32); an ``ImageSource`` (augment.py)."""

    name = "cifar100"
    mean, std = MEAN, STD

    def __init__(self, root: str | Path | None, split: str, num_classes: int = 100) -> None:
        folder = resolve_root(root)
        meta_path = folder / "meta"
        names = read_pickle(meta_path).get("fine_label_names")
        if not isinstance(names, list) or len(names) != num_classes:
            got = len(names) if isinstance(names, list) else "no"
            raise DataError(f"{meta_path} lists {got} fine_label_names, expected {num_classes}: not a CIFAR-100 "
                            f"meta file (CIFAR-10 has batches.meta and 10 classes). {GET_IT}")
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        path = folder / SPLITS[split]
        batch = read_pickle(path)
        data, labels = batch.get("data"), batch.get("fine_labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {shape}; the file is "
                            f"damaged or not a CIFAR-100 batch")
        if labels is None or len(labels) != data.shape[0]:
            raise DataError(f"{path}: 'fine_labels' must hold one label per image ({data.shape[0]}), got "
                            f"{None if labels is None else len(labels)}")
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) == 0:
            raise DataError(f"{path} holds no images")
        if self.labels.min() < 0 or self.labels.max() >= num_classes:
            raise DataError(f"{path}: fine labels span {self.labels.min()}..{self.labels.max()}, expected 0.."
                            f"{num_classes - 1}; the file does not belong to this {num_classes}-class dataset")
        self.images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Tensor:
        return self.images[index]


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool, root: str | Path | None = None,
          num_classes: int = 100) -> AugmentedSequences:
    """Registry builder: ``train`` -> the train batch, ``val`` -> the test batch, as augmentation sequences."""
    src = CIFAR100Images(root or data_root(cfg), split, num_classes)
    return AugmentedSequences(src, num_views, cfg.data.image_size, cfg.data.aug, cfg.seed, fixed, num_classes)


def spec(cfg: RunConfig, num_classes: int = 100) -> DataSpec:
    # seq-JEPA passes --cifar-resnet for CIFAR-100 (3x3/1 conv1, no max-pool).
    return DataSpec(cfg.data.image_size, action_dim(cfg.data.aug), num_classes, small_images=True)
