"""Checks of a run against cheap facts about its dataset, before any data is rendered or written.

``benchmark.core.runner`` calls :func:`check` after building the method and before building the datasets
(which renders a generated dataset, or decodes a cache) and before the run directory exists; the
launcher calls it for every run it is about to submit. The facts (:class:`DataSizes`) come from each
dataset's ``ENTRY.sizes`` (benchmark/data/entry.py): from the config for the generated datasets, from the
split files for 3DIEBench, and from the official split sizes for CIFAR-100, Tiny ImageNet and STL-10.
Nothing is decoded, so a wrong batch size or sequence length fails in well under a second. The training
loop keeps its own checks (they see the real data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmark.config import RunConfig
from benchmark.infra.errors import ConfigError


@dataclass(frozen=True)
class DataSizes:
    """What a run may ask of a dataset: pre-training samples per epoch and views per object."""

    train: int  # pre-training samples (objects, images) in one epoch
    views: int | None  # views per object; None = drawn on demand (augmentations, glimpses): any number
    what: str  # where the numbers come from, for the messages


def fixed_sizes(train: int, what: str) -> Callable[[RunConfig], DataSizes]:
    """An official dataset of ``train`` pre-training images, views drawn on demand."""
    return lambda cfg: DataSizes(train, None, what)


# ---------------------------------------------------------------------------------------- checks
def check(cfg: RunConfig, sizes: DataSizes, views_needed: int | None, world_size: int = 1,
          source_of: Callable[[str], str] | None = None) -> None:
    """Raise one ConfigError listing every setting of ``cfg`` that ``sizes`` cannot serve.

    ``views_needed``: views per training sample of the method at ``data.seq_len`` (None: not checked);
    ``world_size``: data-parallel processes sharing the global batch; ``source_of``: dotted key -> where
    it was set (benchmark.config.Overrides.source_of), named in the messages.
    """
    def key(k: str) -> str:
        return f"{k} (in {source_of(k)})" if source_of else k

    problems = []
    batch = cfg.train.batch_size
    if cfg.train.epochs > 0 and batch > sizes.train:
        problems.append(f"{key('train.batch_size')} = {batch} is larger than the {sizes.train} training samples of "
                        f"{cfg.dataset} ({sizes.what}), so an epoch holds no full batch; use --batch-size "
                        f"{max(1, sizes.train // 4)} or smaller")
    if cfg.train.epochs > 0 and batch % world_size:
        problems.append(f"{key('train.batch_size')} = {batch} does not split over {world_size} data-parallel "
                        f"processes; use a multiple of {world_size} so the global batch stays what the config says")
    if sizes.views is not None:
        if views_needed is not None and cfg.train.epochs > 0 and views_needed > sizes.views:
            problems.append(f"{cfg.method} at {key('data.seq_len')} = {cfg.data.seq_len} needs {views_needed} views "
                            f"per training sample but {cfg.dataset} has {sizes.views} per object ({sizes.what}); "
                            f"use a shorter --seq-len")
        head = key("probe.eval_seq_len") if cfg.probe.eval_seq_len else f"{key('data.seq_len')} (as probe.eval_seq_len)"
        lens = {head: cfg.eval_seq_len, **{key(f"probe.eval_seq_lens[{i}]"): m
                                           for i, m in enumerate(cfg.probe.eval_seq_lens)}}
        for name, m in lens.items():
            if m > sizes.views:
                problems.append(f"{name} = {m} needs {m} views per object for the probes but {cfg.dataset} has "
                                f"{sizes.views} ({sizes.what})")
    if problems:
        raise ConfigError("; ".join(problems) + ". Nothing was rendered or written")
