"""Predictive learning across saccades (benchmark/data/saccades.py): saliency, fixations, glimpses, actions.

Known answers: fixations follow the map and respect inhibition of return; a glimpse is the exact pixel
window around its fixation; the built-in saliency maps peak on a salient object; the paper's saliency
arrays are found in their layout and rejected clearly when malformed; seq-JEPA and Conv-IJEPA run end to
end on a tiny official-format STL-10 through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import SaccadeConfig
from benchmark.core.runner import main
from benchmark.data import image_mini
from benchmark.data import saccades as S
from benchmark.data.stl10 import STL10Images
from benchmark.infra.errors import DataError
from tests.conftest import tiny_args


def textured(n: int = 2, seed: int = 0) -> torch.Tensor:
    """(n, 3, 96, 96) low-contrast noise with one bright orange 12 px square at rows 60-71, cols 20-31."""
    g = torch.Generator().manual_seed(seed)
    img = 0.3 + 0.1 * torch.rand(n, 3, 96, 96, generator=g)
    img[:, :, 60:72, 20:32] = torch.tensor([1.0, 0.7, 0.2]).view(1, 3, 1, 1)
    return img


@pytest.mark.parametrize("fn", [S.spectral_residual, S.centre_surround])
def test_builtin_saliency_is_a_distribution_peaking_on_the_object(fn) -> None:
    sal = fn(textured())
    assert sal.shape == (2, 96, 96) and (sal >= 0).all()
    assert torch.allclose(sal.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    r, c = divmod(int(sal[0].argmax()), 96)
    assert 52 <= r <= 80 and 12 <= c <= 40, f"{fn.__name__} peaks at {(r, c)}, away from the object"
    inside = sal[0, 54:78, 14:38].sum()
    assert inside > 3 * (24 * 24) / 96**2, "the object region should hold well above its area share"


def test_fixations_follow_the_map_with_inhibition_of_return() -> None:
    g = torch.Generator().manual_seed(0)
    peaked = torch.full((1, 96, 96), 1e-9)
    peaked[0, 40:44, 50:54] = 1.0
    peaked = peaked / peaked.sum()
    first = S.sample_fixations(peaked.expand(64, -1, -1), 1, 16, g)[:, 0]
    assert ((first[:, 0] >= 40) & (first[:, 0] < 44) & (first[:, 1] >= 50) & (first[:, 1] < 54)).all()
    fix = S.sample_fixations(torch.full((8, 96, 96), 1 / 96**2), 5, 16, g)
    assert fix.shape == (8, 5, 2) and fix.dtype == torch.long
    d = (fix[:, :, None] - fix[:, None]).abs().amax(-1)  # Chebyshev distance between fixations
    off = ~torch.eye(5, dtype=torch.bool)
    assert (d[:, off] > 16).all(), "a fixation landed inside an inhibited square"
    # Without inhibition of return a peaked map is revisited.
    again = S.sample_fixations(peaked, 5, None, g)[0]
    assert (again[:, 0] >= 40).all() and (again[:, 0] < 44).all()
    assert torch.equal(S.sample_fixations(peaked, 3, 16, torch.Generator().manual_seed(7)),
                       S.sample_fixations(peaked, 3, 16, torch.Generator().manual_seed(7)))


def test_glimpse_is_the_pixel_window_around_the_fixation() -> None:
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    g = S.glimpses(x, torch.tensor([[[40, 50], [3, 90]]]), 32, 32)
    assert g.shape == (1, 2, 3, 32, 32)
    assert torch.allclose(g[0, 0], x[0, :, 24:56, 34:66], atol=1e-5)
    # Near the corner: the part inside the image is copied, the rest is zero padding.
    assert torch.allclose(g[0, 1, :, 13:, :22], x[0, :, 0:19, 74:96], atol=1e-5)
    assert g[0, 1, :, :13].abs().max() < 1e-5 and g[0, 1, :, :, 22:].abs().max() < 1e-5
    assert S.glimpses(x, torch.tensor([[[48, 48]]]), 32, 16).shape == (1, 1, 3, 16, 16)


def stl_tree(root: Path, train: int = 10, test: int = 10, unlabeled: int = 8, saliency: bool = True) -> Path:
    """A tiny official-format STL-10 (10 classes) with saliency arrays in the paper's salmap-stl10/ layout."""
    def imgs(n: int, split: int):
        labels = np.arange(n) % 10
        return np.stack([image_mini.draw(int(c) % 10, np.random.default_rng([split, k]), 96, 2)
                         for k, c in enumerate(labels)]), labels
    tr, te, un = imgs(train, 0), imgs(test, 1), imgs(unlabeled, 2)[0]
    image_mini.write_stl10(root, {"train": tr, "test": te, "unlabeled": (un, None)}, image_mini.SHAPES)
    if saliency:
        for split, x in (("train", tr[0]), ("test", te[0]), ("unlabeled", un)):
            image_mini.write_saliency(root, split, x)
    return root


