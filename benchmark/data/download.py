"""Fetch a dataset into the layout its loader reads: ``python -m benchmark.data.download NAME [--root DIR]``.

=============  ==========================================================================  ====================
name           what is fetched (checksum)                                                  --data-root to use
=============  ==========================================================================  ====================
cifar100       torchvision's ``CIFAR100.url`` (161 MB; md5 ``CIFAR100.tgz_md5``)            DIR
stl10          torchvision's ``STL10.url`` (2.6 GB; md5 ``STL10.tgz_md5``)                  DIR
tinyimagenet   cs231n's ``tiny-imagenet-200.zip`` (237 MB; md5 published with it)          DIR
3diebench      SIE's ``3DIEBench.tar.gz`` (17 GB; no published checksum) and the four      DIR/3DIEBench
               split files of ``facebookresearch/SIE@54541cf:data/`` (git blob ids)
=============  ==========================================================================  ====================

* **Resumable.** Bytes go to ``<file>.part``; an interrupted download (Ctrl-C, a dropped connection)
  continues from where it stopped when the same command runs again, with an HTTP ``Range`` request.
  A server that ignores ``Range`` makes it start over (and says so).
* **Checked.** A download becomes its final file only once its checksum matches; otherwise the
  ``.part`` file is deleted and the command stops with an error naming both digests. Assets without a
  published checksum (the 3DIEBench archive) get their sha256 recorded in ``<file>.sha256`` beside
  them after the first download (the command prints it); later downloads into that folder must match it.
* **Extracted** into a temporary folder beside the final one, which is renamed when complete, so an
  interrupted extraction never looks finished; the archive is deleted afterwards (``--keep-archive``
  keeps it). Tar members go through tarfile's ``data`` filter (no absolute paths, nothing outside the
  folder); zip files through torchvision's ``extract_archive``. A dataset folder that already exists
  is left alone (delete it to fetch again).
* **Mirror.** ``--mirror URL`` (or ``$SEQBENCH_DOWNLOAD_MIRROR``) fetches every file as ``URL/<file name>``
  instead of from its official host: an institute mirror, or the tests' local server.

torchvision's own ``download_url`` is not used for the transfer because it cannot resume; its URLs,
published md5s, ``calculate_md5`` and ``extract_archive`` are. After extraction the dataset's launcher
check (``benchmark/data/checks.py``) confirms the loader will find what it needs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import DataError, SeqbenchError, user_message
from benchmark.fileio import atomic_write_text
from benchmark.progress import Progress

MIRROR_ENV = "SEQBENCH_DOWNLOAD_MIRROR"
CHUNK = 1 << 20
USER_AGENT = "seqbench-download (python urllib)"
SIE_COMMIT = "54541cfa40780aa3e502e3bbb52b30aae672b487"  # facebookresearch/SIE, the commit docs/3diebench.md read
SIE_DATA = f"https://raw.githubusercontent.com/facebookresearch/SIE/{SIE_COMMIT}/data"


class DownloadError(DataError):
    """A download or extraction that could not complete; the message says what to do."""


@dataclass(frozen=True)
class Asset:
    url: str
    filename: str  # name on disk
    checksum: tuple[str, str] | None  # (md5 | sha256 | git-sha1, hex digest) as published; None: none published
    size: str  # for messages
    archive: bool = True  # True: extracted into the data root; False: a file placed in the dataset folder


@dataclass(frozen=True)
class Spec:
    name: str
    folder: str  # what the archive extracts to, inside --root
    assets: tuple[Asset, ...]
    data_root_is_folder: bool = False  # the run's --data-root is <root>/<folder> (3DIEBench) rather than <root>
    note: str = ""


def _cifar100() -> Spec:
    from torchvision.datasets import CIFAR100

    return Spec("cifar100", CIFAR100.base_folder,
                (Asset(CIFAR100.url, CIFAR100.filename, ("md5", CIFAR100.tgz_md5), "161 MB"),))


def _stl10() -> Spec:
    from torchvision.datasets import STL10

    return Spec("stl10", STL10.base_folder, (Asset(STL10.url, STL10.filename, ("md5", STL10.tgz_md5), "2.6 GB"),),
                note="stl10-saccades also needs saliency maps: the paper's DeepGaze IIE arrays are the Hugging Face "
                     "dataset Hafez/salmap-stl10 (or use --set data.saccade.saliency=spectral)")


def _tinyimagenet() -> Spec:
    return Spec("tinyimagenet", "tiny-imagenet-200",
                (Asset("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                       ("md5", "90528d7ca1a48142e341f4ef8d21d0de"), "237 MB"),))


# Git blob ids of facebookresearch/SIE@54541cf:data/*.npy (`git ls-tree`): checksums published by the repository.
SPLIT_BLOBS = {
    "train_images.npy": "2155c85ceb0bc46ae3eeaf81f7bfb20842c74ed3",
    "train_labels.npy": "4efe3a07cc6b7edd48cc93ace9c3bb1aa22f0e5b",
    "val_images.npy": "c451307447c645fe1f0efb5de6b62037532e9340",
    "val_labels.npy": "6eda944a95017856af929e231c3eac6b071d06c9",
}


def _3diebench() -> Spec:
    splits = tuple(Asset(f"{SIE_DATA}/{name}", name, ("git-sha1", blob), "<8 MB", archive=False)
                   for name, blob in SPLIT_BLOBS.items())
    return Spec("3diebench", "3DIEBench",
                (Asset("https://dl.fbaipublicfiles.com/SIE/3DIEBench.tar.gz", "3DIEBench.tar.gz", None, "17 GB"),
                 *splits),
                data_root_is_folder=True, note="3DIEBench is licensed CC-BY-NC (see the LICENSE file inside it)")


SPECS: dict[str, Callable[[], Spec]] = {
    "cifar100": _cifar100,
    "stl10": _stl10,
    "tinyimagenet": _tinyimagenet,
    "3diebench": _3diebench,
}


# ------------------------------------------------------------------------------------------- checksums
def digest(path: Path, algo: str) -> str:
    """Hex digest of a file: ``md5`` (torchvision's calculate_md5), ``sha256``, or ``git-sha1`` (a git blob id)."""
    if algo == "md5":
        from torchvision.datasets.utils import calculate_md5

        return calculate_md5(path)
    if algo == "sha256":
        h = hashlib.sha256()
    elif algo == "git-sha1":
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    else:
        raise ValueError(f"unknown checksum algorithm {algo!r}")
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def expected_checksum(asset: Asset, path: Path) -> tuple[str, str] | None:
    """The published checksum, else the sha256 recorded after an earlier download into this folder."""
    if asset.checksum is not None:
        return asset.checksum
    side = _sidecar(path)
    if side.is_file():
        return ("sha256", side.read_text().split()[0])
    return None


# ------------------------------------------------------------------------------------------- transfer
def _open(url: str, offset: int):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)


