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

from benchmark.config import run_dir, to_dict
from benchmark.core.train import EpochSampler
from benchmark.infra import distributed
from benchmark.infra.errors import ConfigError
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
    from benchmark.core.resolve import resolve
    from benchmark.core.runner import run_one
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


# ---------------------------------------------------------------- losses over the global batch

GATHER_METHODS = ("simclr", "vicreg", "sie")
GLOBAL_B, IMG = 8, 16


def _gather_batch():
    from methods.contract import Batch

    g = torch.Generator().manual_seed(5)
    return Batch(torch.randn(GLOBAL_B, 2, 3, IMG, IMG, generator=g, dtype=torch.float64),
                 torch.randn(GLOBAL_B, 1, 4, generator=g, dtype=torch.float64),
                 torch.zeros(GLOBAL_B, dtype=torch.long))


def _gather_method(name: str):
    """The method in float64 and eval mode: BatchNorm normalises with its running statistics on every rank
    (SyncBatchNorm, which the CPU cannot run, would give the same equality in train mode on GPUs)."""
    from benchmark.core.registry import METHODS
    from methods.contract import DataSpec

    torch.manual_seed(0)
    cls = METHODS[name]
    return cls(cls.Config(backbone="resnet18-w16"), DataSpec(IMG, 4, 5)).double().eval()


def _gather_rank(rank: int, port: int, report: str) -> None:
    import torch.distributed as dist

    from methods.contract import Batch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        full = _gather_batch()
        half = GLOBAL_B // 2
        rows = slice(rank * half, (rank + 1) * half)
        out = {}
        for name in GATHER_METHODS:
            method = _gather_method(name)
            step = distributed.wrap(method, torch.device("cpu"), sync_bn=True)  # CPU: no SyncBatchNorm
            loss = step(Batch(full.views[rows], full.actions[rows], full.labels[rows])).loss
            loss.backward()  # DDP averages the gradients over the 2 ranks
            out[name] = {"loss": loss.item(), "logged": distributed.mean(loss),
                         "grads": [p.grad.clone() for p in method.encoder_module().parameters()],
                         "sync": any(isinstance(m, torch.nn.SyncBatchNorm) for m in method.modules()),
                         "provenance": distributed.provenance(True, torch.device("cpu"))}
        torch.save(out, Path(report, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_compute_the_global_batch_losses_and_gradients(tmp_path):
    """SimCLR (NT-Xent negatives), VICReg and SIE (variance / covariance statistics): on 2 gloo ranks holding 4
    samples each, the loss (mean over ranks, as logged) and DDP's averaged encoder gradient equal one process's
    on the 8 samples; without the gather they would not."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_gather_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    full = _gather_batch()
    for name in GATHER_METHODS:
        method = _gather_method(name)
        loss = method.training_step(full).loss
        loss.backward()
        r0, r1 = ranks[0][name], ranks[1][name]
        assert (r0["loss"] + r1["loss"]) / 2 == pytest.approx(loss.item(), rel=1e-10), name
        assert r0["logged"] == r1["logged"] == pytest.approx(loss.item(), rel=1e-6), name  # all-reduced in float32
        for g0, g1, g in zip(r0["grads"], r1["grads"], (p.grad for p in method.encoder_module().parameters()),
                             strict=True):
            assert torch.equal(g0, g1)  # DDP leaves the same averaged gradient on every rank
            assert torch.allclose(g0, g, rtol=1e-8, atol=1e-14), name
        assert not r0["sync"] and r0["provenance"] == {"world_size": 2, "batchnorm_statistics": "per-rank"}
        # The gather matters: each half on its own (per-rank negatives / statistics) gives another loss.
        halves = [_gather_method(name).training_step(
            type(full)(full.views[s], full.actions[s], full.labels[s])).loss.item() for s in (slice(0, 4), slice(4, 8))]
        # (The equality above holds to 1e-10; this gap is at least 1e-5 relative for all three.)
        assert abs(sum(halves) / 2 - loss.item()) > 1e-5 * abs(loss.item()), name


def test_sync_bn_converts_in_place_and_keeps_parameters_and_keys(monkeypatch):
    """With several GPU ranks, ``train.sync_bn`` swaps every BatchNorm (EMA targets included) for SyncBatchNorm
    sharing the same parameters, so the optimiser built before and the checkpoint keys stay valid."""
    from benchmark.core.registry import METHODS
    from methods.contract import DataSpec

    cls = METHODS["byol"]
    method = cls(cls.Config(backbone="resnet18-w16"), DataSpec(IMG, 4, 5))
    params, keys = list(method.parameters()), list(method.state_dict())
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.modules())
    assert distributed.provenance(True, torch.device("cpu")) == {"world_size": 1, "batchnorm_statistics": "global"}
    distributed.wrap(method, torch.device("cpu"), sync_bn=True)  # one process: nothing to synchronise
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in method.modules())
    monkeypatch.setattr(distributed, "sync_bn_applies", lambda sync_bn, device: sync_bn)
    distributed.wrap(method, torch.device("cpu"), sync_bn=True)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in method.modules()) == n_bn > 0
    assert all(a is b for a, b in zip(params, method.parameters(), strict=True))
    assert list(method.state_dict()) == keys
