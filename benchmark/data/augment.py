"""Parametric augmentations on batched tensors, and view sequences whose actions are their parameters.

seq-JEPA's CIFAR-100 / Tiny ImageNet experiments (docs/protocol.md §4) use EquiMod's parameterised augmentations
(``hafezgh/seq-jepa:seq-jepa/src/augmentations.py``, adapted from ``ADevillers/EquiMod:src/transforms.py``):

* observation views: RandomResizedCrop (scale 0.2-1, ratio 3/4-4/3, bicubic) + hflip p 0.5; ColorJitter p 0.8
  (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random op order) + grayscale p 0.2; Gaussian blur
  p 1.0, sigma U(0.1, 2), kernel ``2 * round((size - 10) / 20) + 1``; solarize p 0;
* the target (last) view: the same with blur p 0.1 and solarize p 0.2.

Each view's conditioning vector is 9-d: crop [i, j, h, w] (source pixels) + jitter factors [b, c, s, h]
(1, 1, 1, 0 when not jittered) + blur sigma (0 when not blurred); flip, grayscale, solarize and the jitter
order are not in it. The relative action between consecutive views is the difference of their
(normalised) vectors. Upstream L2-normalises every parameter *across the views of a sequence*
(``engine.py``: ``normalize(params, dim=1)`` on (B, S, P)); ``param_norm="image"`` instead divides the crop
box by the image side. With "view-l2" an action depends on how many views the sequence has (training:
M_tr + 1; probes: max(2, M_val)), exactly as upstream's.

Deliberate differences from upstream (which works on PIL uint8 images): every op runs in float without
re-quantising between ops; the bicubic kernel is grid_sample's (a = -0.75, PIL uses -0.5) and reads the
pixels just outside the crop box at its edge (PIL clamps to the box). Interiors match torchvision's
tensor ``resized_crop`` to 1e-5 (tests/test_augment.py).

Everything here runs on (N, 3, H, W) float tensors on any device: :func:`sample_params` draws the
parameters of L views for N images from a ``torch.Generator``, :func:`augment` renders them in one
batched pass (affine grid + bicubic ``grid_sample`` for crop/flip, per-sample colour ops, a grouped
convolution for per-sample blur). :class:`AugmentedSequences` calls them per image in DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.config import AugConfig
from benchmark.data.base import ProbeTarget, SequenceDataset
from benchmark.infra.errors import ConfigError

# Column slices of the 9-d parameter vector (upstream ``get_latent_slice``).
SLICES = {"crop": slice(0, 4), "jitter": slice(4, 8), "blur": slice(8, 9)}


@dataclass(frozen=True)
class Recipe:
    """The distribution of one view's augmentation (upstream ``ParamCompose`` arguments)."""

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_flip: float = 0.5
    p_jitter: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    p_gray: float = 0.2
    p_blur: float = 1.0
    sigma: tuple[float, float] = (0.1, 2.0)
    p_solarize: float = 0.0


OBSERVATION = Recipe()
TARGET = Recipe(p_blur=0.1, p_solarize=0.2)  # upstream ``pred_trans``: the last view of every sequence


@dataclass
class AugParams:
    """Parameters of L views of N images; every field has leading shape (N, L)."""

    crop: Tensor  # (N, L, 4) float [i, j, h, w]: top, left, height, width in source pixels
    flip: Tensor  # (N, L) bool, horizontal flip after the crop
    jitter: Tensor  # (N, L, 4) float [brightness, contrast, saturation, hue]; (1, 1, 1, 0) = not jittered
    order: Tensor  # (N, L, 4) long: the order of the four jitter ops (torchvision ColorJitter's fn_idx)
    gray: Tensor  # (N, L) bool
    sigma: Tensor  # (N, L) float blur sigma; 0 = not blurred
    solarize: Tensor  # (N, L) bool
    source_hw: tuple[int, int] = field(default=(32, 32))

    def vector(self, blur: bool = True) -> Tensor:
        """(N, L, 9) conditioning vector crop + jitter + sigma ((N, L, 8) without blur)."""
        parts = [self.crop, self.jitter] + ([self.sigma[..., None]] if blur else [])
        return torch.cat(parts, dim=-1)

    def to(self, device: torch.device | str) -> AugParams:
        names = ("crop", "flip", "jitter", "order", "gray", "sigma", "solarize")
        return AugParams(*(getattr(self, n).to(device) for n in names), source_hw=self.source_hw)