def fetch(url: str, dest: Path, log: Callable[[str], None] = print) -> None:
    """Download ``url`` into ``dest.part``, resuming a partial one; the caller verifies and renames."""
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        resp = _open(url, offset)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at the end: the .part file is already complete
            log(f"{part.name} is already complete ({offset} bytes)")
            return
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot reach {url} ({reason}); check the network, or fetch the file elsewhere and "
                            f"serve it with --mirror URL (or ${MIRROR_ENV})") from None
    with resp:
        if offset and resp.status == 206:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise DownloadError(f"{url}: asked for bytes {offset}- but the server sent "
                                    f"{resp.headers.get('Content-Range')!r}; delete {part} and run again")
            log(f"resuming {dest.name} at {offset / 1e6:.1f} MB")
        elif offset:
            log(f"the server of {url} does not resume downloads (HTTP {resp.status} to a Range request): "
                f"starting {dest.name} over")
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        # a bar on a terminal; else a line every 10 % or 30 s (benchmark/progress.py)
        progress = Progress(total, f"downloading {dest.name}", "B", initial=offset, unit_scale=True, say=log)
        try:
            with part.open("ab" if offset else "wb") as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    progress.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(f"the download of {url} stopped after {progress.done / 1e6:.1f} MB "
                                f"({type(e).__name__}: {e}); run the same command again to resume it") from None
        finally:
            progress.close()
    if total is not None and part.stat().st_size != total:  # the connection closed early
        raise DownloadError(f"the download of {url} stopped after {part.stat().st_size} of {total} bytes; run the "
                            f"same command again to resume it")


def obtain(asset: Asset, dest: Path, mirror: str | None, log: Callable[[str], None] = print) -> Path:
    """``dest`` holding ``asset``, verified: an existing good file is kept, anything else is downloaded."""
    url = f"{mirror.rstrip('/')}/{asset.filename}" if mirror else asset.url
    expected = expected_checksum(asset, dest)
    if dest.is_file():
        if expected is None:
            _record_sha256(asset, dest, log)
            return dest
        if digest(dest, expected[0]) == expected[1]:
            log(f"{dest} is already here ({expected[0]} verified)")
            return dest
        log(f"{dest} does not match its {expected[0]} checksum: downloading it again")
        dest.unlink()
    log(f"downloading {url} ({asset.size}) -> {dest}")
    fetch(url, dest, log)
    part = dest.with_name(dest.name + ".part")
    if expected is not None:
        log(f"verifying the {expected[0]} checksum of {dest.name}")
        got = digest(part, expected[0])
        if got != expected[1]:
            part.unlink()
            source = "published" if asset.checksum else f"recorded in {_sidecar(dest)} by an earlier download"
            raise DownloadError(
                f"checksum mismatch for {url}: {expected[0]} {got}, expected {expected[1]} ({source}). The "
                f"download was deleted; run the command again to fetch it afresh. If it fails again, the file "
                f"changed at its source or something between alters it (a proxy, a wrong --mirror)")
    os.replace(part, dest)
    if expected is None:
        _record_sha256(asset, dest, log)
    return dest


