"""Decoded cache of 3DIEBench: every view decoded once at the training resolution, read back by memmap.

JPEG decoding of 256 px renders on a few CPU cores cannot feed a GPU step of thousands of images/s.
``python -m benchmark.tools.decoded_cache --data-root DIR --image-size 128`` (or ``--set data.decoded_cache=true``
on a run, which builds it on first use) writes, per split and image size::

    <cache_dir>/3diebench-<split>-<size>px-<key>/     key = hash of the source root path
      images.npy    (objects, views, H, W, 3) uint8   the PIL bilinear resize of ThreeDIEBench._image
      latents.npy   (objects, views, 7) float64       the latent_k.npy files
      labels.npy    (objects,) int64
      manifest.json source (root, split digest, split file hashes, size+mtime digest of every file),
                    image size, resize method, Pillow/libjpeg versions, format version, done chunks
                    with their checksums

Items read through :class:`CachedThreeDIEBench` are bit-identical to ``ThreeDIEBench``'s: the same
sampling code, the same uint8 pixels, the same ``to_tensor`` + ``normalize`` arithmetic on the fly
(``tests/test_cache.py``). 3DIEBench at 128 px takes ~130 GB (2.6 M views x 48 KiB): put
``data.cache_dir`` on a fast local disk.

Safety: the build is written in chunks of objects; each chunk is flushed, then marked done (with
checksums) in the manifest, so a killed build resumes where it stopped. Opening a cache checks the
manifest against the source (split, image size, versions), the file shapes, a sample of chunks
(source sizes+mtimes, data checksums; every chunk with ``--verify --full``) and a few views against
the JPEG loader itself. A stale cache is rebuilt, corrupt chunks are rewritten, an interrupted build
is resumed - each with a message saying why; with ``build=False`` the reason is raised instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError, features
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as TF

from benchmark.config import RunConfig
from benchmark.data.base import loader_workers
from benchmark.data.mini3d import default_cache_dir
from benchmark.data.threedie import MEAN, SPLIT_FILES, STD, ThreeDIEBench
from benchmark.infra.errors import DataError
from benchmark.infra.fileio import atomic_write_text, now
from benchmark.infra.progress import Progress, say

FORMAT, VERSION = "seqbench-3diebench-decoded", 1
MANIFEST = "manifest.json"
FILES = ("images.npy", "latents.npy", "labels.npy")
CHUNK_BYTES = 256 * 2**20  # resumable unit: a killed build loses at most this much decoding
RESIZE = "PIL convert('RGB'), resize((size, size), Image.BILINEAR) unless already that size"
_RNG = random.Random()  # which chunks/views a quick check samples; never the global RNGs a run draws from


def default_cache_root() -> Path:
    return default_cache_dir() / "decoded"


def cache_path(ds: ThreeDIEBench, cache_dir: str | Path | None = None) -> Path:
    """The cache folder of ``ds``'s split at its image size (a different root gets its own folder)."""
    key = hashlib.sha256(str(ds.root.resolve()).encode()).hexdigest()[:10]
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    return base / f"3diebench-{ds.split}-{ds.image_size}px-{key}"


def decode_view(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: exactly the pixels ``ThreeDIEBench._image`` hands to ``to_tensor``."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing image {path}; the 3DIEBench tree is incomplete") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"corrupt image {path} ({e}); re-extract it from the 3DIEBench archive") from None


def to_views(pixels: np.ndarray) -> torch.Tensor:
    """(V, H, W, 3) uint8 -> (V, 3, H, W) normalised float32, with ``to_tensor`` + ``normalize``'s arithmetic."""
    x = torch.from_numpy(np.array(pixels)).permute(0, 3, 1, 2).contiguous()  # copy: memmaps are read-only
    return TF.normalize(x.to(torch.float32).div(255), MEAN, STD)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksum(a: np.ndarray) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(a)).cast("B"), digest_size=16).hexdigest()