def _uniform(lo: float, hi: float, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def sample_crop(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                g: torch.Generator) -> Tensor:
    """(n, 4) RandomResizedCrop boxes [i, j, h, w]: torchvision's 10 tries, then its central fallback."""
    area = height * width
    target = area * _uniform(*scale, (n, 10), g)
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), (n, 10), g))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # Fallback when no try fits: the central crop of the largest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    found = ok.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    i = torch.floor(torch.rand(n, generator=g) * (height - h + 1))
    j = torch.floor(torch.rand(n, generator=g) * (width - w + 1))
    i = torch.where(found, i, torch.floor((height - h) / 2))
    j = torch.where(found, j, torch.floor((width - w) / 2))
    return torch.stack([i, j, h, w], dim=1)


def _sample_recipe(n: int, r: Recipe, height: int, width: int, g: torch.Generator, blur: bool) -> dict:
    """Parameters of ``n`` views drawn from one recipe (field -> tensor with leading dim n)."""
    on = torch.rand(n, generator=g) < r.p_jitter
    b, c, s, hue = r.jitter
    lo, hi = torch.tensor([1 - b, 1 - c, 1 - s, -hue]), torch.tensor([1 + b, 1 + c, 1 + s, hue])
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=g)
    factors = torch.where(on[:, None], factors, factors.new_tensor([1.0, 1.0, 1.0, 0.0]))
    blurred = (torch.rand(n, generator=g) < r.p_blur) & blur
    return {
        "crop": sample_crop(n, height, width, r.scale, r.ratio, g),
        "flip": torch.rand(n, generator=g) < r.p_flip,
        "jitter": factors,
        "order": torch.argsort(torch.rand(n, 4, generator=g), dim=1),  # a uniform random permutation per view
        "gray": torch.rand(n, generator=g) < r.p_gray,
        "sigma": torch.where(blurred, _uniform(*r.sigma, (n,), g), torch.zeros(n)),
        "solarize": torch.rand(n, generator=g) < r.p_solarize,
    }


def sample_params(n: int, recipes: list[Recipe], height: int, width: int, g: torch.Generator,
                  blur: bool = True) -> AugParams:
    """Parameters of ``len(recipes)`` views (view l drawn from ``recipes[l]``) of ``n`` images, on the CPU.

    Views sharing a recipe are drawn in one call (fewer small ops: this runs per item in the workers).
    """
    views = len(recipes)
    out: dict[str, Tensor] = {}
    for r in dict.fromkeys(recipes):  # distinct recipes, in order of first use
        idx = [k for k, rk in enumerate(recipes) if rk == r]
        drawn = _sample_recipe(n * len(idx), r, height, width, g, blur)
        for name, t in drawn.items():
            if name not in out:
                out[name] = t.new_zeros((n, views, *t.shape[1:]))
            out[name][:, idx] = t.reshape(n, len(idx), *t.shape[1:])
    return AugParams(**out, source_hw=(height, width))


def _gray(x: Tensor) -> Tensor:
    """(K, 3, H, W) -> (K, 1, H, W) luma (ITU-R 601-2, torchvision's rgb_to_grayscale)."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    delta = maxc - minc
    flat = delta == 0
    sat = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(flat, torch.ones_like(delta), delta)
    hue = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    hue = torch.where(flat, torch.zeros_like(hue), hue)
    return torch.stack([torch.remainder(hue / 6.0, 1.0), sat, maxc], dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)  # one phase per channel
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _jitter_op(op: int, x: Tensor, f: Tensor) -> Tensor:
    """torchvision's adjust_{brightness,contrast,saturation,hue} with one factor per image, f (K,)."""
    f4 = f.view(-1, 1, 1, 1)
    if op == 0:
        return (x * f4).clamp(0, 1)
    if op == 1:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return (f4 * x + (1 - f4) * mean).clamp(0, 1)
    if op == 2:
        return (f4 * x + (1 - f4) * _gray(x)).clamp(0, 1)
    hsv = _rgb_to_hsv(x)
    hsv = torch.cat([torch.remainder(hsv[:, :1] + f4, 1.0), hsv[:, 1:]], dim=1)
    return _hsv_to_rgb(hsv).clamp(0, 1)


