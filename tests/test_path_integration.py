"""Path integration (benchmark/probes/path_integration.py): composition of actions and known-answer probes.

An oracle whose aggregate is the summed actions must score R^2 ~ 1 (also with blank views, the "no
vision" control); a method that only sees views unrelated to the actions must score R^2 ~ 0; datasets
without ``path_composition`` and methods without a sequence representation get no path metrics.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from benchmark.config import DataConfig, ProbeConfig, RunConfig, TrainConfig
from benchmark.data.base import SequenceDataset
from benchmark.probes.path_integration import compose, path_integration
from methods.contract import DataSpec, Method, Representation

CFG = RunConfig(data=DataConfig(seq_len=3, num_workers=0), train=TrainConfig(progress=False),
                probe=ProbeConfig(epochs=60, batch_size=64, lr=1e-2, hidden=32, eval_seq_lens=(1, 4)))


class Walks(SequenceDataset):
    """Random 2-d steps (V-1, 2) with views (V, 3, 4, 4) of pure noise, independent of the steps."""

    num_classes, action_dim = 2, 2
    path_composition = "sum"

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(num_views=4, seed=seed, fixed=True)
        self.n = n

    def num_items(self) -> int:
        return self.n

    def labels_of(self) -> np.ndarray:
        return np.zeros(self.n, dtype=np.int64)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        return {"views": torch.from_numpy(rng.normal(size=(4, 3, 4, 4)).astype(np.float32)),
                "actions": torch.from_numpy(rng.uniform(-1, 1, (3, 2)).astype(np.float32)),
                "label": 0, "targets": {}}


class Probe(Method):
    """aggregate = w_act * (sum of actions) + w_vis * (mean pixel of each view, first two views)."""

    name = "probe-fixture"
    headline = {"top1": "aggregate"}

    def __init__(self, w_act: float, w_vis: float) -> None:
        super().__init__(None, DataSpec(image_size=4, action_dim=2, num_classes=2))
        self.w_act, self.w_vis = w_act, w_vis
        self.uses_actions = w_act != 0

    def representations(self) -> list[Representation]:
        return [Representation("encoder", 1, "view", "both"), Representation("aggregate", 4, "sequence", "invariant")]

    def encode(self, views, actions=None):
        b = views.shape[0]
        vis = views.mean(dim=(2, 3, 4))  # (B, V)
        vis = torch.cat([vis, vis.new_zeros(b, 2)], dim=1)[:, :2]
        act = actions.sum(dim=1) if actions is not None and actions.shape[1] else views.new_zeros(b, 2)
        return {"encoder": vis[:, :1, None].expand(b, views.shape[1], 1),
                "aggregate": torch.cat([self.w_act * act, self.w_vis * vis], dim=1)}


def run(method: Method, train: SequenceDataset | None = None) -> dict:
    return path_integration(method, CFG, train or Walks(256, 0), Walks(128, 1), torch.device("cpu"))


def test_compose_sum_and_quaternion_match_scipy() -> None:
    a = torch.randn(5, 3, 6, dtype=torch.float64)
    assert torch.allclose(compose(a, "sum"), a.sum(1))
    rots = Rotation.random(5 * 4, random_state=0)
    quats = rots.as_quat().reshape(5, 4, 4)
    rel = np.stack([(Rotation.from_quat(q[:-1]).inv() * Rotation.from_quat(q[1:])).as_quat() for q in quats])
    extra = np.random.default_rng(0).normal(size=(5, 3, 2))
    path = compose(torch.from_numpy(np.concatenate([rel, extra], -1)), "quaternion").numpy()
    want = np.stack([(Rotation.from_quat(q[0]).inv() * Rotation.from_quat(q[-1])).as_quat() for q in quats])
    want = np.where(want[:, 3:] < 0, -want, want)
    assert np.allclose(path[:, :4], want, atol=1e-9) and np.allclose(path[:, 4:], extra.sum(1))


def test_oracle_integrates_the_path_and_vision_only_does_not() -> None:
    oracle = run(Probe(w_act=1.0, w_vis=0.0))
    assert set(oracle["path_r2_by_eval_len"]) == {"2", "3", "4"}  # M_val = 1 maps to M = 2 (one action)
    assert oracle["path_r2"] == oracle["path_r2_by_eval_len"]["3"] and oracle["path_source"] == "aggregate"
    assert min(oracle["path_r2_by_eval_len"].values()) > 0.9
    assert min(oracle["path_r2_no_vision_by_eval_len"].values()) > 0.9  # blank views: actions alone suffice
    blind = run(Probe(w_act=0.0, w_vis=1.0))
    assert max(blind["path_r2_by_eval_len"].values()) < 0.2
    assert "path_r2_no_vision_by_eval_len" not in blind  # no actions consumed: no control to run


def test_no_path_metrics_without_composition_or_sequence_representation() -> None:
    class NoPath(Walks):
        path_composition = None

    assert run(Probe(1.0, 0.0), NoPath(16, 0)) == {}

    class ViewOnly(Probe):
        def representations(self):
            return [Representation("encoder", 1, "view", "both")]

    assert run(ViewOnly(1.0, 0.0)) == {}
    m = path_integration(Probe(1.0, 0.0), replace(CFG, probe=replace(CFG.probe, eval_seq_lens=())), Walks(32, 0),
                         Walks(16, 1), torch.device("cpu"))
    assert list(m["path_r2_by_eval_len"]) == ["3"]
