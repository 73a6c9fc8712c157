"""Tiny ImageNet (200 classes, 64 px) from the official ``tiny-imagenet-200/`` folder layout.

Layout (what ``tiny-imagenet-200.zip`` extracts to)::

    <root>/tiny-imagenet-200/         (--data-root may also be this folder itself)
      wnids.txt                       200 WordNet ids, one a line; line k is class k (upstream TinyImageNet_aug)
      words.txt                       wnid -> words (not needed)
      train/<wnid>/images/<wnid>_<k>.JPEG   500 images per class
      val/images/val_<k>.JPEG         10000 images
      val/val_annotations.txt         "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per validation image
      test/images/                    unlabeled (unused)

The SSL split and the probes' training split are ``train``; the probes are scored on ``val`` (the test
split has no labels). Images are decoded lazily, per item, in the DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from benchmark.config import RunConfig
from benchmark.data.augment import AugmentedSequences, action_dim
from benchmark.data.entry import data_root
from benchmark.infra.errors import DataError
from methods.contract import DataSpec

FOLDER = "tiny-imagenet-200"
MEAN = (0.4802, 0.4481, 0.3975)  # upstream TinyImageNet_aug normalisation
STD = (0.2302, 0.2265, 0.2262)
SIZE = 64
GET_IT = ("Get it with `python -m benchmark.data.download tinyimagenet --root DIR`, or download "
          "http://cs231n.stanford.edu/tiny-imagenet-200.zip (237 MB) and extract it; then pass the folder "
          "holding tiny-imagenet-200/ with --data-root (or set SEQBENCH_DATA_ROOT).")


def resolve_root(root: str | Path | None) -> Path:
    if root is None:
        raise DataError(f"no Tiny ImageNet root given. {GET_IT}")
    p = Path(root).expanduser()
    if (p / FOLDER / "wnids.txt").is_file():
        return p / FOLDER
    if (p / "wnids.txt").is_file():
        return p
    raise DataError(f"no {FOLDER}/wnids.txt found in {p}. {GET_IT}")


def read_wnids(folder: Path, num_classes: int) -> list[str]:
    path = folder / "wnids.txt"
    try:
        wnids = [w.strip() for w in path.read_text().splitlines() if w.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read ({e}). {GET_IT}") from None
    if len(wnids) != num_classes or len(set(wnids)) != len(wnids):
        raise DataError(f"{path} lists {len(wnids)} WordNet ids ({len(set(wnids))} distinct), expected "
                        f"{num_classes} distinct ids, one a line; the file is damaged or from another dataset")
    return wnids


def list_train(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    train = folder / "train"
    if not train.is_dir():
        raise DataError(f"{train}/ is missing: expected train/<wnid>/images/*.JPEG. {GET_IT}")
    extra = sorted({d.name for d in train.iterdir() if d.is_dir()} - set(wnids))
    if extra:
        raise DataError(f"{train}/ has class folders not listed in wnids.txt ({', '.join(extra[:5])}); "
                        f"wnids.txt and train/ disagree on the classes")
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        d = train / wnid / "images"
        imgs = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png")) if d.is_dir() else []
        if not imgs:
            raise DataError(f"{d}/ is missing or holds no images, but {wnid} is listed in wnids.txt. {GET_IT}")
        files += imgs
        labels += [label] * len(imgs)
    return files, labels


def list_val(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    ann = folder / "val" / "val_annotations.txt"
    index = {w: k for k, w in enumerate(wnids)}
    try:
        lines = ann.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{ann} is missing: the val/ split needs it for its labels. {GET_IT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{ann} cannot be read ({e})") from None
    present = {p.name for p in (folder / "val" / "images").glob("*")}
    files, labels = [], []
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{ann} line {n} is malformed: expected '<file> <wnid> x0 y0 x1 y1', got {line!r}")
        if parts[1] not in index:
            raise DataError(f"{ann} line {n}: class {parts[1]} is not in wnids.txt")
        if parts[0] not in present:
            raise DataError(f"{ann} line {n}: image {folder / 'val' / 'images' / parts[0]} is missing")
        files.append(folder / "val" / "images" / parts[0])
        labels.append(index[parts[1]])
    if not files:
        raise DataError(f"{ann} lists no images")
    return files, labels


class TinyImageNetImages:
    """One split (``train`` or ``val``) of Tiny ImageNet; an ``ImageSource`` (augment.py)."""

    name = "tinyimagenet"
    mean, std = MEAN, STD

    def __init__(self, root: str | Path | None, split: str, num_classes: int = 200) -> None:
        folder = resolve_root(root)
        self.wnids = read_wnids(folder, num_classes)
        files, labels = (list_train if split == "train" else list_val)(folder, self.wnids)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (SIZE, SIZE):
                    # convert() above handles the real set's grayscale JPEGs; an odd size is resized, not fatal.
                    im = im.resize((SIZE, SIZE), Image.BICUBIC)
                arr = np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(f"missing image {path}; the Tiny ImageNet tree is incomplete") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"corrupt image {path} ({e}); re-extract tiny-imagenet-200.zip") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool, root: str | Path | None = None,
          num_classes: int = 200) -> AugmentedSequences:
    """Registry builder: ``train`` -> train/, ``val`` -> val/, as augmentation sequences."""
    src = TinyImageNetImages(root or data_root(cfg), split, num_classes)
    return AugmentedSequences(src, num_views, cfg.data.image_size, cfg.data.aug, cfg.seed, fixed, num_classes)


def spec(cfg: RunConfig, num_classes: int = 200) -> DataSpec:
    # seq-JEPA passes --cifar-resnet for Tiny ImageNet too (docs/protocol.md §1).
    return DataSpec(cfg.data.image_size, action_dim(cfg.data.aug), num_classes, small_images=True)
