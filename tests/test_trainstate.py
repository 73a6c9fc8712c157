"""benchmark/core/trainstate.py: when the training state is saved, what a resume restores, what it refuses."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from benchmark.config import to_dict
from benchmark.core.divergence import DivergenceWatch
from benchmark.core.resolve import resolve
from benchmark.core.rundir import RunDir
from benchmark.core.steplog import TrainClock
from benchmark.core.trainstate import Checkpointer, load_checkpoint
from benchmark.infra.errors import SeqbenchError


def cfg_of(tmp_path, every: int = 2):
    return resolve({"out": str(tmp_path), "train": {"checkpoint_every": every}})


def parts(tmp_path, cfg, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    watch, clock = DivergenceWatch(), TrainClock()
    ckpt = Checkpointer(RunDir(tmp_path / "run"), cfg, model, opt, torch.device("cpu"), 5, watch, clock,
                        data={"split:train": "sha256:aa"})
    return model, opt, watch, clock, ckpt


def train_steps(model, opt, ckpt, steps) -> list[float]:
    losses = []
    for step in steps:
        loss = (model(torch.randn(4, 3)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if ckpt is not None:
            ckpt.maybe_save(step + 1, losses[-1])
    return losses


def test_saved_every_n_steps_and_at_the_last_and_the_resume_continues_exactly(tmp_path):
    cfg = cfg_of(tmp_path)
    model, opt, _, clock, ckpt = parts(tmp_path, cfg)
    assert ckpt.resume() == 0 and ckpt.segments[0]["start_step"] == 0
    clock.start(0)
    saved = []
    for step in range(5):
        train_steps(model, opt, ckpt, [step])
        saved.append(load_checkpoint(ckpt.rd.checkpoint)["step"] if ckpt.rd.checkpoint.is_file() else None)
    assert saved == [None, 2, 2, 4, 5]  # checkpoint_every 2, and the last step (total 5)
    reference = train_steps(model, opt, None, [5, 6])  # what the next steps give without a resume

    model2, opt2, _, clock2, again = parts(tmp_path, cfg, seed=1)  # other initial weights: all come from the file
    assert again.resume() == 5 and again.loss == ckpt.loss
    assert [s["start_step"] for s in again.segments] == [0, 5] and again.segments[0]["end_step"] == 5
    assert clock2.before["steps"] == 5  # training time carried over for images/s
    assert train_steps(model2, opt2, again, [5, 6]) == reference  # weights, optimiser and RNG restored


def test_a_stop_is_saved_at_its_step_and_nonfinite_weights_never(tmp_path):
    cfg = cfg_of(tmp_path, every=100)
    model, opt, watch, _, ckpt = parts(tmp_path, cfg)
    ckpt.resume()
    train_steps(model, opt, ckpt, [0, 1, 2])
    assert not ckpt.rd.checkpoint.exists()
    ckpt.finish()  # the loop ended early (a stop): the state at its step is saved
    assert load_checkpoint(ckpt.rd.checkpoint)["step"] == 3 and ckpt.segments[-1]["end_step"] == 3
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    assert not ckpt.maybe_save(5, 0.1)  # the last step: due, but not finite
    assert watch.record["what"] == "parameters" and load_checkpoint(ckpt.rd.checkpoint)["step"] == 3
    ckpt.finish()
    assert load_checkpoint(ckpt.rd.checkpoint)["step"] == 3


def test_a_resume_under_another_config_or_other_data_is_refused(tmp_path):
    cfg = cfg_of(tmp_path)
    model, opt, _, _, ckpt = parts(tmp_path, cfg)
    ckpt.resume()
    train_steps(model, opt, ckpt, [0, 1])
    other = replace(cfg, train=replace(cfg.train, lr=1e-3))
    with pytest.raises(SeqbenchError, match="was trained with another config: train.lr"):
        parts(tmp_path, other)[-1].resume()
    _, _, _, _, ck = parts(tmp_path, cfg)
    ck.data = {"split:train": "sha256:bb"}
    with pytest.raises(SeqbenchError, match="was trained on other data: split:train"):
        ck.resume()


def test_a_checkpoint_of_the_older_layout_resumes(tmp_path):
    """Checkpoints written before per-rank RNG states kept one ``rng_cpu`` (and no segments or timing)."""
    cfg = cfg_of(tmp_path)
    model, opt, _, _, ckpt = parts(tmp_path, cfg)
    ckpt.rd.path.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 2,
                "rng_cpu": torch.get_rng_state(), "config": to_dict(cfg)},
               ckpt.rd.checkpoint)
    assert ckpt.resume() == 2 and math.isnan(ckpt.loss) and [s["start_step"] for s in ckpt.segments] == [2]
