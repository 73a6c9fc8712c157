"""3diebench-mini: a procedurally rendered stand-in for 3DIEBench, written in its official layout.

Each class is a distinct 3D shape built from a few primitives (boxes, cylinders, spheres, tori,
capsules) whose proportions vary per object; each object gets its own random colours (three
materials spread over its primitives), so class identity is carried by shape alone while the
colour layout turns with the object. Every view draws, as 3DIEBench does (C.1): Euler angles
U(-pi/2, pi/2) (extrinsic xyz), a floor hue, a spot light (theta U(0, pi/4), phi U(0, 2 pi), hue),
and the image is sphere-traced in pure torch with a fixed camera (distance 2.5, theta pi/4) above
a floor plane at z = -1. The tree (synset folders, ``image_k.jpg``, 7-float ``latent_k.npy``,
split files) is read back by the real loader, ``benchmark/data/threedie.py``.

Generation is deterministic for a given :class:`MiniConfig` (seeded per object), written into a
temporary folder and renamed when complete, so an interrupted generation is never used.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from benchmark.config import MiniConfig, to_dict
from benchmark.infra.errors import ConfigError
from benchmark.infra.progress import Progress

GENERATOR_VERSION = 3  # 2: three materials per object over its primitives; 3: the pose-only variant
CLASS_NAMES = ["airplane", "chair", "table", "lamp", "mug", "car", "guitar", "sofa", "bottle", "tower"]
SYNSET_BASE = 90000000  # synset-like 8-digit folder names, clearly not ShapeNet's


def _u(rng: np.random.Generator, lo: float = 0.8, hi: float = 1.2) -> float:
    return float(rng.uniform(lo, hi))


def _shape(cls: int, rng: np.random.Generator) -> list[tuple]:
    """Primitives of one object of class ``cls`` in its own frame (roughly inside the unit ball).

    ("box", center, half_sizes) | ("sph", center, r) | ("cyl", center, r, half_h, axis)
    | ("tor", center, R, r, axis) | ("cap", a, b, r)
    """
    s = _u
    if cls == 0:  # airplane: fuselage, wings, tail fin, stabiliser
        L, w = 0.8 * s(rng), 0.75 * s(rng)
        return [("cap", (-L, 0, 0), (L, 0, 0), 0.12 * s(rng)), ("box", (0.05, 0, 0), (0.18, w, 0.03)),
                ("box", (-L + 0.1, 0, 0.18), (0.1, 0.03, 0.18 * s(rng))),
                ("box", (-L + 0.1, 0, 0.02), (0.08, 0.3, 0.02))]
    if cls == 1:  # chair: seat, back, four legs
        a, h = 0.35 * s(rng), 0.4 * s(rng)
        legs = [("box", (x * a * 0.85, y * a * 0.85, -h / 2), (0.04, 0.04, h / 2)) for x in (-1, 1) for y in (-1, 1)]
        return [("box", (0, 0, 0), (a, a, 0.05)), ("box", (-a, 0, 0.35 * s(rng)), (0.05, a, 0.35))] + legs
    if cls == 2:  # table: wide top, four long legs
        a, b, h = 0.7 * s(rng), 0.45 * s(rng), 0.45 * s(rng)
        legs = [("box", (x * a * 0.85, y * b * 0.8, -h / 2), (0.04, 0.04, h / 2)) for x in (-1, 1) for y in (-1, 1)]
        return [("box", (0, 0, 0.05), (a, b, 0.04))] + legs
    if cls == 3:  # lamp: base disc, pole, arm, shade
        h = 0.45 * s(rng)
        return [("cyl", (0, 0, -h), 0.3 * s(rng), 0.04, 2), ("cyl", (0, 0, 0), 0.035, h, 2),
                ("box", (0.15, 0, h), (0.17, 0.03, 0.03)), ("cyl", (0.3, 0, h - 0.12), 0.2 * s(rng), 0.14, 2)]
    if cls == 4:  # mug: body and side handle
        r, h = 0.32 * s(rng), 0.38 * s(rng)
        return [("cyl", (0, 0, 0), r, h, 2), ("tor", (r + 0.12, 0, 0), 0.17 * s(rng, 0.9, 1.1), 0.05, 1)]
    if cls == 5:  # car: body, cabin, four wheels
        L, W = 0.65 * s(rng), 0.3 * s(rng)
        wheels = [("cyl", (x * L * 0.65, y * W, -0.2), 0.15, 0.05, 1) for x in (-1, 1) for y in (-1, 1)]
        cabin = ("box", (-0.1 * L, 0, 0.24), (0.5 * L * s(rng), W * 0.9, 0.12))
        return [("box", (0, 0, 0), (L, W, 0.14)), cabin] + wheels
    if cls == 6:  # guitar: two body lobes, long neck, head
        return [("sph", (-0.35, 0, 0), 0.32 * s(rng, 0.9, 1.1)), ("sph", (0.0, 0, 0), 0.24 * s(rng, 0.9, 1.1)),
                ("box", (0.5, 0, 0), (0.42 * s(rng, 0.9, 1.1), 0.05, 0.03)), ("box", (0.95, 0, 0), (0.08, 0.08, 0.03))]
    if cls == 7:  # sofa: long seat, back rest, two arms
        L, d = 0.75 * s(rng), 0.3 * s(rng)
        return [("box", (0, 0, -0.1), (L, d, 0.12)), ("box", (0, -d, 0.15), (L, 0.07, 0.25 * s(rng))),
                ("box", (L, 0, 0.02), (0.07, d, 0.18)), ("box", (-L, 0, 0.02), (0.07, d, 0.18))]
    if cls == 8:  # bottle: body, neck, cap
        r, h = 0.25 * s(rng), 0.4 * s(rng)
        return [("cyl", (0, 0, -0.2), r, h, 2), ("cyl", (0, 0, h - 0.05), 0.08, 0.22, 2),
                ("sph", (0, 0, -0.2 + h), r * 0.95), ("cyl", (0, 0, h + 0.2), 0.1, 0.04, 2)]
    if cls == 9:  # tower: three stacked, shrinking, offset boxes
        a = 0.45 * s(rng)
        return [("box", (0, 0, -0.5), (a, a, 0.18)), ("box", (0.1, 0, -0.1), (0.7 * a, 0.7 * a, 0.2)),
                ("box", (0.2, 0.05, 0.3), (0.4 * a, 0.4 * a, 0.22))]
    raise ValueError(f"no shape class {cls}")


def _part_sdfs(q: torch.Tensor, prims: list[tuple]) -> torch.Tensor:
    """Signed distance of points q (..., 3) in the object frame to each primitive -> (..., P)."""
    out = []
    for p in prims:
        kind = p[0]
        if kind == "box":
            e = (q - q.new_tensor(p[1])).abs() - q.new_tensor(p[2])
            di = e.clamp(min=0).norm(dim=-1) + e.max(dim=-1).values.clamp(max=0)
        elif kind == "sph":
            di = (q - q.new_tensor(p[1])).norm(dim=-1) - p[2]
        elif kind in ("cyl", "tor"):
            x = q - q.new_tensor(p[1])
            ax = p[-1]
            other = [i for i in range(3) if i != ax]
            radial = x[..., other].norm(dim=-1)
            if kind == "cyl":
                e = torch.stack([radial - p[2], x[..., ax].abs() - p[3]], dim=-1)
                di = e.clamp(min=0).norm(dim=-1) + e.max(dim=-1).values.clamp(max=0)
            else:
                di = torch.stack([radial - p[2], x[..., ax]], dim=-1).norm(dim=-1) - p[3]
        elif kind == "cap":
            a, b = q.new_tensor(p[1]), q.new_tensor(p[2])
            ba = b - a
            h = (((q - a) @ ba) / (ba @ ba)).clamp(0, 1)
            di = (q - a - h[..., None] * ba).norm(dim=-1) - p[3]
        else:
            raise ValueError(kind)
        out.append(di)
    return torch.stack(out, dim=-1)


def _hsv(h: float, s: float, v: float) -> torch.Tensor:
    return torch.tensor(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=torch.float32)


MATERIALS = 3  # colours per object; primitive j wears colour j % MATERIALS


def part_colours(rng: np.random.Generator) -> torch.Tensor:
    """(MATERIALS, 3) albedos of one object (ShapeNet models carry per-part materials): hues spread
    around a random base hue, saturation and value drawn per object. The colours say nothing about
    the class, but their layout turns with the object, so a view shows its pose."""
    h0, sat, val = rng.uniform(), rng.uniform(0.3, 0.75), rng.uniform(0.65, 0.95)
    return torch.stack([_hsv(h0 + j / MATERIALS + rng.uniform(-0.08, 0.08), sat, val) for j in range(MATERIALS)])


def _camera_rays(res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed camera at distance 2.5, polar angle pi/4, looking at the origin; 40 degree field of view."""
    th = math.pi / 4
    eye = torch.tensor([0.0, -2.5 * math.sin(th), 2.5 * math.cos(th)])
    fwd = -eye / eye.norm()
    right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, fwd)
    f = math.tan(math.radians(20))
    t = (torch.arange(res) + 0.5) / res * 2 - 1
    yy, xx = torch.meshgrid(-t, t, indexing="ij")
    d = fwd + f * (xx[..., None] * right + yy[..., None] * up)
    return eye, d / d.norm(dim=-1, keepdim=True)  # (3,), (res, res, 3)


