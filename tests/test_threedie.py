"""The real 3DIEBench loader on a small tree written in the official layout; rotations vs scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from benchmark.config import MiniConfig
from benchmark.data.mini3d import POSE_ONLY_SCENE, generate
from benchmark.data.rotations import probe_targets, relative_actions, relative_quats
from benchmark.data.threedie import ThreeDIEBench
from benchmark.infra.errors import DataError

SYNSETS = ["02691156", "02747177", "02773838"]


def write_official_tree(root, objects_per_class=2, views=5, size=24, seed=0):
    """A tiny 3DIEBench in the official layout: <synset>/<obj>/image_k.jpg + latent_k.npy, split npys."""
    rng = np.random.default_rng(seed)
    split = {"train": ([], []), "val": ([], [])}
    for label, syn in enumerate(SYNSETS):
        for i in range(objects_per_class):
            obj = f"{rng.integers(1 << 60):032x}"
            d = root / syn / obj
            d.mkdir(parents=True)
            for k in range(views):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"image_{k}.jpg")
                lat = np.concatenate([rng.uniform(-np.pi / 2, np.pi / 2, 3), rng.uniform(0, 1, 4)])
                np.save(d / f"latent_{k}.npy", lat.astype(np.float32))
            s = "val" if i == 0 else "train"
            split[s][0].append(f"/{syn}/{obj}/")
            split[s][1].append(label)
    for s, (objs, labels) in split.items():
        np.save(root / f"{s}_images.npy", np.array(objs, dtype="<U43"))
        np.save(root / f"{s}_labels.npy", np.array(labels, dtype=np.int64))
    return root


@pytest.fixture()
def tree(tmp_path):
    return write_official_tree(tmp_path / "3DIEBench")


def test_reads_official_layout(tree):
    ds = ThreeDIEBench(tree, "train", num_views=4, image_size=16, latent_type="rotcolor")
    assert len(ds) == 3 and ds.views_per_object == 5 and ds.action_dim == 6
    item = ds[0]
    assert item["views"].shape == (4, 3, 16, 16) and item["actions"].shape == (3, 6)
    assert item["label"] == 0 and set(item["targets"]) == {"rotation", "color", "indiv_rotation"}
    assert ThreeDIEBench(tree.parent, "val", 2, 16).objects == ThreeDIEBench(tree, "val", 2, 16).objects


def test_actions_match_the_latents_of_the_sampled_views(tree):
    ds = ThreeDIEBench(tree, "train", num_views=3, image_size=16, latent_type="all")
    rng = np.random.default_rng([ds.seed, ds.epoch + 1, 1])
    ids = rng.choice(5, 3, replace=False)
    lat = np.stack([np.load(tree / ds.objects[1] / f"latent_{k}.npy") for k in ids]).astype(np.float64)
    np.testing.assert_allclose(ds[1]["actions"].numpy(), relative_actions(lat, "all"), atol=1e-6)


def test_view_bank_items_carry_latents_and_bank_targets_match_the_item_targets(tree):
    ds = ThreeDIEBench(tree, "train", num_views=2, image_size=16, fixed=True)
    bank = ds.with_views(5)
    assert ds.num_views == 2 and bank.num_views == 5 and len(bank) == ds.num_items()
    item = bank[1]
    assert item["views"].shape[0] == 5 and item["latents"].shape == (5, 7)
    ids = sorted(np.random.default_rng([ds.seed, 0, 1]).choice(5, 5, replace=False))
    assert ids == list(range(5))  # every view of the object, in a random order
    lat = item["latents"].numpy()
    got = ds.bank_targets(lat[:-1], lat[1:])  # vectorised over 4 consecutive pairs
    for j in range(4):
        want = probe_targets(lat[j:j + 2])
        for k, v in want.items():
            np.testing.assert_allclose(got[k][j], v, atol=1e-6)
    pair = ds[1]
    np.testing.assert_allclose(ds.bank_targets(pair["latents"][:1].numpy(), pair["latents"][1:].numpy())["rotation"][0],
                               pair["targets"]["rotation"].numpy(), atol=1e-6)


def test_sampling_is_a_function_of_seed_epoch_index(tree):
    ds = ThreeDIEBench(tree, "train", num_views=3, image_size=16)
    a, b = ds[2]["actions"], ds[2]["actions"]
    assert torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2]["actions"])
    fixed = ThreeDIEBench(tree, "train", num_views=3, image_size=16, fixed=True)
    first = fixed[0]["actions"]
    fixed.set_epoch(5)
    assert torch.equal(first, fixed[0]["actions"])


def test_relative_rotation_matches_scipy_on_random_euler_angles():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(-np.pi / 2, np.pi / 2, (50, 3)), rng.uniform(0, 1, (50, 4))], axis=1)
    q = relative_quats(lat)
    for j in range(49):
        r1 = Rotation.from_euler("xyz", lat[j, :3]).as_matrix()
        r2 = Rotation.from_euler("xyz", lat[j + 1, :3]).as_matrix()
        expect = Rotation.from_matrix(r1.T @ r2).as_quat()
        assert np.allclose(q[j], expect, atol=1e-5) or np.allclose(q[j], -expect, atol=1e-5)
        # R_1 R_rel = R_2: the relative rotation takes view j to view j+1.
        np.testing.assert_allclose(r1 @ Rotation.from_quat(q[j]).as_matrix(), r2, atol=1e-5)
    t = probe_targets(lat[:2])
    np.testing.assert_allclose(t["rotation"], q[0], atol=1e-6)
    np.testing.assert_allclose(t["color"], lat[1, [3, 6]] - lat[0, [3, 6]], atol=1e-6)
    canon = relative_quats(lat, canonical=True)
    assert (canon[:, 3] >= 0).all()


def test_missing_root_and_split_files_and_fallback(tmp_path, tree):
    with pytest.raises(DataError, match="no 3DIEBench root given.*3DIEBench.tar.gz"):
        ThreeDIEBench(None, "train", 2, 16)
    with pytest.raises(DataError, match="does not exist"):
        ThreeDIEBench(tmp_path / "nope", "train", 2, 16)
    for f in tree.glob("*_images.npy"):
        f.unlink()
    with pytest.raises(DataError, match="train_images.npy, train_labels.npy not found .*fallback_split"):
        ThreeDIEBench(tree, "train", 2, 16)
    ds = ThreeDIEBench(tree, "train", 2, 16, fallback_split=True)
    val = ThreeDIEBench(tree, "val", 2, 16, fallback_split=True)
    assert len(ds) + len(val) == 6 and not set(ds.objects) & set(val.objects)


def test_malformed_tree_errors_name_the_file(tree):
    ds = ThreeDIEBench(tree, "train", 5, 16)
    victim = tree / ds.objects[0] / "image_3.jpg"
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"corrupt image {victim}"):
        ds[0]
    lat = tree / ds.objects[1] / "latent_2.npy"
    np.save(lat, np.zeros(3))
    with pytest.raises(DataError, match=f"latent file {lat} must hold 7 finite floats"):
        ds[1]
    with pytest.raises(DataError, match="has 5 image_k.jpg views but 6 views per sample are needed"):
        ThreeDIEBench(tree, "train", 6, 16)
    np.save(tree / "train_labels.npy", np.array([0, 99, 2]))
    with pytest.raises(DataError, match="labels must lie in 0..54"):
        ThreeDIEBench(tree, "train", 2, 16)


def test_mini_generator_is_deterministic_and_in_the_official_layout(tmp_path):
    cfg = MiniConfig(classes=2, objects_per_class=3, views=3, resolution=16, seed=4)
    a = generate(cfg, tmp_path / "a", progress=False)
    b = generate(cfg, tmp_path / "b", progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    ds = ThreeDIEBench(a, "train", 3, 16, num_classes=2)
    assert ds.views_per_object == 3 and len(ds) + len(ThreeDIEBench(a, "val", 2, 16, num_classes=2)) == 6
    assert np.load(a / "val_images.npy").dtype == np.dtype("<U43")
    assert generate(cfg, tmp_path / "a", progress=False) == a  # cached: no re-render


def test_mini_render_workers_give_the_same_tree(tmp_path):
    """Single-threaded worker processes render byte for byte what the in-process render does."""
    cfg = MiniConfig(classes=2, objects_per_class=3, views=3, resolution=16, seed=1)
    a = generate(cfg, tmp_path / "a", progress=False, workers=0)
    b = generate(cfg, tmp_path / "b", progress=False, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_mini_pose_only_variant(tmp_path):
    """pose-only: one scene for every view of every object, only the rotation changes between views;
    the default keeps 3DIEBench's per-view draws. Both are separate caches in the official layout."""
    pose = generate(MiniConfig(classes=2, objects_per_class=3, views=4, resolution=16, variant="pose-only"),
                    tmp_path, progress=False)
    full = generate(MiniConfig(classes=2, objects_per_class=3, views=4, resolution=16), tmp_path, progress=False)
    assert pose != full
    for root, varies in ((pose, False), (full, True)):
        for obj in [p for p in root.glob("*/*") if p.is_dir()]:
            lat = np.stack([np.load(obj / f"latent_{k}.npy") for k in range(4)])
            assert np.ptp(lat[:, :3], axis=0).min() > 0  # rotations always differ
            assert bool(np.ptp(lat[:, 3:], axis=0).min() > 0) is varies
            assert varies or np.allclose(lat[0, 3:], POSE_ONLY_SCENE)
    ds = ThreeDIEBench(pose, "train", 2, 16, num_classes=2, latent_type="rotcolor")
    assert np.abs(ds[0]["actions"][:, 4:].numpy()).max() == 0  # colour actions are zero