def test_saliency_arrays_layout_and_errors(tmp_path) -> None:
    root = stl_tree(tmp_path, saliency=True)
    arrays = S.SaliencyArrays([root], "train", 10)
    assert arrays.path == root / "salmap-stl10" / "train" / "saliency_train.npy"
    assert arrays[3].shape == (96, 96)
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "saliency_test.npy", np.ones((10, 1, 90, 90), np.float32))
    with pytest.raises(DataError, match=r"saliency_test\.npy has shape"):
        S.SaliencyArrays([flat], "test", 10)
    np.save(flat / "saliency_test.npy", np.ones((7, 1, 96, 96), np.float32))
    with pytest.raises(DataError, match="holds 7 maps"):
        S.SaliencyArrays([flat], "test", 10)
    (flat / "saliency_test.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="corrupt"):
        S.SaliencyArrays([flat], "test", 10)
    with pytest.raises(DataError, match="saliency_unlabeled.npy not found.*salmap-stl10"):
        S.SaliencyArrays([flat], "unlabeled", 8)


def test_saccade_item_actions_and_targets(tmp_path) -> None:
    root = stl_tree(tmp_path, saliency=False)
    src = STL10Images(root, "train")
    ds = S.SaccadeSequences(src, None, 5, 32, SaccadeConfig(saliency="centre-surround"), seed=0, fixed=True,
                            num_classes=10)
    it = ds[2]
    assert it["views"].shape == (5, 3, 32, 32) and it["actions"].shape == (4, 2)
    assert torch.allclose(it["targets"]["position"], it["actions"][0])
    pos = torch.cat([torch.zeros(1, 2), it["actions"].cumsum(0)])  # positions relative to the first fixation
    assert (pos.abs() < 1).all() and ds.action_dim == 2
    # The glimpse is the normalised window around the fixation: undo the normalisation and compare.
    centres = S.sample_fixations(ds.saliency_map(2, src.image(2).float() / 255)[None], 5, 16,
                                 torch.Generator().manual_seed(0))
    assert centres.shape == (1, 5, 2)
    raw = it["views"] * ds.std[0] + ds.mean[0]
    assert raw.min() > -1e-4 and raw.max() < 1 + 1e-4


def run_args(out: Path, root: Path, method: str) -> list[str]:
    return tiny_args(out) + ["--dataset", "stl10-saccades", "--data-root", str(root), "--method", method,
                             "--image-size", "16", "--seq-len", "2", "--set", "data.saccade.fovea=24"]


def test_seqjepa_and_conv_ijepa_run_on_official_format_stl10_saccades(tmp_path) -> None:
    root = stl_tree(tmp_path / "data")
    assert main(run_args(tmp_path / "runs", root, "seqjepa")) == 0
    res = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    m = res["metrics"]
    for key in ("top1", "position_r2", "path_r2", "path_r2_by_eval_len", "path_r2_no_vision_by_eval_len"):
        assert key in m, key
    assert m["images_per_s"] > 0 and m["headline_source"]["top1"] == "aggregate"
    assert res["config"]["data"]["saccade"]["saliency"] == "precomputed"
    assert main(run_args(tmp_path / "runs2", root, "conv-ijepa")) == 0
    m2 = json.loads(next((tmp_path / "runs2").rglob("result.json")).read_text())["metrics"]
    assert "position_r2" in m2 and "path_r2" not in m2  # no sequence representation: no path integration


def test_missing_saliency_arrays_name_the_fix(tmp_path, capsys) -> None:
    root = stl_tree(tmp_path / "data", saliency=False)
    assert main(run_args(tmp_path / "runs", root, "seqjepa")) == 2
    err = capsys.readouterr().err
    assert "saliency_unlabeled.npy not found" in err and "data.saccade.saliency=spectral" in err
