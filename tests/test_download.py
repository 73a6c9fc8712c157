"""``python -m benchmark.data.download`` against a local HTTP server (127.0.0.1, never the real hosts):
download + extract + the real loader reading the result, checksum failures, resuming with Range requests,
and the sha256 recorded for an archive that has no published checksum."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import MiniConfig
from benchmark.data import download as dl
from benchmark.data.cifar100 import CIFAR100Images
from benchmark.data.image_mini import write_cifar100, write_tinyimagenet
from benchmark.data.mini3d import generate as generate_mini
from benchmark.data.threedie import ThreeDIEBench
from benchmark.data.tinyimagenet import TinyImageNetImages


class Server:
    """Serves ``folder`` with single-range ``Range: bytes=N-`` support (SimpleHTTPRequestHandler has none).

    ``cut_after``: the next response stops after that many body bytes and the connection closes (a drop).
    ``ranges=False``: Range headers are ignored (a server that cannot resume).
    """

    def __init__(self, folder: Path) -> None:
        self.folder, self.requests, self.cut_after, self.ranges = folder, [], None, True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = server.folder / self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if not path.is_file():
                    self.send_error(404)
                    return
                data, start = path.read_bytes(), 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.ranges:
                    start = int(m[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[:server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    s = Server(folder)
    yield s
    s.close()


def _tar_gz(src: Path, arcname: str, dest: Path, skip: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=arcname, filter=lambda ti: None if Path(ti.name).name in skip else ti)
    dest.write_bytes(buf.getvalue())
    return buf.getvalue()


def _with_checksums(monkeypatch, name: str, **by_file: tuple[str, str] | None) -> None:
    """The real spec of ``name`` with test checksums (generated archives cannot match the published ones)."""
    spec = dl.SPECS[name]()
    assets = tuple(dataclasses.replace(a, checksum=by_file.get(a.filename, a.checksum)) for a in spec.assets)
    monkeypatch.setitem(dl.SPECS, name, lambda: dataclasses.replace(spec, assets=assets))


def _images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 2


def test_specs_use_published_urls_and_checksums():
    from torchvision.datasets import CIFAR100, STL10

    (c,) = dl.SPECS["cifar100"]().assets
    assert (c.url, c.filename, c.checksum) == (CIFAR100.url, "cifar-100-python.tar.gz",
                                               ("md5", "eb9058c3a382ffc7106e4002c42a8d85"))
    (s,) = dl.SPECS["stl10"]().assets
    assert (s.url, s.checksum) == (STL10.url, ("md5", "91f7769df0f17e558f3565bffb0c7dfb"))
    (t,) = dl.SPECS["tinyimagenet"]().assets
    assert t.url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert t.checksum == ("md5", "90528d7ca1a48142e341f4ef8d21d0de")
    spec = dl.SPECS["3diebench"]()
    archive, *splits = spec.assets
    assert archive.url == "https://dl.fbaipublicfiles.com/SIE/3DIEBench.tar.gz" and archive.checksum is None
    assert [a.filename for a in splits] == ["train_images.npy", "train_labels.npy", "val_images.npy",
                                            "val_labels.npy"]
    for a in splits:  # pinned to the commit whose git blob ids are the checksums
        assert a.url.startswith("https://raw.githubusercontent.com/facebookresearch/SIE/54541cfa") and not a.archive
        assert a.checksum[0] == "git-sha1" and len(a.checksum[1]) == 40


def test_digests(tmp_path):
    f = tmp_path / "hello"
    f.write_bytes(b"hello\n")
    assert dl.digest(f, "git-sha1") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert dl.digest(f, "md5") == "b1946ac92492d2347c6235b4d2611184"
    assert dl.digest(f, "sha256") == hashlib.sha256(b"hello\n").hexdigest()


def test_cifar100_download_extract_and_the_loader_reads_it(tmp_path, server, monkeypatch, capsys):
    src = tmp_path / "src"
    write_cifar100(src, _images(6, 32, 0), _images(4, 32, 1), ["disc", "square"])
    data = _tar_gz(src / "cifar-100-python", "cifar-100-python", server.folder / "cifar-100-python.tar.gz")
    _with_checksums(monkeypatch, "cifar100", **{"cifar-100-python.tar.gz": ("md5", hashlib.md5(data).hexdigest())})
    root = tmp_path / "data"
    assert dl.main(["cifar100", "--root", str(root), "--mirror", server.url]) == 0
    out = capsys.readouterr().out
    assert f"cifar100 is ready in {root}" in out and f"--dataset cifar100 --data-root {root}" in out
    train = CIFAR100Images(root, "train", num_classes=2)
    assert len(train) == 6 and train.image(0).shape == (3, 32, 32)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python"]  # archive deleted, no .part left
    assert server.requests == [("/cifar-100-python.tar.gz", None)]
    # Once extracted, running again fetches nothing.
    assert dl.main(["cifar100", "--root", str(root), "--mirror", server.url]) == 0
    assert len(server.requests) == 1 and "exists: not downloading" in capsys.readouterr().out


def test_checksum_mismatch_fails_clearly_and_leaves_no_file(tmp_path, server, monkeypatch, capsys):
    src = tmp_path / "src"
    write_cifar100(src, _images(2, 32, 0), _images(2, 32, 1), ["disc", "square"])
    _tar_gz(src / "cifar-100-python", "cifar-100-python", server.folder / "cifar-100-python.tar.gz")
    _with_checksums(monkeypatch, "cifar100", **{"cifar-100-python.tar.gz": ("md5", "0" * 32)})
    root = tmp_path / "data"
    assert dl.main(["cifar100", "--root", str(root), "--mirror", server.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checksum mismatch for {server.url}/cifar-100-python.tar.gz: md5 ")
    assert f"expected {'0' * 32} (published)" in err and "run the command again" in err and "Traceback" not in err
    assert list(root.iterdir()) == []  # neither the archive, nor its .part, nor an extracted folder


@pytest.mark.parametrize("server_resumes", [True, False])
def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, monkeypatch, capsys, server_resumes):
    src = tmp_path / "src"
    write_tinyimagenet(src, _images(4, 16, 0), _images(2, 16, 1), ["n00000001", "n00000002"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted((src / "tiny-imagenet-200").rglob("*")):
            z.write(p, p.relative_to(src).as_posix())
    data = buf.getvalue()
    (server.folder / "tiny-imagenet-200.zip").write_bytes(data)
    _with_checksums(monkeypatch, "tinyimagenet", **{"tiny-imagenet-200.zip": ("md5", hashlib.md5(data).hexdigest())})
    root = tmp_path / "data"
    half = len(data) // 2
    server.cut_after, server.ranges = half, server_resumes
    with pytest.raises(dl.DownloadError, match="stopped after .* run the same command again to resume"):
        dl.download("tinyimagenet", root, server.url)
    part = root / "tiny-imagenet-200.zip.part"
    assert part.stat().st_size == half and not (root / "tiny-imagenet-200.zip").exists()

    data_root = dl.download("tinyimagenet", root, server.url)
    assert data_root == root.resolve()
    assert server.requests[-1] == ("/tiny-imagenet-200.zip", f"bytes={half}-")
    log = capsys.readouterr().out
    assert ("resuming tiny-imagenet-200.zip" in log) == server_resumes
    assert ("does not resume downloads" in log) != server_resumes
    val = TinyImageNetImages(root, "val", num_classes=2)
    assert len(val) == 2 and not part.exists()


def test_3diebench_archive_and_split_files_with_a_recorded_sha256(tmp_path, server, monkeypatch):
    mini = generate_mini(MiniConfig(classes=3, objects_per_class=5, views=6, resolution=32), progress=False)
    splits = ("train_images.npy", "train_labels.npy", "val_images.npy", "val_labels.npy")
    archive = _tar_gz(mini, "3DIEBench", server.folder / "3DIEBench.tar.gz", skip=(*splits, "COMPLETE"))
    blobs = {}
    for name in splits:
        blob = (mini / name).read_bytes()
        (server.folder / name).write_bytes(blob)
        blobs[name] = ("git-sha1", hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest())
    _with_checksums(monkeypatch, "3diebench", **blobs)
    root = tmp_path / "data"
    data_root = dl.download("3diebench", root, server.url)
    assert data_root == (root / "3DIEBench").resolve()
    assert all((data_root / n).is_file() for n in splits)
    ds = ThreeDIEBench(data_root, "train", 2, 32)
    item = ds.item(0, np.random.default_rng(0))
    assert item["views"].shape == (2, 3, 32, 32) and item["actions"].shape == (1, 4)
    sidecar = root / "3DIEBench.tar.gz.sha256"
    assert sidecar.read_text() == f"{hashlib.sha256(archive).hexdigest()}  3DIEBench.tar.gz\n"

    # A later download into the same folder must match the recorded sha256: a changed archive is refused.
    import shutil

    shutil.rmtree(data_root)
    _tar_gz(mini, "3DIEBench", server.folder / "3DIEBench.tar.gz", skip=(*splits, "COMPLETE", "image_0.jpg"))
    with pytest.raises(dl.DownloadError, match=r"checksum mismatch .* sha256 .*recorded in .*3DIEBench.tar.gz.sha256"):
        dl.download("3diebench", root, server.url)
    assert not (root / "3DIEBench.tar.gz").exists() and not (root / "3DIEBench.tar.gz.part").exists()
    assert not data_root.exists()


def test_split_file_with_a_wrong_blob_id_is_refused(tmp_path, server, monkeypatch):
    mini = generate_mini(MiniConfig(classes=3, objects_per_class=5, views=6, resolution=32), progress=False)
    _tar_gz(mini, "3DIEBench", server.folder / "3DIEBench.tar.gz", skip=("COMPLETE",))
    (server.folder / "train_images.npy").write_bytes((mini / "train_images.npy").read_bytes())
    root = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="checksum mismatch .*train_images.npy: git-sha1 .* expected 2155c85c"):
        dl.download("3diebench", root, server.url)  # the real, published blob ids
    assert not (root / "3DIEBench" / "train_images.npy").exists()
    assert not (root / "3DIEBench" / "train_images.npy.part").exists()


def test_unreachable_server_and_missing_file_errors(tmp_path, server, capsys):
    assert dl.main(["stl10", "--root", str(tmp_path / "d"), "--mirror", server.url]) == 2
    assert "error: " + server.url + "/stl10_binary.tar.gz: the server answered HTTP 404" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{_free_port()}"
    assert dl.main(["stl10", "--root", str(tmp_path / "d"), "--mirror", dead]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach {dead}/stl10_binary.tar.gz") and "--mirror" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_archive_members_cannot_escape_the_data_root(tmp_path, server, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("cifar-100-python/meta", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    (server.folder / "cifar-100-python.tar.gz").write_bytes(buf.getvalue())
    _with_checksums(monkeypatch, "cifar100",
                    **{"cifar-100-python.tar.gz": ("md5", hashlib.md5(buf.getvalue()).hexdigest())})
    root = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="could not be extracted .*delete it and run again"):
        dl.download("cifar100", root, server.url)
    assert not (tmp_path / "escaped.txt").exists() and not (root / "cifar-100-python").exists()
