"""Tiny generated stand-ins of CIFAR-100, Tiny ImageNet and STL-10, written in each official on-disk format.

``cifar100-mini``, ``tinyimagenet-mini``, ``stl10-mini`` and ``stl10-saccades-mini`` are read back by the
real loaders (cifar100.py, tinyimagenet.py, stl10.py, saccades.py), so the demo and the tests exercise
the same code as the real datasets. Each class is one procedurally drawn shape (disc, square, triangle,
cross, ring, stripes, diamond, star, crescent, X) at a random position, size and colour over a random
smooth textured background, so class identity is carried by shape alone and survives colour jitter and
cropping. STL-10 images hold 2-3 copies of their shape so that 32 px glimpses see class evidence; the
STL-10 tree also gets saliency arrays in the paper's layout (``salmap-stl10/<split>/saliency_<split>.npy``),
computed with the built-in spectral-residual map (not DeepGaze). Results carry a ``label_note`` that says
they are stand-ins, not comparable with published numbers.

Generation is deterministic for a given :class:`ImageMiniConfig`, cached under ``$SEQBENCH_CACHE`` (or
``data.root``), written to a temporary folder and renamed when complete.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.config import ImageMiniConfig, RunConfig, to_dict
from benchmark.data import cifar100, saccades, stl10, tinyimagenet
from benchmark.data.base import SequenceDataset
from benchmark.data.mini3d import default_cache_dir
from benchmark.infra.errors import ConfigError
from methods.contract import DataSpec

GENERATOR_VERSION = 1
SHAPES = ["disc", "square", "triangle", "cross", "ring", "stripes", "diamond", "star", "crescent", "x"]
FORMATS = {"cifar100": 32, "tinyimagenet": 64, "stl10": 96}  # native image side of each format
NOTE = ("{name}: embedded procedural stand-in written in the official {fmt} format, not comparable with "
        "published numbers")


def _mask(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shape ``kind`` in its unit frame (x right, y down, roughly inside [-1, 1]^2) -> boolean mask."""
    r, th = np.hypot(x, y), np.arctan2(y, x)
    box = (np.abs(x) < 0.85) & (np.abs(y) < 0.85)
    return {
        "disc": r < 0.9,
        "square": (np.abs(x) < 0.75) & (np.abs(y) < 0.75),
        "triangle": (y < 0.75) & (np.abs(x) < (y + 0.95) * 0.55),
        "cross": ((np.abs(x) < 0.28) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.28) & (np.abs(x) < 0.95)),
        "ring": (r > 0.55) & (r < 0.95),
        "stripes": box & (np.floor((y + 1) * 2.5) % 2 == 0),
        "diamond": np.abs(x) + np.abs(y) < 0.95,
        "star": r < 0.5 + 0.42 * np.cos(5 * th),
        "crescent": (r < 0.9) & (np.hypot(x - 0.45, y + 0.2) > 0.7),
        "x": ((np.abs(x - y) < 0.35) | (np.abs(x + y) < 0.35)) & (np.maximum(np.abs(x), np.abs(y)) < 0.9),
    }[kind]


