"""3DIEBench loader for the official on-disk layout (Garrido et al., SIE, ICML 2023).

Layout (see docs/3diebench.md §1)::

    <root>/                      the extracted ``3DIEBench/`` folder (a parent holding it also works)
      <synset>/<object_id>/image_{0..49}.jpg, latent_{0..49}.npy (7 floats each)
      train_images.npy, train_labels.npy, val_images.npy, val_labels.npy   (split files, from SIE's repo)

Each item draws ``num_views`` distinct views of one object; actions and probe targets come from the
latents exactly as in SIE / seq-JEPA, the absolute per-view parameters (``Batch.latents``) as in
ContextSSL's loader (``benchmark/data/rotations.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as TF

from benchmark.data.base import ProbeTarget, SequenceDataset
from benchmark.data.rotations import ACTION_DIMS, absolute_params, pair_targets, probe_targets, relative_actions
from benchmark.infra.errors import DataError

MEAN = [0.5016, 0.5037, 0.5060]  # SIE / seq-JEPA normalisation statistics
STD = [0.1030, 0.0999, 0.0969]
SPLIT_FILES = ("{split}_images.npy", "{split}_labels.npy")
GET_IT = (
    "3DIEBench is 17 GB (CC-BY-NC): `python -m benchmark.data.download 3diebench --root DIR` fetches it and the "
    "split files into DIR/3DIEBench/. Or download https://dl.fbaipublicfiles.com/SIE/3DIEBench.tar.gz, extract it, "
    "and pass the extracted 3DIEBench/ folder with --data-root (or set SEQBENCH_DATA_ROOT). The split files "
    "train_images.npy, train_labels.npy, val_images.npy, val_labels.npy come from the data/ folder of "
    "github.com/facebookresearch/SIE; put them in that folder or point data.split_dir at them."
)


def resolve_root(root: str | Path | None) -> Path:
    """The folder holding the synset folders; accepts its parent too. Clear error otherwise."""
    if root is None:
        raise DataError(f"no 3DIEBench root given. {GET_IT}")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise DataError(f"3DIEBench root {p} does not exist or is not a folder. {GET_IT}")
    if (p / "3DIEBench").is_dir() and not any(c.name.isdigit() for c in p.iterdir() if c.is_dir()):
        p = p / "3DIEBench"
    return p


def load_split(root: Path, split: str, split_dir: str | None, fallback: bool) -> tuple[list[str], np.ndarray]:
    """(object paths relative to root, labels) of ``split`` from the official split files."""
    for d in [root] + ([Path(split_dir).expanduser()] if split_dir else []):
        files = [d / f.format(split=split) for f in SPLIT_FILES]
        if all(f.is_file() for f in files):
            try:
                objs = np.load(files[0], allow_pickle=False)
                labels = np.load(files[1], allow_pickle=False)
            except (ValueError, OSError) as e:
                raise DataError(f"split file in {d} could not be read ({e}); re-download it. {GET_IT}") from None
            if objs.ndim != 1 or labels.shape != objs.shape or not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"split files {files[0]} / {files[1]} are malformed: expected two 1-D arrays of the "
                                f"same length (object paths, integer labels), got {objs.shape} and "
                                f"{labels.shape} {labels.dtype}")
            return [str(o).strip("/") for o in objs], labels.astype(np.int64)
    if fallback:
        return fallback_split(root, split)
    names = ", ".join(f.format(split=split) for f in SPLIT_FILES)
    where = f"{root}" + (f" or {split_dir}" if split_dir else "")
    raise DataError(f"3DIEBench split files {names} not found in {where}. {GET_IT} Or pass "
                    f"--set data.fallback_split=true for a deterministic split by object (not comparable "
                    f"with published numbers; recorded in the result).")


def fallback_split(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Deterministic 80/20 split by object, stratified by class (hash of the object id)."""
    synsets = sorted(d.name for d in root.iterdir() if d.is_dir())
    objs, labels = [], []
    for label, syn in enumerate(synsets):
        for obj in sorted(o.name for o in (root / syn).iterdir() if o.is_dir()):
            is_val = int(hashlib.md5(obj.encode()).hexdigest(), 16) % 5 == 0
            if is_val == (split == "val"):
                objs.append(f"{syn}/{obj}")
                labels.append(label)
    if not objs:
        raise DataError(f"no <synset>/<object>/ folders found under {root} to build a fallback split. {GET_IT}")
    return objs, np.asarray(labels, dtype=np.int64)


