"""The decoded 3DIEBench cache: bit-identical items, resumable build, stale/corrupt caches never used."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.config import merge, parse_set
from benchmark.core.registry import dataset_entry
from benchmark.core.resolve import resolve
from benchmark.core.runner import main as run_main
from benchmark.data import view_cache as C
from benchmark.data.base import collate
from benchmark.data.threedie import ThreeDIEBench
from benchmark.infra.errors import ConfigError, DataError
from benchmark.tools import decoded_cache
from tests.conftest import TINY_SETS, tiny_args
from tests.test_threedie import write_official_tree


@pytest.fixture()
def tree(tmp_path):
    return write_official_tree(tmp_path / "3DIEBench", objects_per_class=4, views=5, size=24)  # 9 train objects


def same_item(a: dict, b: dict) -> bool:
    return (torch.equal(a["views"], b["views"]) and torch.equal(a["actions"], b["actions"]) and a["label"] == b["label"]
            and torch.equal(a["abs_latents"], b["abs_latents"])
            and a["targets"].keys() == b["targets"].keys()
            and all(torch.equal(a["targets"][k], b["targets"][k]) for k in a["targets"]))


def decode_counter(monkeypatch) -> list[int]:
    """Objects decoded from JPEG by cache builds from now on."""
    seen: list[int] = []
    orig = C._DecodeObjects.__getitem__

    def counting(self, j):
        seen.append(self.indices[j])
        return orig(self, j)

    monkeypatch.setattr(C._DecodeObjects, "__getitem__", counting)
    return seen


@pytest.mark.parametrize("size", [16, 24])  # resized by PIL bilinear / already at the JPEG's size
def test_cached_items_are_bit_identical_to_jpeg_items(tree, tmp_path, size):
    kw = {"latent_type": "all", "canonical_quat": size == 16}
    jpeg = ThreeDIEBench(tree, "train", 4, size, **kw)
    cached = C.CachedThreeDIEBench(tree, "train", 4, size, **kw, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(cached, ThreeDIEBench) and cached.cache_path.parent == tmp_path / "c"
    for epoch in range(3):
        jpeg.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert all(same_item(jpeg[i], cached[i]) for i in range(len(jpeg)))
    fixed = C.CachedThreeDIEBench(tree, "val", 3, size, fixed=True, cache_dir=tmp_path / "c", progress=False)
    assert all(same_item(ThreeDIEBench(tree, "val", 3, size, fixed=True)[i], fixed[i]) for i in range(len(fixed)))
    # Workers unpickle the dataset and map the files themselves.
    loader = torch.utils.data.DataLoader(cached, batch_size=3, num_workers=1, collate_fn=collate)
    assert torch.equal(next(iter(loader))["views"], collate([jpeg[i] for i in range(3)])["views"])


def test_registry_hook_and_config(tmp_path):
    sets = [f"{k}={v}" for k, v in TINY_SETS.items()] + [f"data.cache_dir={tmp_path}"]
    user = merge({"dataset": "3diebench-mini", "data": {"image_size": 16}}, parse_set(sets))
    plain = resolve(user)
    cached = resolve(merge(user, {"data": {"decoded_cache": True}}))
    a = dataset_entry("3diebench-mini").build(plain, "train", 4, False)
    b = dataset_entry("3diebench-mini").build(cached, "train", 4, False)
    assert type(a) is ThreeDIEBench and isinstance(b, C.CachedThreeDIEBench) and b.cache_path.parent == tmp_path
    assert same_item(a[0], b[0]) and b.label_note == a.label_note
    with pytest.raises(ConfigError, match="3diebench and 3diebench-mini only"):
        resolve({"dataset": "cifar100-mini", "data": {"decoded_cache": True}})


def test_resumes_an_interrupted_build(tree, tmp_path, monkeypatch, capsys):
    ds = ThreeDIEBench(tree, "train", 3, 16)  # 9 objects, chunks of 2 -> 5 chunks
    orig = C._DecodeObjects.__getitem__

    def killed_at_object_5(self, j):
        if self.indices[j] == 5:
            raise KeyboardInterrupt  # as a kill: nothing after this point runs
        return orig(self, j)

    monkeypatch.setattr(C._DecodeObjects, "__getitem__", killed_at_object_5)
    with pytest.raises(KeyboardInterrupt):
        C.ensure_cache(ds, tmp_path, progress=False, chunk_objects=2)
    path = C.cache_path(ds, tmp_path)
    m = json.loads((path / C.MANIFEST).read_text())
    assert sorted(m["chunks"]) == ["0", "1"] and not m["complete"]  # object 4 written, its chunk not done
    images = np.load(path / "images.npy", mmap_mode="r+")
    images[4] = 255  # whatever a killed write left behind in the unfinished chunk
    images.flush()
    status = C.inspect(path, ds)
    assert not status.ok and not status.rebuild and "interrupted build (2/5 chunks" in status.reason
    with pytest.raises(DataError, match="interrupted build"):
        C.CachedThreeDIEBench(tree, "train", 3, 16, cache_dir=tmp_path, build=False)
    monkeypatch.setattr(C._DecodeObjects, "__getitem__", orig)
    seen = decode_counter(monkeypatch)
    cached = C.CachedThreeDIEBench(tree, "train", 3, 16, cache_dir=tmp_path, progress=False)
    assert seen == [4, 5, 6, 7, 8] and "writing the missing chunks" in capsys.readouterr().err
    assert all(same_item(ds[i], cached[i]) for i in range(len(ds)))
    assert C.inspect(path, ds, full=True).ok


def test_changed_source_is_rebuilt(tree, tmp_path, monkeypatch, capsys):
    ds = ThreeDIEBench(tree, "train", 3, 16)
    C.ensure_cache(ds, tmp_path, progress=False)
    img = tree / ds.objects[0] / "image_2.jpg"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(img)  # re-rendered view
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    status = C.inspect(C.cache_path(ds, tmp_path), ds)
    assert not status.ok and status.rebuild and "source changed" in status.reason
    seen = decode_counter(monkeypatch)
    cached = C.CachedThreeDIEBench(tree, "train", 3, 16, cache_dir=tmp_path, progress=False)
    assert len(seen) == len(ds) and "rebuilding" in capsys.readouterr().err
    assert all(same_item(ds[i], cached[i]) for i in range(len(ds)))


def test_stale_settings_and_split_are_detected(tree, tmp_path):
    ds16, ds24 = ThreeDIEBench(tree, "train", 3, 16), ThreeDIEBench(tree, "train", 3, 24)
    p16 = C.ensure_cache(ds16, tmp_path, progress=False)
    p24 = C.cache_path(ds24, tmp_path)
    shutil.copytree(p16, p24)  # a cache at the wrong resolution where the 24 px one should be
    status = C.inspect(p24, ds24)
    assert not status.ok and status.rebuild and "image_size 16 -> 24" in status.reason
    m = json.loads((p16 / C.MANIFEST).read_text())
    (p16 / C.MANIFEST).write_text(json.dumps({**m, "version": 0}))
    assert "version 0 -> 1" in C.inspect(p16, ds16).reason
    (p16 / C.MANIFEST).write_text(json.dumps(m))
    assert C.inspect(p16, ds16).ok
    objs, labels = np.load(tree / "train_images.npy"), np.load(tree / "train_labels.npy")
    np.save(tree / "train_images.npy", objs[::-1])  # same objects, another order: every index moves
    np.save(tree / "train_labels.npy", labels[::-1])
    status = C.inspect(p16, ThreeDIEBench(tree, "train", 3, 16))
    assert not status.ok and "split_digest" in status.reason


def test_corrupt_cache_is_detected_and_repaired(tree, tmp_path, monkeypatch, capsys):
    ds = ThreeDIEBench(tree, "train", 3, 16)
    path = C.ensure_cache(ds, tmp_path, progress=False, chunk_objects=3)  # chunks: objects 0-2, 3-5, 6-8
    images = np.load(path / "images.npy", mmap_mode="r+")
    images[4, 1, 3, 3, 0] ^= 1  # one bit, in the middle chunk
    images.flush()
    status = C.inspect(path, ds, full=True)
    assert not status.ok and not status.rebuild and status.bad_chunks == [1]
    images[0, 0, 0, 0, 0] ^= 1  # and in the first chunk, which every quick check samples
    images.flush()
    assert C.inspect(path, ds).bad_chunks == [0, 1]  # one bad sample -> every chunk checked
    seen = decode_counter(monkeypatch)
    C.CachedThreeDIEBench(tree, "train", 3, 16, cache_dir=tmp_path, progress=False)
    assert seen == [0, 1, 2, 3, 4, 5] and "corrupt data in chunk(s) [0, 1]" in capsys.readouterr().err
    assert C.inspect(path, ds, full=True).ok
    # Truncated data file, unreadable manifest: rebuilt from scratch.
    with open(path / "images.npy", "r+b") as f:
        f.truncate(1000)
    assert "missing or truncated" in C.inspect(path, ds).reason
    (path / C.MANIFEST).write_text("{not json")
    status = C.inspect(path, ds)
    assert status.rebuild and "unreadable" in status.reason
    cached = C.CachedThreeDIEBench(tree, "train", 3, 16, cache_dir=tmp_path, progress=False)
    assert all(same_item(ds[i], cached[i]) for i in range(len(ds)))


def test_cli_builds_and_verifies(tree, tmp_path, capsys):
    args = ["--data-root", str(tree), "--image-size", "16", "--set", f"data.cache_dir={tmp_path / 'c'}",
            "--set", "train.progress=false", "--set", "data.num_workers=0"]
    assert decoded_cache.main([*args, "--verify"]) == 1
    assert "train: " in capsys.readouterr().out
    assert decoded_cache.main(args) == 0
    assert decoded_cache.main([*args, "--verify", "--full"]) == 0
    assert capsys.readouterr().out.count(": ok") == 2


def test_run_with_cache_matches_jpeg_run_and_records_it(tmp_path):
    """Same run twice (the cache does not change the run identity): identical loss and metrics."""
    out = tmp_path / "runs"
    assert run_main(tiny_args(out, **{"train.max_steps": 2})) == 0
    (res,) = out.rglob("result.json")
    jpeg = json.loads(res.read_text())
    assert run_main([*tiny_args(out, **{"train.max_steps": 2, "data.decoded_cache": "true",
                                        "data.cache_dir": str(tmp_path / "c")}), "--force"]) == 0
    cached = json.loads(res.read_text())
    assert cached["provenance"]["decoded_cache"] is True and jpeg["provenance"]["decoded_cache"] is False
    speed = {"images_per_s"}  # wall-clock figures; everything else must be identical
    assert {k: v for k, v in cached["metrics"].items() if k not in speed} == \
        {k: v for k, v in jpeg["metrics"].items() if k not in speed}
    assert len(list((tmp_path / "c").glob("3diebench-*"))) == 2  # train and val caches


def test_cache_module_does_not_import_the_registry():
    """No import cycle: the registry imports the data modules, never the reverse (the cache-building CLI that
    needs the registry is benchmark/tools/decoded_cache.py)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, benchmark.data.view_cache, benchmark.data.threedie; "
            "assert 'benchmark.core.registry' not in sys.modules, 'benchmark.data imports the registry'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