def _colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def draw(cls: int, rng: np.random.Generator, size: int, copies: int = 1) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``cls``: ``copies`` shapes over a smooth textured background."""
    ss = 2 * size  # draw at 2x and average down: cheap anti-aliasing
    low = rng.uniform(0, 1, (4, 4, 3))
    bg = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((ss, ss), Image.BICUBIC)) / 255.0
    img = _colour(rng, (0.1, 0.5), (0.15, 0.5)) * 0.7 + bg * 0.3 + rng.normal(0, 0.03, (ss, ss, 3))
    yy, xx = np.mgrid[0:ss, 0:ss] / ss  # [0, 1) image coordinates
    for _ in range(copies):
        radius = rng.uniform(0.28, 0.42) if copies == 1 else rng.uniform(0.16, 0.24)
        cy, cx = rng.uniform(radius, 1 - radius, 2)
        m = _mask(SHAPES[cls], (xx - cx) / radius, (yy - cy) / radius)
        img = np.where(m[..., None], _colour(rng, (0.5, 1.0), (0.6, 1.0)), img)
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _images(cfg: ImageMiniConfig, split: int, per_class: int, size: int, copies: int) -> tuple[np.ndarray, ...]:
    """(N, size, size, 3) images and (N,) labels, classes interleaved, seeded per (split, image)."""
    labels = np.tile(np.arange(cfg.classes), per_class)
    imgs = np.stack([draw(int(c), np.random.default_rng([cfg.seed, split, k]), size, copies)
                     for k, c in enumerate(labels)])
    return imgs, labels.astype(np.int64)


# ---- writers of the official formats (also used by the tests) ----

def write_cifar100(folder: Path, train: tuple, test: tuple, class_names: list[str]) -> None:
    """``folder/cifar-100-python/{train,test,meta}`` from (images (N, 32, 32, 3) uint8, labels) pairs."""
    d = folder / cifar100.FOLDER
    d.mkdir(parents=True, exist_ok=True)
    for name, (imgs, labels) in (("train", train), ("test", test)):
        data = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2).reshape(len(imgs), -1))  # R plane, G, B
        batch = {b"batch_label": f"{name} batch".encode(), b"data": data, b"fine_labels": [int(c) for c in labels],
                 b"coarse_labels": [int(c) // 5 for c in labels],
                 b"filenames": [f"{name}_{k:05d}.png".encode() for k in range(len(imgs))]}
        with (d / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {b"fine_label_names": [n.encode() for n in class_names],
            b"coarse_label_names": [f"super{k}".encode() for k in range(max(1, len(class_names) // 5))]}
    with (d / "meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)


def write_tinyimagenet(folder: Path, train: tuple, val: tuple, wnids: list[str]) -> None:
    """``folder/tiny-imagenet-200/`` with wnids.txt, train/<wnid>/images, val/images + val_annotations.txt."""
    d = folder / tinyimagenet.FOLDER
    (d / "val" / "images").mkdir(parents=True, exist_ok=True)
    (d / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (d / "words.txt").write_text("".join(f"{w}\t{SHAPES[k % len(SHAPES)]}\n" for k, w in enumerate(wnids)))
    imgs, labels = train
    counts = dict.fromkeys(wnids, 0)
    for img, c in zip(imgs, labels, strict=True):
        w = wnids[int(c)]
        (d / "train" / w / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / "train" / w / "images" / f"{w}_{counts[w]}.JPEG", quality=95)
        counts[w] += 1
    lines = []
    for k, (img, c) in enumerate(zip(*val, strict=True)):
        Image.fromarray(img).save(d / "val" / "images" / f"val_{k}.JPEG", quality=95)
        lines.append(f"val_{k}.JPEG\t{wnids[int(c)]}\t0\t0\t{img.shape[1] - 1}\t{img.shape[0] - 1}\n")
    (d / "val" / "val_annotations.txt").write_text("".join(lines))


def write_stl10(folder: Path, splits: dict[str, tuple], class_names: list[str]) -> None:
    """``folder/stl10_binary/{split}_X.bin`` (column-major 3x96x96 uint8) and ``{split}_y.bin`` (labels 1..K)."""
    d = folder / stl10.FOLDER
    d.mkdir(parents=True, exist_ok=True)
    for split, (imgs, labels) in splits.items():
        # (N, H, W, C) -> (N, C, W, H): each channel stored column-major, as the official files.
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(imgs.transpose(0, 3, 2, 1)).tobytes())
        if labels is not None:
            (d / f"{split}_y.bin").write_bytes((np.asarray(labels) + 1).astype(np.uint8).tobytes())
    (d / "class_names.txt").write_text("".join(f"{n}\n" for n in class_names))


def write_saliency(folder: Path, split: str, imgs: np.ndarray) -> None:
    """``folder/salmap-stl10/<split>/saliency_<split>.npy`` (N, 1, 96, 96) float32, spectral residual."""
    d = folder / "salmap-stl10" / split
    d.mkdir(parents=True, exist_ok=True)
    maps = [saccades.spectral_residual(torch.from_numpy(imgs[i:i + 256]).permute(0, 3, 1, 2).float() / 255)
            for i in range(0, len(imgs), 256)]
    np.save(d / f"saliency_{split}.npy", torch.cat(maps)[:, None].numpy().astype(np.float32))


# ---- generation and cache ----

def cache_key(fmt: str, cfg: ImageMiniConfig) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, "fmt": fmt, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def check_settings(cfg: ImageMiniConfig) -> None:
    """The generator's limits (also checked before a run starts: image_mini_entry)."""
    if not 2 <= cfg.classes <= len(SHAPES):
        raise ConfigError(f"data.image_mini.classes must be 2..{len(SHAPES)}, got {cfg.classes}")
    if cfg.train_per_class < 1 or cfg.test_per_class < 1 or cfg.unlabeled < 0:
        raise ConfigError("data.image_mini needs train_per_class >= 1, test_per_class >= 1 and unlabeled >= 0")