def render_views(prims: list[tuple], albedo: torch.Tensor, latents: np.ndarray, res: int) -> np.ndarray:
    """Sphere-trace one object under V latents (V, 7) -> uint8 images (V, res, res, 3).

    ``albedo`` is (3,) for a single-coloured object or (M, 3) materials: primitive j wears material j % M.
    """
    v = latents.shape[0]
    eye, dirs = _camera_rays(res)
    dirs = dirs.reshape(1, -1, 3).expand(v, -1, -1)  # (V, pixels, 3)
    rot = torch.from_numpy(Rotation.from_euler("xyz", latents[:, :3]).as_matrix()).float()  # (V, 3, 3)

    def part_sdfs(p: torch.Tensor) -> torch.Tensor:
        return _part_sdfs(torch.einsum("vpi,vij->vpj", p, rot), prims)  # object frame q = R^T p

    def sdf_world(p: torch.Tensor) -> torch.Tensor:
        return part_sdfs(p).min(dim=-1).values

    t = torch.full(dirs.shape[:2], 1.2)
    for _ in range(40):
        d = sdf_world(eye + t[..., None] * dirs)
        t = (t + 0.9 * d).clamp(max=6.0)
    p = eye + t[..., None] * dirs
    parts = part_sdfs(p)  # (V, pixels, primitives) at the surface points: hit test and nearest primitive
    hit = parts.min(dim=-1).values.abs() < 0.01
    eps = 2e-3
    n = torch.stack([sdf_world(p + eps * e) - sdf_world(p - eps * e) for e in torch.eye(3)], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    albedo = albedo.reshape(-1, 3)
    colour = albedo[parts.argmin(dim=-1) % albedo.shape[0]]  # (V, pixels, 3)
    # Floor plane z = -1 and the background sky.
    t_floor = (-1.0 - eye[2]) / dirs[..., 2]
    floor = (t_floor > 0) & ~hit
    img = torch.full((v, dirs.shape[1], 3), 0.15)
    for k in range(v):
        lat = latents[k]
        light = torch.tensor([4 * math.sin(lat[4]) * math.cos(lat[5]), 4 * math.sin(lat[4]) * math.sin(lat[5]),
                              4 * math.cos(lat[4])])
        spot = _hsv(lat[6], 1.0, 0.8)
        floor_col = _hsv(lat[3], 0.6, 0.6)
        pk = p[k]
        ldir = light - pk
        ldir = ldir / ldir.norm(dim=-1, keepdim=True)
        diffuse = (n[k] * ldir).sum(-1).clamp(min=0)
        head = ((n[k] * -dirs[k]).sum(-1)).clamp(min=0)  # camera fill light keeps the silhouette legible
        obj_col = colour[k] * (0.25 + 0.35 * head[:, None] + 1.1 * diffuse[:, None] * spot)
        pf = eye + t_floor[k, :, None] * dirs[k]
        lf = light - pf
        lambert = (lf[:, 2] / lf.norm(dim=-1)).clamp(min=0)
        floor_shade = floor_col * (0.35 + 0.9 * lambert[:, None] * spot)
        img[k] = torch.where(hit[k, :, None], obj_col, torch.where(floor[k, :, None], floor_shade, img[k]))
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).reshape(v, res, res, 3).numpy()