def _record_sha256(asset: Asset, dest: Path, log: Callable[[str], None]) -> None:
    sha = digest(dest, "sha256")
    # sha256sum's format: `sha256sum -c` checks it too
    atomic_write_text(_sidecar(dest), f"{sha}  {dest.name}\n", "checksum")
    log(f"no checksum is published for {asset.filename}; its sha256 is {sha} (recorded in {_sidecar(dest)}; "
        f"later downloads into {dest.parent} are checked against it)")


# ------------------------------------------------------------------------------------------- extraction
def extract(archive: Path, root: Path, folder: str, log: Callable[[str], None] = print) -> Path:
    """Unpack ``archive`` (which must hold ``folder/``) into ``root/folder`` via a temporary folder."""
    tmp = root / f".{folder}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted extraction
    tmp.mkdir(parents=True)
    log(f"extracting {archive.name} into {root / folder}")
    try:
        if tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, log)
        else:
            from torchvision.datasets.utils import extract_archive

            extract_archive(str(archive), str(tmp))
    except (tarfile.TarError, OSError, RuntimeError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive} could not be extracted ({type(e).__name__}: {e}); delete it and run again "
                            f"to download it afresh") from None
    if not (tmp / folder).is_dir():
        found = ", ".join(sorted(p.name for p in tmp.iterdir())[:10]) or "nothing"
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive} does not hold a {folder}/ folder (found: {found}); it is not the expected "
                            f"archive: delete it and run again")
    os.replace(tmp / folder, root / folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return root / folder


def _extract_tar(archive: Path, dest: Path, log: Callable[[str], None]) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise DownloadError(f"extracting {archive.name} safely needs tarfile's data filter (Python >= 3.11.4); "
                            f"this is Python {sys.version.split()[0]}: upgrade, or extract it yourself")
    size = archive.stat().st_size
    with archive.open("rb") as raw:
        progress = Progress(size, f"extracting {archive.name}", "B", unit_scale=True, say=log)
        reader = _CountingReader(raw, progress)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # streamed: one pass over a 17 GB archive
                for member in tar:
                    tar.extract(member, dest, filter="data")
        finally:
            progress.close()


class _CountingReader:
    """A read-only file object that reports how far the tar stream has read (for the progress)."""

    def __init__(self, raw, progress: Progress) -> None:
        self.raw, self.progress = raw, progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.progress.update(len(data))
        return data


# ------------------------------------------------------------------------------------------- dataset
def download(name: str, root: str | Path, mirror: str | None = None, keep_archive: bool = False,
             log: Callable[[str], None] = print) -> Path:
    """Fetch, verify and extract dataset ``name`` under ``root``; returns the ``--data-root`` for runs."""
    if name not in SPECS:
        raise SeqbenchError(f"unknown dataset {name!r}; downloadable: {', '.join(SPECS)}")
    spec = SPECS[name]()
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.folder
    for asset in spec.assets:
        if not asset.archive:
            continue
        if target.is_dir():
            log(f"{target} exists: not downloading {asset.filename} (delete the folder to fetch it again)")
            continue
        archive = obtain(asset, root / asset.filename, mirror, log)
        extract(archive, root, spec.folder, log)
        if not keep_archive:
            archive.unlink()
    for asset in spec.assets:
        if not asset.archive:
            obtain(asset, target / asset.filename, mirror, log)
    data_root = target if spec.data_root_is_folder else root
    _check_layout(name, data_root)
    if spec.note:
        log(f"note: {spec.note}")
    return data_root


def _check_layout(name: str, data_root: Path) -> None:
    """The launcher's data check on the result: the loader will find what it needs."""
    from benchmark.registry import DATASETS
    from benchmark.resolve import resolve

    cfg = resolve({"dataset": name, "data": {"root": str(data_root)}})
    try:
        DATASETS[name].check(cfg)
    except DataError as e:
        raise DownloadError(f"the download finished but {data_root} is not what the {name} loader expects: {e}") \
            from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmark.data.download", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Interrupted downloads resume when the same command runs again; every file is checked against "
               "its published checksum (the 3DIEBench archive, which has none, against the sha256 recorded at "
               "its first download). Details: benchmark/data/download.py.")
    p.add_argument("dataset", choices=list(SPECS), help="dataset to fetch")
    p.add_argument("--root", default="data", help="folder to download and extract into (default: ./data)")
    p.add_argument("--mirror", default=os.environ.get(MIRROR_ENV),
                   help=f"fetch every file as MIRROR/<file name> instead of its official URL (default ${MIRROR_ENV})")
    p.add_argument("--keep-archive", action="store_true", help="keep the archive after extracting it")
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        data_root = download(args.dataset, args.root, args.mirror, args.keep_archive)
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume the download", file=sys.stderr)
        return 130
    print(f"{args.dataset} is ready in {data_root} ({time.time() - t0:.0f} s); train with:\n"
          f"  python -m benchmark.run --dataset {args.dataset} --data-root {data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
