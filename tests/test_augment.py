"""Parametric augmentations (benchmark/data/augment.py): parity with torchvision, geometry, actions.

Known answers: each colour op equals torchvision's with the same factor; an integer crop/flip equals the
slice of the source; the action is the difference of consecutive normalised parameter vectors; the
sampled parameters respect the recipe ranges. Then every registered method trains one step on a batch
of augmentation sequences and on one of saccade (glimpse) sequences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from benchmark.config import AugConfig, SaccadeConfig
from benchmark.core.registry import METHODS
from benchmark.data import augment as A
from benchmark.data.base import collate, to_batch
from benchmark.data.saccades import SaccadeSequences
from benchmark.infra.errors import ConfigError
from methods.contract import DataSpec


class Source:
    """A tiny in-memory ImageSource: 6 random 24 px images, 3 classes."""

    name, mean, std = "fake", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.imgs = torch.randint(0, 256, (6, 3, 24, 24), generator=g, dtype=torch.uint8)
        self.labels = np.arange(6) % 3

    def __len__(self) -> int:
        return 6

    def image(self, index: int) -> torch.Tensor:
        return self.imgs[index]


def neutral(n: int = 1, views: int = 1, crop=(0.0, 0.0, 24.0, 24.0)) -> A.AugParams:
    no = torch.zeros(n, views, dtype=torch.bool)
    return A.AugParams(crop=torch.tensor(crop).expand(n, views, 4).clone(), flip=no.clone(),
                       jitter=torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(n, views, 4).clone(),
                       order=torch.arange(4).expand(n, views, 4).clone(), gray=no.clone(),
                       sigma=torch.zeros(n, views), solarize=no.clone(), source_hw=(24, 24))


@pytest.mark.parametrize("op,fn,factor", [(0, TF.adjust_brightness, 1.3), (1, TF.adjust_contrast, 0.7),
                                          (2, TF.adjust_saturation, 1.15), (3, TF.adjust_hue, 0.08),
                                          (3, TF.adjust_hue, -0.1)])
def test_colour_ops_match_torchvision(op, fn, factor) -> None:
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    ours = A._jitter_op(op, x.clone(), torch.full((4,), factor))
    ref = torch.stack([fn(xi, factor) for xi in x])
    assert torch.allclose(ours, ref, atol=2e-6)


def test_blur_matches_torchvision_per_sample_sigma() -> None:
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.3, 1.0, 2.0])
    ours = A.gaussian_blur(x, sigma, 3)
    ref = torch.stack([TF.gaussian_blur(xi, [3, 3], [float(s), float(s)]) for xi, s in zip(x, sigma, strict=True)])
    assert torch.allclose(ours, ref, atol=1e-6)
    assert [A.blur_kernel_size(s) for s in (32, 64, 96, 8)] == [3, 7, 9, 1]  # upstream's formula


def test_crop_flip_and_solarize_are_exact_on_integer_boxes() -> None:
    img = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    p = neutral(crop=(4.0, 6.0, 12.0, 12.0))
    assert torch.allclose(A.augment(img, p, 12)[0, 0], img[0, :, 4:16, 6:18], atol=1e-6)
    p.flip[:] = True
    assert torch.allclose(A.augment(img, p, 12)[0, 0], img[0, :, 4:16, 6:18].flip(-1), atol=1e-6)
    p.flip[:], p.solarize[:] = False, True
    ref = img[0, :, 4:16, 6:18]
    assert torch.allclose(A.augment(img, p, 12)[0, 0], torch.where(ref >= 128 / 255, 1 - ref, ref), atol=1e-6)
    # Upscaling matches torchvision's bicubic resized_crop away from the crop border.
    p.solarize[:] = False
    ours = A.augment(img, p, 24)[0, 0]
    ref = TF.resized_crop(img[0], 4, 6, 12, 12, [24, 24], interpolation=TF.InterpolationMode.BICUBIC,
                          antialias=False).clamp(0, 1)
    assert torch.allclose(ours[:, 3:-3, 3:-3], ref[:, 3:-3, 3:-3], atol=1e-5)


def test_sampled_parameters_respect_the_recipe() -> None:
    g = torch.Generator().manual_seed(4)
    p = A.sample_params(400, [A.OBSERVATION, A.TARGET], 32, 32, g)
    i, j, h, w = p.crop.unbind(-1)
    area = h * w / 32**2
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= 32).all() and (j + w <= 32).all()
    assert area.min() >= 0.2 - 0.05 and area.max() <= 1.0 and (h == h.round()).all()
    jit = p.jitter[p.jitter[..., 3] != 0]
    assert ((jit[:, 0] - 1).abs() <= 0.4).all() and ((jit[:, 2] - 1).abs() <= 0.2).all()
    assert (jit[:, 3].abs() <= 0.1).all()
    assert abs(float((p.jitter[:, 0, 3] != 0).float().mean()) - 0.8) < 0.08  # p_jitter 0.8
    assert (p.sigma[:, 0] >= 0.1).all() and (p.sigma[:, 0] <= 2.0).all()  # observations: blur p = 1
    assert 0.02 < float((p.sigma[:, 1] > 0).float().mean()) < 0.2  # target view: blur p = 0.1
    assert not p.solarize[:, 0].any() and p.solarize[:, 1].any()
    assert sorted(p.order[0, 0].tolist()) == [0, 1, 2, 3]
    assert p.vector().shape == (400, 2, 9) and p.vector(blur=False).shape == (400, 2, 8)


def test_augment_is_batched_and_device_agnostic() -> None:
    g = torch.Generator().manual_seed(5)
    imgs = torch.rand(3, 3, 24, 24, generator=g)
    p = A.sample_params(3, [A.OBSERVATION] * 3 + [A.TARGET], 24, 24, g)
    out = A.augment(imgs, p, 16)
    assert out.shape == (3, 4, 3, 16, 16) and out.min() >= 0 and out.max() <= 1
    # Rendering the batch equals rendering each image alone (no cross-talk between samples).
    first = A.AugParams(*(getattr(p, k)[:1] for k in ("crop", "flip", "jitter", "order", "gray", "sigma",
                                                         "solarize")), source_hw=p.source_hw)
    assert torch.allclose(A.augment(imgs[:1], first, 16), out[:1], atol=1e-6)
    if torch.cuda.is_available():
        gpu = A.augment(imgs.cuda(), p, 16).cpu()
        assert torch.allclose(gpu, out, atol=1e-4)


def test_actions_are_differences_of_normalised_parameters() -> None:
    vec = torch.tensor([[[3.0, 4.0, 12.0, 16.0, 1.2, 0.8, 1.0, 0.05, 0.5],
                         [0.0, 0.0, 24.0, 24.0, 1.0, 1.0, 1.0, 0.0, 1.5]]])
    l2 = A.normalise_params(vec, "view-l2", (24, 24))
    assert torch.allclose(l2[0, :, 2], torch.tensor([12.0, 24.0]) / math.hypot(12, 24))  # per parameter, over views
    img = A.normalise_params(vec, "image", (24, 24))
    assert torch.allclose(img[0, 0, :4], torch.tensor([3 / 24, 4 / 24, 0.5, 16 / 24]))
    assert torch.equal(img[0, :, 4:], vec[0, :, 4:])

    ds = A.AugmentedSequences(Source(), 4, 16, AugConfig(), seed=0, fixed=True, num_classes=3)
    it = ds[1]
    assert it["views"].shape == (4, 3, 16, 16) and it["actions"].shape == (3, 9)
    assert {t.name for t in ds.probe_targets} == {"aug", "crop", "jitter", "blur"}
    # The probe target (view 0 -> 1) is the first action; the actions telescope to last - first.
    assert torch.allclose(it["targets"]["aug"], it["actions"][0])
    assert torch.allclose(it["targets"]["crop"], it["actions"][0, :4])
    assert torch.equal(ds[1]["views"], it["views"]), "fixed datasets are a pure function of (seed, index)"
    ds.fixed = False
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["views"], it["views"]), "a new epoch draws new augmentations"


@pytest.mark.parametrize("condition,blur,dim", [("aug", True, 9), ("aug", False, 8), ("crop", True, 4),
                                                ("jitter", True, 4), ("blur", True, 1)])
def test_conditioning_choice_sets_the_action(condition, blur, dim) -> None:
    cfg = AugConfig(condition=condition, blur=blur, param_norm="image")
    ds = A.AugmentedSequences(Source(), 3, 16, cfg, seed=0, fixed=True, num_classes=3)
    it = ds[0]
    assert ds.action_dim == dim == it["actions"].shape[1]
    full = it["targets"]["aug"]
    sl = A.SLICES.get(condition, slice(0, dim))
    assert torch.allclose(it["actions"][0], full[sl])
    assert ("blur" in it["targets"]) is blur


def test_blur_condition_without_blur_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="blur"):
        A.action_dim(AugConfig(condition="blur", blur=False))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_augmentation_and_saccade_sequences(name) -> None:
    """One training step + encode of every registered method on both kinds of image-action batches."""
    cls = METHODS[name]
    for action_dim in (9, 2):
        torch.manual_seed(0)
        # 8 px views keep this loop cheap; the CIFAR stem still runs every ResNet stage.
        method = cls(cls.Config(), DataSpec(8, action_dim, 3, small_images=True))  # type: ignore[attr-defined]
        views = method.views_needed(2)
        if action_dim == 9:
            ds = A.AugmentedSequences(Source(), views, 8, AugConfig(), seed=0, fixed=False, num_classes=3)
        else:
            ds = SaccadeSequences(Source(), None, views, 8, SaccadeConfig(saliency="spectral", fovea=12), seed=0,
                                  fixed=False, num_classes=3)
        batch = to_batch(collate([ds[k] for k in range(4)]))
        assert batch.actions.shape == (4, views - 1, action_dim)
        method.train()
        out = method.training_step(batch)
        assert torch.isfinite(out.loss), f"{name} on {action_dim}-d actions"
        out.loss.backward()
        method.eval()
        reps = method.encode(batch.views[:, :2], batch.actions[:, :1])
        assert all(torch.isfinite(v).all() for v in reps.values())