# pose-only: one scene (floor hue, spot light theta, phi, hue) and one set of materials for every view of every
# object, so the pose is the only thing that changes between views, and a part's colour shows where it points
# the same way on every object (with random per-object colours, pose cues would be object-specific).
POSE_ONLY_SCENE = (0.58, math.pi / 8, 5 * math.pi / 4, 0.12)  # blue-grey floor, warm light from the front left
POSE_ONLY_MATERIALS = ((0.0, 0.65, 0.9), (0.33, 0.65, 0.8), (0.62, 0.55, 0.95))  # HSV: red, green, blue parts
# The pose-only variants (docs/pattern.md, "The action ablation"): same scene, shapes and seeds as pose-only.
# pose-mono: every part wears one colour, so the pose shows only in the silhouette and the shading, not in
# where a coloured part points; pose-narrow: pose-only's colours, Euler angles drawn from U(-pi/4, pi/4)
# instead of U(-pi/2, pi/2), so a relative rotation is smaller and its effect on the view easier to predict.
POSE_MONO_MATERIAL = (0.1, 0.15, 0.9)  # HSV: one light warm grey
POSE_VARIANTS = ("pose-only", "pose-mono", "pose-narrow")
EULER_RANGE = {"pose-narrow": math.pi / 4}  # half-width of the Euler draws per variant (default pi / 2, C.1)