class ThreeDIEBench(SequenceDataset):
    """Sequences of ``num_views`` distinct views of one object with relative-rotation actions."""

    num_classes = 55
    probe_targets = (
        ProbeTarget("rotation", "pair", "mlp", 4),  # quaternion of R_0^-1 R_1 (seq-JEPA rot_regressor)
        ProbeTarget("color", "pair", "linear", 2),  # (floor_hue, spot_hue) deltas (color_regressor)
        ProbeTarget("indiv_rotation", "single", "mlp", 4),  # quaternion of R_0 (Table 1 "indiv. R^2")
    )
    path_composition = "quaternion"  # path integration target: product of the relative rotations
    view_bank = True  # a finite set of views per object, with latents: pair probes draw fresh pairs per epoch

    def __init__(self, root: str | Path | None, split: str, num_views: int, image_size: int,
                 latent_type: str = "rot", seed: int = 0, fixed: bool = False, canonical_quat: bool = False,
                 split_dir: str | None = None, fallback_split: bool = False, num_classes: int | None = None) -> None:
        super().__init__(num_views, seed, fixed)
        if latent_type not in ACTION_DIMS:
            raise DataError(f"unknown data.latent_type {latent_type!r}; valid: {', '.join(ACTION_DIMS)}")
        self.root = resolve_root(root)
        self.split, self.image_size, self.latent_type = split, image_size, latent_type
        self.canonical = canonical_quat
        self.action_dim = ACTION_DIMS[latent_type]
        self.objects, self.labels = load_split(self.root, split, split_dir, fallback_split)
        if num_classes is not None:
            self.num_classes = num_classes
        if len(self.objects) == 0:
            raise DataError(f"3DIEBench {split} split under {self.root} lists no objects")
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise DataError(f"3DIEBench {split} labels must lie in 0..{self.num_classes - 1}, found "
                            f"{self.labels.min()}..{self.labels.max()}; the split files do not match this dataset")
        first = self.root / self.objects[0]
        if not first.is_dir():
            raise DataError(f"object folder {first} listed in the {split} split file is missing: is {self.root} "
                            f"the extracted 3DIEBench/ folder (holding <synset>/<object_id>/image_k.jpg)? {GET_IT}")
        self.views_per_object = sum(1 for _ in first.glob("image_*.jpg"))
        if self.views_per_object < num_views:
            raise DataError(f"{first} has {self.views_per_object} image_k.jpg views but {num_views} views per "
                            f"sample are needed (sequence length + target); expected image_0.jpg ... latent_0.npy")

    def num_items(self) -> int:
        return len(self.objects)

    def labels_of(self) -> np.ndarray:
        return self.labels

    def _image(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                x = TF.to_tensor(im)
        except FileNotFoundError:
            raise DataError(f"missing image {path}; the 3DIEBench tree is incomplete") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataError(f"corrupt image {path} ({e}); re-extract it from the 3DIEBench archive") from None
        return TF.normalize(x, MEAN, STD)

    def _latent(self, path: Path) -> np.ndarray:
        try:
            lat = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"missing latent file {path}; the 3DIEBench tree is incomplete") from None
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"corrupt latent file {path} ({e})") from None
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        if lat.shape != (7,) or not np.isfinite(lat).all():
            raise DataError(f"latent file {path} must hold 7 finite floats [rot_x, rot_y, rot_z, floor_hue, "
                            f"spot_theta, spot_phi, spot_hue], got shape {lat.shape}")
        return lat

    def item(self, index: int, rng: np.random.Generator) -> dict:
        ids = rng.choice(self.views_per_object, self.num_views, replace=False)
        obj = self.root / self.objects[index]
        views = torch.stack([self._image(obj / f"image_{k}.jpg") for k in ids])
        lat = np.stack([self._latent(obj / f"latent_{k}.npy") for k in ids])
        return {
            "views": views,
            "actions": torch.from_numpy(relative_actions(lat, self.latent_type, self.canonical)),
            "label": int(self.labels[index]),
            "targets": {k: torch.from_numpy(v) for k, v in probe_targets(lat, self.canonical).items()},
            "latents": torch.from_numpy(lat),
            "abs_latents": torch.from_numpy(absolute_params(lat, self.latent_type, self.canonical)),
        }

    def bank_targets(self, first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
        return pair_targets(first, second, self.canonical)
