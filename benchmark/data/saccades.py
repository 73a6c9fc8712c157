"""Predictive learning across saccades (PLS): glimpse sequences of STL-10 images chosen by a saliency map.

seq-JEPA's PLS (``hafezgh/seq-jepa:seq-jepa/src/datasets.py`` class ``STL10_SalMap``, docs/protocol.md §4):

* saliency: DeepGaze IIE log-density (MIT1003 centre bias) on a 512 px resize, resized to 96x96, exp,
  normalised to sum 1, stored as ``saliency_{unlabeled,train,test}.npy`` of shape (N, 1, 96, 96)
  (HF dataset Hafez/salmap-stl10, one sub-folder per split). DeepGaze needs pretrained weights we cannot
  download here, so ``saliency="precomputed"`` reads those arrays and two weight-free maps are built in:
  ``spectral`` (spectral residual, Hou & Zhang, CVPR 2007) and ``centre-surround`` (difference of Gaussians
  on intensity and colour-opponent channels, after Itti et al. 1998); ``uniform`` is upstream's --use-sal 0;
* fixations: ``num_views`` centres drawn one after another with ``torch.multinomial`` over the 96x96 map;
  inhibition of return zeroes the square of half-width fovea // 2 around each chosen centre, adds 1e-16
  and renormalises;
* glimpse: a fovea x fovea window around each fixation via ``grid_sample`` (bilinear, zeros outside the
  image), normalised with the STL-10 statistics; resampled to ``data.image_size`` if that differs;
* action: positions p = (row, col) / 96 (each glimpse's absolute latent, ``Batch.latents``); the relative
  action is p_{i+1} - p_i (A = 2); probe ``position``
  regresses p_1 - p_0 from the two glimpse encodings (upstream ``pos_regressor``, linear).

Upstream quirk not reproduced: ``generate_cropping_grid`` puts the row in grid_sample's x slot, so its
glimpses are centred at (col, row), the transpose of the sampled fixation (the patch content is then
transposed back). Ours are centred at the sampled fixation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.config import RunConfig, SaccadeConfig
from benchmark.data.augment import ImageSource, torch_generator
from benchmark.data.base import ProbeTarget, SequenceDataset
from benchmark.data.entry import data_root
from benchmark.data.stl10 import SIZE, STL10Images, split_for
from benchmark.infra.errors import ConfigError, DataError
from methods.contract import DataSpec

GET_SALIENCY = ("The paper's DeepGaze IIE maps are the HF dataset Hafez/salmap-stl10 "
                "(https://huggingface.co/datasets/Hafez/salmap-stl10): put its unlabeled/, train/, test/ folders "
                "in the data root or point --set data.saccade.saliency_dir=DIR at them. Or use a built-in map that "
                "needs no weights: --set data.saccade.saliency=spectral (or centre-surround, uniform).")


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (N, C, H, W) with replicate padding (truncated at 3 sigma)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _to_distribution(s: Tensor) -> Tensor:
    """(N, H, W) non-negative map -> probabilities summing to 1 (uniform where the map is flat zero)."""
    s = s.clamp(min=0) + 1e-12
    return s / s.sum(dim=(1, 2), keepdim=True)


def spectral_residual(images: Tensor, work_size: int = 64) -> Tensor:
    """Spectral-residual saliency (Hou & Zhang 2007) of (N, 3, H, W) images in [0, 1] -> (N, H, W), sum 1.

    Log-amplitude spectrum minus its 3x3 local mean, back-transformed with the original phase, squared,
    border frame zeroed, smoothed; computed on a ``work_size`` px grayscale copy (their 64 px), resized back.
    """
    h, w = images.shape[-2:]
    gray = images.mul(images.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    g = F.interpolate(gray, size=(work_size, work_size), mode="bilinear", align_corners=False, antialias=True)
    spec = torch.fft.fft2(g[:, 0])
    log_amp = torch.log(spec.abs() + 1e-8)
    local = F.avg_pool2d(F.pad(log_amp[:, None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    sal = torch.fft.ifft2(torch.exp(torch.complex(log_amp - local, torch.angle(spec)))).abs() ** 2
    # The FFT treats the image as periodic, so its borders (corners above all) light up as false edges:
    # zero a 3/64 frame before smoothing.
    m = max(1, round(3 * work_size / 64))
    frame = torch.zeros_like(sal[0])
    frame[m:-m, m:-m] = 1
    sal = _blur((sal * frame)[:, None], sigma=work_size / 24)  # ~ Hou & Zhang's smoothing, scaled to the grid
    return _to_distribution(F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)[:, 0])


def centre_surround(images: Tensor) -> Tensor:
    """Centre-surround contrast (difference of Gaussians on I, R-G, B-Y; Itti et al. 1998) -> (N, H, W), sum 1."""
    r, g, b = images.unbind(1)
    feats = torch.stack([(r + g + b) / 3, r - g, b - (r + g) / 2], dim=1)
    side = images.shape[-1]
    sal = torch.zeros_like(feats[:, 0])
    for centre, surround in ((side / 96, side / 12), (side / 48, side / 6)):
        cs = (_blur(feats, centre) - _blur(feats, surround)).abs()
        # Normalise each channel map to max 1 so that one feature cannot drown the others.
        cs = cs / cs.amax(dim=(2, 3), keepdim=True).clamp(min=1e-8)
        sal = sal + cs.sum(1)
    return _to_distribution(_blur(sal[:, None], side / 48)[:, 0])


def sample_fixations(saliency: Tensor, k: int, radius: int | None, g: torch.Generator) -> Tensor:
    """(N, H, W) probability maps -> (N, k, 2) long (row, col) fixations, sequential with inhibition of return.

    ``radius`` None disables inhibition of return; otherwise the square |row - r| <= radius,
    |col - c| <= radius around each fixation is zeroed (+1e-16) before the next draw (upstream).
    """
    n, h, w = saliency.shape
    probs = saliency.reshape(n, h * w).double()  # ``g`` must live on saliency's device
    rows = torch.arange(h, device=saliency.device).view(1, h, 1)
    cols = torch.arange(w, device=saliency.device).view(1, 1, w)
    out = []
    for _ in range(k):
        idx = torch.multinomial(probs, 1, generator=g)[:, 0]
        rc = torch.stack([idx // w, idx % w], dim=1)
        out.append(rc)
        if radius is not None:
            inside = ((rows - rc[:, 0, None, None]).abs() <= radius) & ((cols - rc[:, 1, None, None]).abs() <= radius)
            probs = probs * (~inside).reshape(n, -1) + 1e-16
            probs = probs / probs.sum(dim=1, keepdim=True)
    return torch.stack(out, dim=1)


def glimpses(images: Tensor, centres: Tensor, fovea: int, size: int) -> Tensor:
    """(N, C, H, W) images, (N, K, 2) (row, col) centres -> (N, K, C, size, size) fovea x fovea windows.

    The window spans source pixels [r - fovea/2, r + fovea/2) x [c - fovea/2, c + fovea/2), sampled at
    ``size`` x ``size`` points (exact pixels when size == fovea); outside the image reads zeros.
    """
    n, c, h, w = images.shape
    k = centres.shape[1]
    step = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) * (fovea / size) - fovea / 2
    cen = centres.to(images.dtype).to(images.device).reshape(n * k, 2)
    ys = (cen[:, :1] + step[None]) * (2 / h) - 1  # pixel-edge coordinates -> grid_sample's [-1, 1]
    xs = (cen[:, 1:] + step[None]) * (2 / w) - 1
    grid = torch.stack([xs[:, None, :].expand(-1, size, -1), ys[:, :, None].expand(-1, -1, size)], dim=-1)
    src = images[:, None].expand(n, k, c, h, w).reshape(n * k, c, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(n, k, c, size, size)


class SaliencyArrays:
    """The paper's precomputed maps: ``saliency_<split>.npy`` (N, 1, 96, 96), memory-mapped and checked."""

    def __init__(self, search: list[Path], split: str, count: int) -> None:
        name = f"saliency_{split}.npy"
        candidates = []
        for d in search:
            candidates += [d / split / name, d / name, d / "salmap-stl10" / split / name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            tried = ", ".join(str(p) for p in candidates)
            raise DataError(f"saliency file {name} not found (looked for {tried}). {GET_SALIENCY}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"saliency file {path} is corrupt or truncated ({e}); re-download it") from None
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4 or arr.shape[1:] != (1, SIZE, SIZE):
            raise DataError(f"saliency file {path} has shape {arr.shape}, expected (N, 1, {SIZE}, {SIZE})")
        if arr.shape[0] != count:
            raise DataError(f"saliency file {path} holds {arr.shape[0]} maps but the STL-10 {split} split has "
                            f"{count} images; the maps belong to another split or are truncated")
        self.path, self.arr = path, arr

    def __getitem__(self, index: int) -> Tensor:
        m = torch.from_numpy(np.array(self.arr[index, 0], dtype=np.float32))
        if not torch.isfinite(m).all() or m.min() < 0 or m.sum() <= 0:
            raise DataError(f"saliency map {index} in {self.path} is not a non-negative finite map")
        return m


class SaccadeSequences(SequenceDataset):
    """Item = ``num_views`` glimpses of one image at saliency-sampled fixations; action = relative saccade."""

    action_dim = 2
    probe_targets = (ProbeTarget("position", "pair", "linear", 2),)
    path_composition = "sum"  # position differences add up to the displacement from first to last fixation

    def __init__(self, source: ImageSource, saliency: SaliencyArrays | None, num_views: int, image_size: int,
                 cfg: SaccadeConfig, seed: int, fixed: bool, num_classes: int) -> None:
        super().__init__(num_views, seed, fixed)
        if not 1 <= cfg.fovea <= SIZE:
            raise ConfigError(f"data.saccade.fovea must be 1..{SIZE} px, got {cfg.fovea}")
        self.source, self.saliency, self.cfg = source, saliency, cfg
        self.image_size, self.num_classes = image_size, num_classes
        self.mean = torch.tensor(source.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(source.std).view(1, 3, 1, 1)

    def num_items(self) -> int:
        return len(self.source)

    def labels_of(self) -> np.ndarray:
        return self.source.labels

    def saliency_map(self, index: int, img: Tensor) -> Tensor:
        """(H, W) fixation distribution of image ``index`` ((3, H, W) in [0, 1])."""
        kind = self.cfg.saliency
        if kind == "precomputed":
            assert self.saliency is not None
            return _to_distribution(self.saliency[index][None])[0]
        if kind == "spectral":
            return spectral_residual(img[None])[0]
        if kind == "centre-surround":
            return centre_surround(img[None])[0]
        return torch.full(img.shape[1:], 1.0 / (img.shape[1] * img.shape[2]))

    def item(self, index: int, rng: np.random.Generator) -> dict:
        img = self.source.image(index).float().div(255)
        sal = self.saliency_map(index, img)
        radius = self.cfg.fovea // 2 if self.cfg.ior else None
        centres = sample_fixations(sal[None], self.num_views, radius, torch_generator(rng))  # (1, V, 2)
        views = glimpses(img[None], centres, self.cfg.fovea, self.image_size)[0]
        pos = centres[0].float() / img.shape[1]  # upstream: (row, col) / 96
        return {
            "views": ((views - self.mean) / self.std).float(),
            "actions": pos[1:] - pos[:-1],
            "abs_latents": pos,  # the absolute fixation of each glimpse
            "label": int(self.source.labels[index]),
            "targets": {"position": pos[1] - pos[0]},
        }


def build(cfg: RunConfig, split: str, num_views: int, fixed: bool, root: str | Path | None = None,
          num_classes: int = 10) -> SaccadeSequences:
    """Registry builder of ``stl10-saccades``: pre-training on ``data.stl10_pretrain``, probes on train/test."""
    root = root or data_root(cfg)
    stl_split = split_for(split, fixed, cfg)
    src = STL10Images(root, stl_split, num_classes)
    sal = None
    if cfg.data.saccade.saliency == "precomputed":
        search = [Path(d).expanduser() for d in (cfg.data.saccade.saliency_dir, root) if d]
        sal = SaliencyArrays(search, stl_split, len(src))
    return SaccadeSequences(src, sal, num_views, cfg.data.image_size, cfg.data.saccade, cfg.seed, fixed,
                            num_classes)


def spec(cfg: RunConfig, num_classes: int = 10) -> DataSpec:
    # seq-JEPA's PLS passes --cifar-resnet: 32 px glimpses through the CIFAR stem.
    return DataSpec(cfg.data.image_size, 2, num_classes, small_images=True)
