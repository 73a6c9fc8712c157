"""Data parallelism on CPU: 2 processes with gloo keep the config's global batch, stop at the same step
and leave the writing to rank 0; plus the sharding and environment parsing it relies on."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
from pathlib import Path

import pytest
import torch

from benchmark import distributed
from benchmark.config import run_dir, to_dict
from benchmark.errors import ConfigError
from benchmark.train import EpochSampler
from tests.test_resume import tiny_cfg


def test_rank_shards_make_up_the_single_process_batches():
    single = list(EpochSampler(22, 4, seed=3))
    shards = [list(EpochSampler(22, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 20 and [len(s) for s in shards] == [10, 10]
    for step in range(5):  # global batch of step s = rank 0's 2 samples + rank 1's 2 samples
        assert single[4 * step:4 * step + 4] == shards[0][2 * step:2 * step + 2] + shards[1][2 * step:2 * step + 2]
    resumed = EpochSampler(22, 4, seed=3, rank=1, world_size=2)
    resumed.set_epoch(0, start_batch=3)
    assert list(resumed) == shards[1][6:]


def test_environment_parsing_and_batch_split():
    assert distributed.from_environ({}) == distributed.DistEnv(0, 1, 0)
    assert distributed.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == distributed.DistEnv(3, 4, 1)
    srun = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}
    assert distributed.from_environ(srun) == distributed.DistEnv(1, 2, 1)
    # the batch script itself (no srun step) is a single process even in a multi-task allocation
    assert distributed.from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}).world_size == 1
    assert distributed.local_batch_size(512, distributed.DistEnv(0, 4)) == 128
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        distributed.local_batch_size(4, distributed.DistEnv(0, 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, ports: list[int], cfg_dict: dict, report: str, cache: str) -> None:
    """One rank: a run interrupted by rank 1's stop hook alone, then resumed to the end."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(ports[0]), GLOO_SOCKET_IFNAME="lo", SEQBENCH_CACHE=cache)
    torch.set_num_threads(1)
    from benchmark.registry import resolve
    from benchmark.run import run_one
    from methods.seqjepa import SeqJEPA

    batch_sizes: list[int] = []
    step = SeqJEPA.training_step

    def recording(self, batch):
        batch_sizes.append(batch.views.shape[0])
        return step(self, batch)

    SeqJEPA.training_step = recording
    polls: list[int] = []

    def only_rank1_wants_to_stop() -> bool:
        polls.append(1)
        return rank == 1 and len(polls) >= 2

    cfg = resolve(cfg_dict)
    first = run_one(cfg, stop_requested=only_rank1_wants_to_stop, log=lambda m: None)
    steps_first = len(polls)
    os.environ["MASTER_PORT"] = str(ports[1])
    second = run_one(cfg, log=lambda m: None)
    Path(report, f"rank{rank}.json").write_text(json.dumps({
        "first": first.status, "steps_first": steps_first, "second": second.status,
        "has_result": second.result is not None, "batch_sizes": batch_sizes}))


def test_two_gloo_processes_train_like_one(tmp_path):
    cfg = tiny_cfg(tmp_path / "runs", **{"train.epochs": 1})  # 3 steps
    report = tmp_path / "report"
    report.mkdir()
    ctx = mp.get_context("spawn")
    ports = [_free_port(), _free_port()]
    procs = [ctx.Process(target=_rank_main, args=(r, ports, to_dict(cfg), str(report), os.environ["SEQBENCH_CACHE"]))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((report / f"rank{r}.json").read_text()) for r in range(2))

    # rank 1 alone asked to stop after step 2: both ranks stopped there
    assert r0["first"] == r1["first"] == "interrupted" and r0["steps_first"] == r1["steps_first"] == 2
    assert r0["second"] == r1["second"] == "complete"
    # the global batch stays train.batch_size (4): each of the 2 ranks trains on 2 samples per step
    assert r0["batch_sizes"] == r1["batch_sizes"] == [2] * 3
    # rank 0 alone writes: one result, one log line per step, one checkpoint
    d = run_dir(cfg)
    assert r0["has_result"] and not r1["has_result"]
    result = json.loads((d / "result.json").read_text())
    assert result["provenance"]["train_steps"] == result["provenance"]["train_total_steps"] == 3  # = 1 process
    assert [json.loads(ln)["step"] for ln in (d / "log.jsonl").read_text().splitlines()] == list(range(1, 4))
    ck = torch.load(d / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 3 and len(ck["rng"]) == 2  # each rank's RNG state, for an exact resume
    assert sorted(p.name for p in d.iterdir()) == ["checkpoint.pt", "config.yaml", "log.jsonl", "result.json"]