def generate(fmt: str, cfg: ImageMiniConfig, cache_dir: str | Path | None = None) -> Path:
    """Write the ``fmt`` stand-in once (cached by its settings); returns the folder to pass as data root."""
    check_settings(cfg)
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    root = base / f"{fmt}-mini-{cache_key(fmt, cfg)}"
    if (root / "COMPLETE").is_file():
        return root
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    size, copies = FORMATS[fmt], (2 if fmt == "stl10" else 1)
    train = _images(cfg, 0, cfg.train_per_class, size, copies)
    test = _images(cfg, 1, cfg.test_per_class, size, copies)
    names = SHAPES[: cfg.classes]
    if fmt == "cifar100":
        write_cifar100(tmp, train, test, names)
    elif fmt == "tinyimagenet":
        write_tinyimagenet(tmp, train, test, [f"n{90000000 + k:08d}" for k in range(cfg.classes)])
    else:
        rng = np.random.default_rng([cfg.seed, 2])
        unl_labels = rng.integers(0, cfg.classes, cfg.unlabeled)
        unl = np.stack([draw(int(c), np.random.default_rng([cfg.seed, 2, k]), size, copies)
                        for k, c in enumerate(unl_labels)]) if cfg.unlabeled else np.zeros((0, size, size, 3), np.uint8)
        write_stl10(tmp, {"train": train, "test": test, "unlabeled": (unl, None)}, names)
        for split, imgs in (("train", train[0]), ("test", test[0]), ("unlabeled", unl)):
            write_saliency(tmp, split, imgs)
    (tmp / "README.txt").write_text(
        f"{fmt}-mini: procedurally drawn stand-in in the official {fmt} layout, generated by seqbench "
        f"(v{GENERATOR_VERSION}, settings {json.dumps(to_dict(cfg))}). Not comparable with published numbers.\n")
    (tmp / "COMPLETE").write_text(json.dumps(to_dict(cfg)))
    if root.exists():  # a concurrent generator finished first, or a stale partial folder
        if (root / "COMPLETE").is_file():
            shutil.rmtree(tmp)
            return root
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


# ---- registry glue: builders and specs of the -mini entries ----

_REAL = {"cifar100": (cifar100.build, cifar100.spec, "cifar100"),
         "tinyimagenet": (tinyimagenet.build, tinyimagenet.spec, "tinyimagenet"),
         "stl10": (stl10.build, stl10.spec, "stl10"),
         "stl10-saccades": (saccades.build, saccades.spec, "stl10")}


def mini_build(name: str) -> Callable[[RunConfig, str, int, bool], SequenceDataset]:
    """Builder of ``{name}-mini``: generate (cached) and read back through the real loader of ``name``."""
    build, _spec, fmt = _REAL[name]

    def builder(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
        root = generate(fmt, cfg.data.image_mini, cfg.data.root)
        ds = build(cfg, split, num_views, fixed, root=root, num_classes=cfg.data.image_mini.classes)
        ds.label_note = NOTE.format(name=f"{name}-mini", fmt=fmt)
        return ds

    return builder


def mini_spec(name: str) -> Callable[[RunConfig], DataSpec]:
    _build, spec, _fmt = _REAL[name]
    return lambda cfg: spec(cfg, num_classes=cfg.data.image_mini.classes)