def source_digest(ds: ThreeDIEBench, objects: range) -> str:
    """Digest of (path, size, mtime) of every image/latent file of ``objects``: cheap, no file is read."""
    h = hashlib.sha256()
    for i in objects:
        for k in range(ds.views_per_object):
            for name in (f"image_{k}.jpg", f"latent_{k}.npy"):
                p = ds.root / ds.objects[i] / name
                try:
                    st = p.stat()
                except FileNotFoundError:
                    return f"missing {p}"
                h.update(f"{ds.objects[i]}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def header(ds: ThreeDIEBench) -> dict:
    """Everything a cache must match to stand in for decoding ``ds``'s JPEGs."""
    n, v, s = len(ds.objects), ds.views_per_object, ds.image_size
    split = json.dumps([ds.objects, ds.labels.tolist()]).encode()
    return {"format": FORMAT, "version": VERSION, "image_size": s, "resize": RESIZE,
            "decoder": {"pillow": PIL.__version__, "jpeg": features.version("jpg"),
                        "libjpeg_turbo": features.version("libjpeg_turbo")},
            "source": {"root": str(ds.root.resolve()), "split": ds.split, "objects": n, "views": v,
                       "split_digest": hashlib.sha256(split).hexdigest()},
            "shapes": {"images": [n, v, s, s, 3], "latents": [n, v, 7], "labels": [n]}}


def split_file_hashes(ds: ThreeDIEBench, split_dir: str | None) -> dict:
    """sha256 of the split files found (for the record; the resolved split is checked via its digest)."""
    out = {}
    for d in [ds.root] + ([Path(split_dir).expanduser()] if split_dir else []):
        for f in SPLIT_FILES:
            p = d / f.format(split=ds.split)
            if p.is_file() and p.name not in out:
                out[p.name] = _sha256(p)
    return out


@dataclass
class Status:
    """Result of :func:`inspect`: usable, or why not and what a build must redo."""

    ok: bool
    reason: str = ""
    rebuild: bool = False  # True: discard everything; False: (re)write only the chunks not marked done
    bad_chunks: list[int] = field(default_factory=list)


def _manifest(path: Path) -> dict | None:
    try:
        m = json.loads((path / MANIFEST).read_text())
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def _diff(want: dict, got: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in want.items():
        g = got.get(k) if isinstance(got, dict) else None
        if isinstance(v, dict) and isinstance(g, dict):
            out += _diff(v, g, f"{prefix}{k}.")
        elif v != g:
            out.append(f"{prefix}{k} {g!r} -> {v!r}")
    return out


def _open(path: Path, mode: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.load(path / FILES[0], mmap_mode=mode, allow_pickle=False),  # type: ignore[call-overload]
            np.load(path / FILES[1], mmap_mode=mode, allow_pickle=False))  # type: ignore[call-overload]


def _chunks(m: dict) -> list[range]:
    n, k = m["source"]["objects"], m["chunk_objects"]
    return [range(a, min(a + k, n)) for a in range(0, n, k)]


def _data_sums(images: np.ndarray, latents: np.ndarray, objs: range) -> dict:
    return {"images": _checksum(images[objs.start:objs.stop]), "latents": _checksum(latents[objs.start:objs.stop])}


def _chunk_record(ds: ThreeDIEBench, images: np.ndarray, latents: np.ndarray, objs: range) -> dict:
    return {"source": source_digest(ds, objs), **_data_sums(images, latents, objs)}


def inspect(path: Path, ds: ThreeDIEBench, full: bool = False) -> Status:
    """Can the cache at ``path`` stand in for ``ds``? ``full`` checks every chunk, else a sample."""
    m = _manifest(path)
    if m is None:
        exists = (path / MANIFEST).exists()
        return Status(False, "manifest.json is unreadable (corrupt)" if exists else "not built yet", rebuild=True)
    want = header(ds)
    changed = _diff(want, m)
    if changed:
        return Status(False, "stale (built for another source or setting: " + "; ".join(changed) + ")", rebuild=True)
    try:
        images, latents = _open(path, "r")
        labels = np.load(path / FILES[2], allow_pickle=False)
    except (OSError, ValueError) as e:
        return Status(False, f"data files missing or truncated ({e})", rebuild=True)
    shapes = [list(images.shape), list(latents.shape), list(labels.shape)]
    if shapes != list(want["shapes"].values()) or images.dtype != np.uint8 or latents.dtype != np.float64:
        return Status(False, f"data files have shapes {shapes}, expected {list(want['shapes'].values())}",
                      rebuild=True)
    if not np.array_equal(labels, ds.labels):
        return Status(False, "labels.npy does not match the split's labels", rebuild=True)
    chunks, done = _chunks(m), {int(c) for c in m.get("chunks", {})}
    # Sample: first, last and one random chunk (over many opens the random one covers them all).
    sample = sorted(done) if full else sorted(done & {0, len(chunks) - 1, _RNG.randrange(len(chunks))})
    for c in sample:
        if source_digest(ds, chunks[c]) != m["chunks"][str(c)]["source"]:
            o = ds.objects[chunks[c].start]
            return Status(False, f"the source changed since the cache was built (file sizes or times of objects "
                                 f"{o}... differ)", rebuild=True)
    stored = {c: {k: m["chunks"][str(c)].get(k) for k in ("images", "latents")} for c in sample}
    bad = [c for c in sample if _data_sums(images, latents, chunks[c]) != stored[c]]
    if bad and not full:  # one bad sampled chunk: look at all of them before rewriting
        return inspect(path, ds, full=True)
    if bad:
        return Status(False, f"corrupt data in chunk(s) {bad} (checksum mismatch)", bad_chunks=bad)
    if len(done) < len(chunks) or not m.get("complete"):
        return Status(False, f"interrupted build ({len(done)}/{len(chunks)} chunks written)")
    # The cache against the loader it stands in for, on two views (catches any drift of the two codes).
    for i, k in {(0, 0), (_RNG.randrange(len(ds.objects)), _RNG.randrange(ds.views_per_object))}:
        jpeg = ThreeDIEBench._image(ds, ds.root / ds.objects[i] / f"image_{k}.jpg")  # not the cache's reader
        if not torch.equal(to_views(images[i, [k]])[0], jpeg):
            return Status(False, f"cached view {k} of {ds.objects[i]} differs from the JPEG loader's "
                                 f"(decoder or loader changed?)", rebuild=True)
    return Status(True)


class _DecodeObjects(Dataset):
    """Object ``i`` -> (i, (V, S, S, 3) uint8, (V, 7) float64); run in DataLoader workers during a build."""

    def __init__(self, ds: ThreeDIEBench, indices: list[int]) -> None:
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple:
        i, ds = self.indices[j], self.ds
        obj = ds.root / ds.objects[i]
        images = np.stack([decode_view(obj / f"image_{k}.jpg", ds.image_size) for k in range(ds.views_per_object)])
        latents = np.stack([ThreeDIEBench._latent(ds, obj / f"latent_{k}.npy") for k in range(ds.views_per_object)])
        return i, images, latents


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock on the cache folder: data-parallel ranks and concurrent jobs build it once."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): single writer assumed
        yield
        return
    with open(path / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process writing the decoded cache {path}")
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without locks: do not run two builds of one cache at once
            say(f"cannot lock {path} ({e}); build the cache once (python -m benchmark.tools.decoded_cache) before "
                 f"starting several processes on it")
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _start(path: Path, ds: ThreeDIEBench, chunk_objects: int | None, split_dir: str | None) -> dict:
    """Fresh manifest and preallocated files (the old ones removed)."""
    for f in (MANIFEST, *FILES):
        (path / f).unlink(missing_ok=True)
    h = header(ds)
    per_object = ds.views_per_object * ds.image_size ** 2 * 3
    need = int(np.prod(h["shapes"]["images"])) + int(np.prod(h["shapes"]["latents"])) * 8
    free = shutil.disk_usage(path).free
    if need > free:
        raise DataError(f"the decoded cache of 3DIEBench {ds.split} at {ds.image_size} px needs {need / 2**30:.1f} "
                        f"GiB but {path} has {free / 2**30:.1f} GiB free; point data.cache_dir at a larger disk "
                        f"or set data.decoded_cache=false")
    np.lib.format.open_memmap(path / FILES[0], "w+", np.uint8, tuple(h["shapes"]["images"])).flush()
    np.lib.format.open_memmap(path / FILES[1], "w+", np.float64, tuple(h["shapes"]["latents"])).flush()
    np.save(path / FILES[2], ds.labels.astype(np.int64))
    return {**h, "chunk_objects": chunk_objects or max(1, CHUNK_BYTES // per_object), "chunks": {},
            "complete": False, "split_files": split_file_hashes(ds, split_dir), "created": now()}


def build(path: Path, ds: ThreeDIEBench, status: Status, progress: bool = True, workers: int = 0,
          chunk_objects: int | None = None, split_dir: str | None = None) -> None:
    """Write the chunks ``status`` says are missing (all of them if it says rebuild)."""
    m = _manifest(path) if not status.rebuild else None
    if m is None:
        m = _start(path, ds, chunk_objects, split_dir)
        atomic_write_text(path / MANIFEST, json.dumps(m, indent=1))
    for c in status.bad_chunks:
        m["chunks"].pop(str(c), None)
    images, latents = _open(path, "r+")
    chunks = _chunks(m)
    todo = [c for c in range(len(chunks)) if str(c) not in m["chunks"]]
    indices = [i for c in todo for i in chunks[c]]
    # Own generator: a DataLoader draws its workers' base seed from it, and a run that builds its cache
    # must see the same global random stream as one that finds it built.
    loader = DataLoader(_DecodeObjects(ds, indices), batch_size=None, num_workers=workers,
                        generator=torch.Generator())
    last = {chunks[c].stop - 1: c for c in todo}
    desc = f"decoding 3DIEBench {ds.split} -> {ds.image_size} px cache"
    with Progress(len(ds.objects), desc, "obj", initial=len(ds.objects) - len(indices), enabled=progress) as bar:
        for i, imgs, lats in loader:
            images[i], latents[i] = imgs.numpy(), lats.numpy()
            bar.update(1)
            if i in last:  # chunk complete: data to disk first, then mark it done
                c = last[i]
                images.flush()
                latents.flush()
                m["chunks"][str(c)] = _chunk_record(ds, images, latents, chunks[c])
                m["updated"] = now()
                atomic_write_text(path / MANIFEST, json.dumps(m, indent=1))
    m["complete"] = True
    atomic_write_text(path / MANIFEST, json.dumps(m, indent=1))


def ensure_cache(ds: ThreeDIEBench, cache_dir: str | Path | None = None, progress: bool = True, workers: int = 0,
                 build_missing: bool = True, chunk_objects: int | None = None, split_dir: str | None = None) -> Path:
    """A verified cache of ``ds``: built, resumed or rebuilt as needed (DataError if ``build_missing`` is off)."""
    path = cache_path(ds, cache_dir)
    with _lock(path):
        status = inspect(path, ds)
        if not status.ok:
            if not build_missing:
                raise DataError(f"decoded cache {path} cannot be used: {status.reason}. Rebuild it with "
                                f"python -m benchmark.tools.decoded_cache (same --data-root/--image-size/--set options "
                                f"as the run), or set data.decoded_cache=false to read the JPEGs")
            if status.reason != "not built yet":
                say(f"decoded cache {path}: {status.reason}; "
                     f"{'rebuilding it' if status.rebuild else 'writing the missing chunks'}")
            build(path, ds, status, progress, workers, chunk_objects, split_dir)
            status = inspect(path, ds)
            if not status.ok:  # e.g. the source changes while being read
                raise DataError(f"decoded cache {path} failed its check right after being built: {status.reason}")
    return path


class CachedThreeDIEBench(ThreeDIEBench):
    """``ThreeDIEBench`` (same arguments) reading views and latents from the decoded cache.

    Only the two file readers are replaced, so ``ThreeDIEBench.item`` (view sampling, actions,
    targets) runs unchanged on the cached pixels and latents. Keyword-only: ``cache_dir`` (None ->
    ``$SEQBENCH_CACHE/decoded``), ``progress`` (build bar), ``workers`` (decoding processes of a
    build), ``build`` (False: raise instead of building).
    """

    def __init__(self, *args, cache_dir: str | Path | None = None, progress: bool = True, workers: int = 0,
                 build: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        split_dir = signature(ThreeDIEBench).bind(*args, **kwargs).arguments.get("split_dir")
        self.cache_path = ensure_cache(self, cache_dir, progress, workers, build, split_dir=split_dir)
        self._row = {str(self.root / o): i for i, o in enumerate(self.objects)}
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:  # DataLoader workers map the files themselves (a memmap pickles as a copy)
        return {**self.__dict__, "_arrays": None}

    def _where(self, path: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``<root>/<object>/image_k.jpg`` or ``latent_k.npy`` -> (images, latents, object row, view k)."""
        if self._arrays is None:
            self._arrays = _open(self.cache_path, "r")
        return *self._arrays, self._row[str(path.parent)], int(path.stem.rsplit("_", 1)[1])

    def _image(self, path: Path) -> torch.Tensor:
        images, _, i, k = self._where(path)
        return to_views(images[i, k][None])[0]

    def _latent(self, path: Path) -> np.ndarray:
        _, latents, i, k = self._where(path)
        return np.array(latents[i, k])


def threedie_loader(cfg: RunConfig) -> Callable[..., ThreeDIEBench]:
    """The 3DIEBench class a dataset builder should call: the JPEG loader, or the cached one."""
    if not cfg.data.decoded_cache:
        return ThreeDIEBench
    return functools.partial(CachedThreeDIEBench, cache_dir=cfg.data.cache_dir, progress=cfg.train.progress,
                             workers=loader_workers(cfg.data.num_workers))
