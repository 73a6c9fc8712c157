"""The pose variants of 3diebench-mini beside pose-only (benchmark/data/mini3d.py; docs/pattern.md): pose-mono
(one colour for every part) and pose-narrow (Euler angles in U(-pi/4, pi/4)), same shapes, scene and layout."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from benchmark.config import MiniConfig
from benchmark.data.mini3d import POSE_ONLY_SCENE, generate
from benchmark.data.threedie import ThreeDIEBench


def _render(tmp_path, variant: str):
    cfg = MiniConfig(classes=2, objects_per_class=3, views=4, resolution=32, variant=variant)
    return generate(cfg, tmp_path, progress=False, workers=0)


def _latents(root, obj: str) -> np.ndarray:
    return np.stack([np.load(root / obj / f"latent_{k}.npy") for k in range(4)])


def _objects(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*") if p.is_dir())


def test_pose_narrow_halves_the_pose_only_angles(tmp_path) -> None:
    only, narrow = _render(tmp_path, "pose-only"), _render(tmp_path, "pose-narrow")
    assert _objects(only) == _objects(narrow)
    for obj in _objects(only):
        a, b = _latents(only, obj), _latents(narrow, obj)
        # the same uniform draws scaled from pi/2 to pi/4: the same objects, half the angles
        np.testing.assert_allclose(b[:, :3], a[:, :3] / 2, atol=1e-6)
        assert np.abs(b[:, :3]).max() <= math.pi / 4 and np.allclose(b[:, 3:], POSE_ONLY_SCENE)
    ds = ThreeDIEBench(narrow, "train", 2, 32, num_classes=2)
    assert ds[0]["actions"].shape == (1, 4)  # the official layout, read by the real loader


def _green_blue_share(images: list[np.ndarray]) -> float:
    """Share of the saturated, bright pixels (the object's lit parts) whose hue is green or blue."""
    hsv = np.concatenate([np.asarray(Image.fromarray(i).convert("HSV")).reshape(-1, 3) for i in images]).astype(float)
    hue = hsv[(hsv[:, 1] > 60) & (hsv[:, 2] > 120), 0]  # PIL hue 0..255: green ~85, blue ~170
    assert len(hue) > 100
    return float(((hue > 50) & (hue < 200)).mean())


def test_pose_mono_wears_one_colour(tmp_path) -> None:
    """pose-only's green and blue parts show; pose-mono's object is one warm grey (tinted by the warm light),
    under the same scene, angles and shapes."""
    only, mono = _render(tmp_path, "pose-only"), _render(tmp_path, "pose-mono")
    for obj in _objects(only):
        np.testing.assert_array_equal(_latents(only, obj), _latents(mono, obj))
    coloured = [np.asarray(Image.open(only / o / f"image_{k}.jpg")) for o in _objects(only) for k in range(4)]
    grey = [np.asarray(Image.open(mono / o / f"image_{k}.jpg")) for o in _objects(mono) for k in range(4)]
    assert _green_blue_share(coloured) > 0.2
    assert _green_blue_share(grey) < 0.02