def blur_kernel_size(size: int) -> int:
    """Upstream's kernel size for a ``size`` px view: 3 at 32 px, 7 at 64 px, 9 at 96 px (>= 1)."""
    return max(1, 2 * round((size - 10) / 20) + 1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur of (K, C, H, W) with one sigma per image (K,), reflect padding."""
    if kernel_size < 2:
        return x
    k, c = x.shape[0], x.shape[1]
    t = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, device=x.device, dtype=x.dtype)
    kern = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp(min=1e-6)) ** 2)
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (K*C, ks)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, k * c, *x.shape[2:]), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=k * c)
    y = F.conv2d(y, kern[:, None, :, None], groups=k * c)
    return y.reshape_as(x)


def augment(images: Tensor, params: AugParams, size: int) -> Tensor:
    """Render views: images (N, 3, H, W) in [0, 1] + params of L views -> (N, L, 3, size, size) in [0, 1].

    Order as upstream: crop (+ flip) -> colour jitter (random op order) -> grayscale -> blur -> solarize.
    """
    n, nv = params.flip.shape
    height, width = images.shape[-2:]
    params = params.to(images.device)
    x = images[:, None].expand(n, nv, *images.shape[1:]).reshape(n * nv, *images.shape[1:])
    i, j, h, w = params.crop.reshape(n * nv, 4).to(images.dtype).unbind(1)
    # Crop box in grid_sample's normalised coordinates (align_corners=False: -1/+1 are the outer pixel edges).
    sx = w / width * torch.where(params.flip.reshape(-1), -1.0, 1.0).to(images.dtype)
    theta = torch.zeros(n * nv, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * j + w) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * i + h) / height - 1
    grid = F.affine_grid(theta, [n * nv, x.shape[1], size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)
    factors, order = params.jitter.reshape(n * nv, 4).to(x.dtype), params.order.reshape(n * nv, 4)
    jittered = (factors != factors.new_tensor([1.0, 1.0, 1.0, 0.0])).any(dim=1)
    for stage in range(4):
        for op in range(4):
            sel = jittered & (order[:, stage] == op)
            if sel.any():
                x[sel] = _jitter_op(op, x[sel], factors[sel, op])
    gray = params.gray.reshape(-1)
    x = torch.where(gray[:, None, None, None], _gray(x).expand_as(x), x)
    sigma = params.sigma.reshape(-1).to(x.dtype)
    blurred = sigma > 0
    if blurred.any():
        x[blurred] = gaussian_blur(x[blurred], sigma[blurred], blur_kernel_size(size))
    sol = params.solarize.reshape(-1)[:, None, None, None]
    x = torch.where(sol & (x >= 128 / 255), 1.0 - x, x)
    return x.reshape(n, nv, *x.shape[1:])


def normalise_params(vec: Tensor, mode: str, source_hw: tuple[int, int]) -> Tensor:
    """(N, L, P) parameter vectors -> the normalised ones whose consecutive differences are the actions."""
    if mode == "view-l2":
        return F.normalize(vec, p=2, dim=1)  # upstream: per parameter, across the L views (quirk, kept)
    if mode == "image":
        hh, ww = source_hw
        scale = vec.new_ones(vec.shape[-1])
        scale[:4] = vec.new_tensor([hh, ww, hh, ww])
        return vec / scale
    raise ConfigError(f"data.aug.param_norm must be view-l2 or image, got {mode!r}")


def action_dim(cfg: AugConfig) -> int:
    """Width of the relative action for this conditioning: 9 (8 without blur), 4, 4 or 1."""
    if cfg.condition == "blur" and not cfg.blur:
        raise ConfigError("data.aug.condition=blur needs data.aug.blur=true (there is no blur to condition on)")
    if cfg.condition == "aug":
        return 9 if cfg.blur else 8
    return SLICES[cfg.condition].stop - SLICES[cfg.condition].start


class ImageSource(Protocol):
    """A split of an image dataset as the loaders provide it (cifar100.py, tinyimagenet.py, stl10.py)."""

    name: str
    mean: tuple[float, float, float]  # normalisation statistics of the dataset
    std: tuple[float, float, float]
    labels: np.ndarray  # (N,) int64 class labels; -1 = unlabeled

    def __len__(self) -> int: ...

    def image(self, index: int) -> Tensor:
        """(3, H, W) uint8 image ``index``."""
        ...


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator derived from the per-item numpy generator (keeps items a function of seed/epoch/index)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class AugmentedSequences(SequenceDataset):
    """Item = one image as ``num_views`` augmented views; action = relative augmentation parameters.

    views (V, 3, S, S) normalised with the dataset statistics; actions (V-1, A) with A = :func:`action_dim`;
    abs_latents (V, A) the normalised parameter vector of each view (same columns; actions = its differences);
    probe targets ``aug`` / ``crop`` / ``jitter`` / ``blur``: the relative parameters from view 0 to view 1
    (upstream ``crop_regressor`` MLP, ``jitter_regressor`` MLP, ``blur_regressor`` linear; ``aug`` is one MLP
    on the whole vector, like upstream's online equivariance probe). The probes do not depend on
    ``condition`` (Decision 6); the last view uses the target recipe, as upstream's datasets do.
    """

    path_composition = "sum"  # actions are differences of parameter vectors: the path is their sum

    def __init__(self, source: ImageSource, num_views: int, image_size: int, cfg: AugConfig, seed: int,
                 fixed: bool, num_classes: int) -> None:
        super().__init__(num_views, seed, fixed)
        self.source, self.image_size, self.cfg = source, image_size, cfg
        self.num_classes = num_classes
        self.action_dim = action_dim(cfg)
        self.columns = slice(0, 9 if cfg.blur else 8) if cfg.condition == "aug" else SLICES[cfg.condition]
        targets = [ProbeTarget("aug", "pair", "mlp", 9 if cfg.blur else 8), ProbeTarget("crop", "pair", "mlp", 4),
                   ProbeTarget("jitter", "pair", "mlp", 4)]
        self.probe_targets = tuple(targets + ([ProbeTarget("blur", "pair", "linear", 1)] if cfg.blur else []))
        self.mean = torch.tensor(source.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(source.std).view(1, 3, 1, 1)

    def num_items(self) -> int:
        return len(self.source)

    def labels_of(self) -> np.ndarray:
        return self.source.labels

    def item(self, index: int, rng: np.random.Generator) -> dict:
        img = self.source.image(index).float().div(255)
        recipes = [OBSERVATION] * (self.num_views - 1) + [TARGET]
        params = sample_params(1, recipes, img.shape[1], img.shape[2], torch_generator(rng), self.cfg.blur)
        views = (augment(img[None], params, self.image_size)[0] - self.mean) / self.std
        vec = normalise_params(params.vector(self.cfg.blur), self.cfg.param_norm, params.source_hw)[0]
        rel = vec[1] - vec[0]
        targets = {"aug": rel, "crop": rel[SLICES["crop"]], "jitter": rel[SLICES["jitter"]]}
        if self.cfg.blur:
            targets["blur"] = rel[SLICES["blur"]]
        return {
            "views": views.float(),
            "actions": (vec[1:] - vec[:-1])[:, self.columns].float(),
            "abs_latents": vec[:, self.columns].float(),  # absolute: the actions are its differences
            "label": int(self.source.labels[index]),
            "targets": {k: v.float() for k, v in targets.items()},
        }
