"""What a dataset tells the harness about itself: one :class:`DatasetEntry`, exported as ``ENTRY``.

A dataset is one module that ends in::

    ENTRY = DatasetEntry(build=build, spec=spec, table="image", defaults={...}, description="...",
                         check=check, sizes=sizes)

and one line of ``benchmark/core/registry.py``'s ``DATASETS``, which imports the module only when the name is
looked up. The launcher's data check, the pre-run size check (``benchmark/data/preflight.py``), config resolution
(the preset) and the aggregated tables (``table``) read the entry, not the dataset's name.

Looking an entry up should cost no torch (the aggregator reads ``table``; ``--help`` and config errors
read ``defaults``), so the built-in datasets keep their entry in a torch-free ``<loader>_entry.py`` beside
the loader (``cifar100_entry.py`` beside ``cifar100.py``) whose functions import the loader when called.
A dataset whose one module imports torch at the top works the same, it only makes lookups slower
(tests/fixtures/toy_plugins/toy_dataset.py). No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.infra.errors import DataError

if TYPE_CHECKING:
    from benchmark.config import RunConfig
    from benchmark.data.base import SequenceDataset
    from benchmark.data.preflight import DataSizes
    from methods.contract import DataSpec

# Which aggregated tables a dataset's runs go to (benchmark/reporting/tables.py):
#   "3diebench": the main table with the paper's 3DIEBench numbers, and the ablation tables;
#   "image":     one table per dataset with the classification and augmentation / position probes.
TABLES = ("3diebench", "image")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset as the harness sees it.

    ``build(cfg, split, num_views, fixed)``: split "train" or "val" as a SequenceDataset drawing
    ``num_views`` views per item (``fixed``: the same views every epoch, for the probes).
    ``spec(cfg)``: what a method must know to build itself (image size, action width, classes).
    ``table``: one of :data:`TABLES`. ``defaults``: the preset applied below the user's config.
    ``check(cfg)`` (None for generated datasets): raise a DataError when a file the run needs is not where
    the loader will look; cheap (no decoding), run by the launcher before any submission.
    ``sizes(cfg)`` (None: not checked): training samples and views per object without decoding, for
    the pre-run fit checks of ``benchmark/data/preflight.py``.
    """

    build: Callable[[RunConfig, str, int, bool], SequenceDataset]
    spec: Callable[[RunConfig], DataSpec]
    table: str
    defaults: dict = field(default_factory=dict)
    description: str = ""
    check: Callable[[RunConfig], None] | None = None
    sizes: Callable[[RunConfig], DataSizes] | None = None

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ValueError(f"DatasetEntry.table must be one of {', '.join(TABLES)}, got {self.table!r}")


def data_root(cfg: RunConfig) -> str | None:
    """The folder a run reads its dataset from: ``data.root`` (``--data-root``), else ``$SEQBENCH_DATA_ROOT``."""
    return cfg.data.root or os.environ.get("SEQBENCH_DATA_ROOT")


def need_files(folder: Path, names: Iterable[str], dataset: str, get_it: str) -> None:
    """A DataError naming every file of ``names`` missing from ``folder`` (for a dataset's ``check``)."""
    missing = [str(folder / n) for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{dataset} file(s) missing: {', '.join(missing)}. {get_it}")


def deferred(load: Callable[[], Any]) -> tuple[Callable[[RunConfig, str, int, bool], SequenceDataset],
                                               Callable[[RunConfig], DataSpec]]:
    """An entry's ``build`` and ``spec`` from a loader module with those two functions, imported by ``load()``
    only when one is called (so the entry module stays torch-free)."""
    def build(cfg: RunConfig, split: str, num_views: int, fixed: bool) -> SequenceDataset:
        return load().build(cfg, split, num_views, fixed)

    def spec(cfg: RunConfig) -> DataSpec:
        return load().spec(cfg)

    return build, spec