def variant_materials(variant: str) -> torch.Tensor | None:
    """(MATERIALS, 3) albedos every object of ``variant`` shares, or None (per-object colours, 3DIEBench)."""
    if variant == "pose-mono":
        return torch.stack([_hsv(*POSE_MONO_MATERIAL)] * MATERIALS)
    if variant in POSE_VARIANTS:
        return torch.stack([_hsv(*m) for m in POSE_ONLY_MATERIALS])
    return None


def sample_latents(rng: np.random.Generator, n: int, variant: str = "3diebench") -> np.ndarray:
    """(n, 7) latents with 3DIEBench's ranges (C.1): Euler xyz, floor hue, spot theta, phi, hue.

    The pose variants (:data:`POSE_VARIANTS`): Euler draws of half-width :data:`EULER_RANGE` (default pi / 2),
    under the fixed :data:`POSE_ONLY_SCENE`.
    """
    half = EULER_RANGE.get(variant, math.pi / 2)
    euler = [rng.uniform(-half, half, n) for _ in range(3)]
    if variant in POSE_VARIANTS:
        scene = [np.full(n, v) for v in POSE_ONLY_SCENE]
    else:
        scene = [rng.uniform(0, 1, n), rng.uniform(0, math.pi / 4, n), rng.uniform(0, 2 * math.pi, n),
                 rng.uniform(0, 1, n)]
    return np.stack([*euler, *scene], axis=1)


