"""Loaders of the official CIFAR-100 / Tiny ImageNet / STL-10 formats, their errors, and end-to-end runs.

Each test writes a few images in the official on-disk format, reads them back through the real loader
(pixel-exact where the format is lossless; STL-10 written independently, column-major), checks that a
corrupt file, a wrong class count or a truncated binary is a DataError naming the file, and runs
seq-JEPA through the CLI on each dataset.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.runner import main
from benchmark.data import image_mini
from benchmark.data.cifar100 import CIFAR100Images
from benchmark.data.stl10 import STL10Images
from benchmark.data.tinyimagenet import TinyImageNetImages
from benchmark.infra.errors import DataError
from tests.conftest import tiny_args


def images(n: int, size: int, seed: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % classes
    return np.stack([image_mini.draw(int(c) % 10, np.random.default_rng([seed, k]), size)
                     for k, c in enumerate(labels)]), labels


def cifar_tree(root: Path, classes: int = 100, train: int = 8, test: int = 4) -> Path:
    names = [f"class{k}" for k in range(classes)]
    image_mini.write_cifar100(root, images(train, 32, 0, classes), images(test, 32, 1, classes), names)
    return root


def tin_tree(root: Path, classes: int = 200, val: int = 4) -> Path:
    """One 64 px training image per class (Tiny ImageNet needs every listed class folder) + ``val`` images."""
    wnids = [f"n{10000000 + k:08d}" for k in range(classes)]
    image_mini.write_tinyimagenet(root, images(classes, 64, 0, classes), images(val, 64, 1, classes), wnids)
    return root


def stl_tree(root: Path, train: int = 10, test: int = 10, unlabeled: int = 8) -> Path:
    tr, te, un = images(train, 96, 0), images(test, 96, 1), images(unlabeled, 96, 2)[0]
    image_mini.write_stl10(root, {"train": tr, "test": te, "unlabeled": (un, None)}, image_mini.SHAPES)
    return root


# ---- CIFAR-100 ----

def test_cifar100_roundtrip_is_pixel_exact(tmp_path) -> None:
    root = cifar_tree(tmp_path)
    src = CIFAR100Images(root, "train")
    want, labels = images(8, 32, 0, 100)
    assert len(src) == 8 and src.labels.tolist() == labels.tolist() and len(src.class_names) == 100
    assert np.array_equal(src.image(5).permute(1, 2, 0).numpy(), want[5])
    # Independent decode of the official row layout: 1024 R values (row-major), then G, then B.
    with (root / "cifar-100-python" / "train").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][5]
    assert np.array_equal(raw[:1024].reshape(32, 32), want[5, :, :, 0])
    assert CIFAR100Images(root / "cifar-100-python", "val").labels.shape == (4,)  # the folder itself works too


def test_cifar100_errors_name_the_file(tmp_path) -> None:
    root = cifar_tree(tmp_path / "ok")
    folder = root / "cifar-100-python"
    with pytest.raises(DataError, match="meta lists 100 fine_label_names, expected 10"):
        CIFAR100Images(root, "train", num_classes=10)  # wrong class count
    (folder / "test").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DataError, match=r"cifar-100-python/test is corrupt"):
        CIFAR100Images(root, "val")
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}))
    with pytest.raises(DataError, match=r"test: fine labels span 0\.\.100, expected 0\.\.99"):
        CIFAR100Images(root, "val")
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test: 'data' must be a uint8 array of shape \(N, 3072\)"):
        CIFAR100Images(root, "val")
    # A pickle that would run code is refused, not executed.
    (folder / "test").write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(DataError, match="not allowed"):
        CIFAR100Images(root, "val")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(DataError, match="no cifar-100-python/ folder"):
        CIFAR100Images(tmp_path / "empty", "train")


# ---- Tiny ImageNet ----

def test_tinyimagenet_roundtrip(tmp_path) -> None:
    root = tin_tree(tmp_path, classes=3, val=5)
    train, val = TinyImageNetImages(root, "train", 3), TinyImageNetImages(root, "val", 3)
    assert len(train) == 3 and train.labels.tolist() == [0, 1, 2]  # class k = line k of wnids.txt
    want, labels = images(5, 64, 1, 3)
    assert val.labels.tolist() == labels.tolist()
    got = val.image(2).permute(1, 2, 0).numpy().astype(float)
    assert got.shape == (64, 64, 3) and np.abs(got - want[2]).mean() < 4  # JPEG quality 95


def test_tinyimagenet_errors_name_the_file(tmp_path) -> None:
    root = tin_tree(tmp_path, classes=3)
    folder = root / "tiny-imagenet-200"
    with pytest.raises(DataError, match=r"wnids\.txt lists 3 WordNet ids .* expected 200"):
        TinyImageNetImages(root, "train")  # wrong class count
    ann = folder / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt line 5: class n99999999 is not in wnids\.txt"):
        TinyImageNetImages(root, "val", 3)
    bad = folder / "train" / "n10000001" / "images" / "n10000001_0.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(DataError, match=r"corrupt image .*n10000001_0\.JPEG"):
        TinyImageNetImages(root, "train", 3).image(1)
    for p in (folder / "train" / "n10000002" / "images").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"n10000002/images/ is missing or holds no images"):
        TinyImageNetImages(root, "train", 3)


# ---- STL-10 ----

def test_stl10_reads_column_major_binaries(tmp_path) -> None:
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)  # (N, H, W, C)
    # The official layout, written independently of our writer: per image, per channel, column-major.
    raw = b"".join(imgs[n, :, :, c].tobytes(order="F") for n in range(3) for c in range(3))
    (d / "train_X.bin").write_bytes(raw)
    (d / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    src = STL10Images(tmp_path, "train")
    assert src.labels.tolist() == [0, 9, 3]
    assert np.array_equal(src.image(1).permute(1, 2, 0).numpy(), imgs[1])
    root = stl_tree(tmp_path / "w")  # our writer agrees with the loader too
    assert np.array_equal(STL10Images(root, "test").image(3).permute(1, 2, 0).numpy(), images(10, 96, 1)[0][3])
    assert STL10Images(root, "unlabeled").labels.tolist() == [-1] * 8


def test_stl10_errors_name_the_file(tmp_path) -> None:
    root = stl_tree(tmp_path)
    d = root / "stl10_binary"
    (d / "test_X.bin").write_bytes((d / "test_X.bin").read_bytes()[:-100])
    with pytest.raises(DataError, match=r"test_X\.bin is truncated"):
        STL10Images(root, "test")
    (d / "train_y.bin").write_bytes(bytes([1] * 9))
    with pytest.raises(DataError, match=r"train_y\.bin holds 9 labels but .*train_X\.bin holds 10 images"):
        STL10Images(root, "train")
    (d / "train_y.bin").write_bytes(bytes([1] * 9 + [11]))
    with pytest.raises(DataError, match=r"train_y\.bin: labels span 1\.\.11, expected 1\.\.10"):
        STL10Images(root, "train")
    with pytest.raises(DataError, match=r"class_names\.txt lists 10 classes, expected 12"):
        STL10Images(root, "unlabeled", num_classes=12)
    (d / "unlabeled_X.bin").unlink()
    with pytest.raises(DataError, match=r"unlabeled_X\.bin is missing"):
        STL10Images(root, "unlabeled")


# ---- end to end through the CLI ----

def run(tmp_path: Path, dataset: str, root: Path | None, *extra: str) -> dict:
    out = tmp_path / "runs"
    args = tiny_args(out, **{"train.max_steps": 2}) + ["--dataset", dataset, "--image-size", "16",
                                                        "--seq-len", "2", *extra]
    if root is not None:
        args += ["--data-root", str(root)]
    assert main(args) == 0
    return json.loads(next(out.rglob("result.json")).read_text())


@pytest.mark.parametrize("dataset,tree", [("cifar100", cifar_tree), ("tinyimagenet", tin_tree), ("stl10", stl_tree)])
def test_seqjepa_runs_on_each_official_format(tmp_path, dataset, tree) -> None:
    res = run(tmp_path, dataset, tree(tmp_path / "data"))
    m = res["metrics"]
    for key in ("top1", "aug_r2", "crop_r2", "jitter_r2", "blur_r2", "path_r2", "path_r2_no_vision_by_eval_len"):
        assert key in m, key
    assert m["images_per_s"] > 0 and m["headline_source"]["top1"] == "aggregate"
    assert res["provenance"]["dataset_note"] is None  # real data: no stand-in label
    assert res["config"]["data"]["aug"]["param_norm"] == "view-l2"


def test_mini_stand_in_is_labelled_and_conditioning_is_configurable(tmp_path) -> None:
    res = run(tmp_path, "cifar100-mini", None, "--set", "data.image_mini.classes=3",
              "--set", "data.image_mini.train_per_class=3", "--set", "data.image_mini.test_per_class=2",
              "--set", "data.aug.condition=crop", "--set", "data.aug.blur=false")
    assert "stand-in" in res["provenance"]["dataset_note"]
    assert "blur_r2" not in res["metrics"] and "aug_r2" in res["metrics"]  # probes do not follow conditioning


def test_cli_reports_wrong_class_count_with_the_file(tmp_path, capsys) -> None:
    root = cifar_tree(tmp_path / "data", classes=10)  # a 10-class meta is not CIFAR-100
    args = tiny_args(tmp_path / "runs") + ["--dataset", "cifar100", "--data-root", str(root)]
    assert main(args) == 2
    assert "cifar-100-python/meta lists 10 fine_label_names, expected 100" in capsys.readouterr().err
