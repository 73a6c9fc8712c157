"""benchmark/core/batches.py: the batches of a run step by step, a resume mid-epoch, stop requests, data errors."""

from __future__ import annotations

import pytest
import torch

from benchmark.core.batches import StepBatches
from benchmark.core.fastpath import FastPaths


class Indexed(torch.utils.data.Dataset):
    """Item i = its index and the epoch it was drawn in (one 1x1x2 "view"); ``bad``: an index that fails."""

    def __init__(self, n: int, bad: int | None = None) -> None:
        self.n, self.bad, self.epoch = n, bad, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        if i == self.bad:
            raise OSError(f"cannot read object {i}")
        return {"views": torch.tensor([[[[float(i), float(self.epoch)]]]]), "actions": torch.zeros(0, 1),
                "label": 0, "targets": {}}


def run(ds, start: int, total: int, stop=None, batch_size: int = 4) -> tuple[StepBatches, list]:
    feed = StepBatches(ds, batch_size, seed=3, num_workers=0, device=torch.device("cpu"), fast=FastPaths(),
                       start=start, total=total, stop_requested=stop)
    seen = [(step, batch.views[:, 0, 0, 0, 0].int().tolist(), int(batch.views[0, 0, 0, 0, 1]))
            for step, batch in feed]
    return feed, seen


def test_steps_cross_epochs_and_a_resume_sees_the_same_batches():
    full_feed, full = run(Indexed(10), 0, 7)  # 2 steps per epoch (the last 2 samples are dropped)
    assert [s for s, _, _ in full] == list(range(7)) and not full_feed.interrupted
    assert [e for _, _, e in full] == [0, 0, 1, 1, 2, 2, 3]  # each step's items drawn in its own epoch
    for epoch in range(3):  # each epoch: 8 distinct samples, in an order of its own
        a, b = full[2 * epoch][1], full[2 * epoch + 1][1]
        assert len(set(a + b)) == 8
    assert full[0][1] + full[1][1] != full[2][1] + full[3][1]
    _, resumed = run(Indexed(10), 3, 7)  # a resume mid-epoch 1 (step 3 = its second batch)
    assert resumed == full[3:]


def test_a_stop_request_is_polled_once_per_finished_step():
    polls = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) == 3

    feed, seen = run(Indexed(16), 0, 8, stop)
    assert [s for s, _, _ in seen] == [0, 1, 2] and feed.interrupted  # polled after steps 1, 2, 3
    assert len(polls) == 3  # never before the first step of a start
    feed, seen = run(Indexed(16), 5, 8, lambda: False)
    assert [s for s, _, _ in seen] == [5, 6, 7] and not feed.interrupted


def test_a_data_error_is_raised_between_steps():
    with pytest.raises(OSError, match="cannot read object"):
        run(Indexed(8, bad=5), 0, 4)