def cache_key(cfg: MiniConfig) -> str:
    blob = json.dumps({"v": GENERATOR_VERSION, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def default_cache_dir() -> Path:
    return Path(os.environ.get("SEQBENCH_CACHE", Path.home() / ".cache" / "seqbench"))


def render_workers(objects: int) -> int:
    """Worker processes for a render of ``objects`` objects: one per available core, none for tiny renders
    (starting a process costs about as much as rendering ten small objects)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if objects < 32 else min(cores, 8)


@contextlib.contextmanager
def _one_thread():
    """Render single-threaded: the renderer runs thousands of small ops, and with several threads each one
    is a parallel region whose threads spin-wait for each other; on cores shared with another process the
    render then slowed 15x (3 -> 0.2 objects/s). One thread per process is also bit-reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render_object(job: tuple[MiniConfig, Path, int, int]) -> None:
    """Render object ``i`` of class ``c`` into ``folder``/<synset>/<object>/ (seeded by (seed, c, i))."""
    cfg, folder, c, i = job
    rng = np.random.default_rng([cfg.seed, c, i])
    prims = _shape(c, rng)
    albedo = part_colours(rng)  # drawn in every variant: the same seed gives the same shapes and poses
    shared = variant_materials(cfg.variant)
    albedo = albedo if shared is None else shared
    lat = sample_latents(rng, cfg.views, cfg.variant)
    with _one_thread():
        imgs = render_views(prims, albedo, lat, cfg.resolution)
    d = folder / f"{SYNSET_BASE + c:08d}" / f"{CLASS_NAMES[c]}{i:04d}"
    d.mkdir(parents=True)
    for k in range(cfg.views):
        Image.fromarray(imgs[k]).save(d / f"image_{k}.jpg", quality=95)
        np.save(d / f"latent_{k}.npy", lat[k].astype(np.float32))


def check_settings(cfg: MiniConfig) -> None:
    """The generator's limits (also checked before a run starts: mini3d_entry.sizes)."""
    if not 1 <= cfg.classes <= len(CLASS_NAMES):
        raise ConfigError(f"data.mini.classes must be 1..{len(CLASS_NAMES)}, got {cfg.classes}")
    if cfg.objects_per_class < 2 or cfg.views < 2 or cfg.resolution < 8:
        raise ConfigError("data.mini needs objects_per_class >= 2, views >= 2 and resolution >= 8")


def split_sizes(cfg: MiniConfig) -> tuple[int, int]:
    """(training, held-out) objects per class: the first fifth of each class's objects (at least one) is held out."""
    n_val = max(1, cfg.objects_per_class // 5)
    return cfg.objects_per_class - n_val, n_val


def generate(cfg: MiniConfig, cache_dir: Path | None = None, progress: bool = True, workers: int | None = None) -> Path:
    """Render the mini dataset once (cached by its settings) and return its root folder.

    ``workers`` single-threaded render processes (None: :func:`render_workers`; 0: in this process). The
    tree is the same byte for byte whatever the number of workers.
    """
    check_settings(cfg)
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    root = base / f"3diebench-mini-{cache_key(cfg)}" / "3DIEBench"
    if (root.parent / "COMPLETE").is_file():
        return root
    tmp = root.parent.with_name(root.parent.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "3DIEBench").mkdir(parents=True)
    n_val = split_sizes(cfg)[1]
    jobs = [(cfg, tmp / "3DIEBench", c, i) for c in range(cfg.classes) for i in range(cfg.objects_per_class)]
    splits: dict[str, list] = {"train": [], "val": []}
    for _, _, c, i in jobs:
        splits["val" if i < n_val else "train"].append((f"/{SYNSET_BASE + c:08d}/{CLASS_NAMES[c]}{i:04d}/", c))
    workers = render_workers(len(jobs)) if workers is None else workers
    with Progress(len(jobs), f"rendering 3diebench-mini ({max(workers, 1)} process(es))", "obj",
                  enabled=progress) as bar:
        if workers <= 0:
            for job in jobs:
                _render_object(job)
                bar.update(1)
        else:
            # spawn, not fork: forking a process whose OpenMP threads have run can deadlock the child
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_object, jobs, chunksize=2):
                    bar.update(1)
    for split, items in splits.items():
        np.save(tmp / "3DIEBench" / f"{split}_images.npy", np.array([o for o, _ in items], dtype="<U43"))
        np.save(tmp / "3DIEBench" / f"{split}_labels.npy", np.array([c for _, c in items], dtype=np.int64))
    (tmp / "3DIEBench" / "README.txt").write_text(
        "3diebench-mini: procedurally rendered stand-in for 3DIEBench generated by seqbench "
        f"(generator v{GENERATOR_VERSION}, settings {json.dumps(to_dict(cfg))}). "
        "Not comparable with published numbers.\n")
    (tmp / "COMPLETE").write_text(json.dumps(to_dict(cfg)))
    if root.parent.exists():  # a concurrent generator won the race, or a stale partial folder
        if (root.parent / "COMPLETE").is_file():
            shutil.rmtree(tmp)
            return root
        shutil.rmtree(root.parent)
    os.replace(tmp, root.parent)
    return root
