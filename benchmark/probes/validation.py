"""The selection split: probes scored on training objects, for choosing settings without the held-out ones.

With ``probe.validation_objects: n`` (> 0) the final evaluation runs every probe a second time on the
*training* split alone: ``n`` training objects, class-balanced and the same for every method, seed and
setting (:func:`carve`), are set apart; the heads are fitted on the remaining training objects and scored
on these. The headline numbers of that second evaluation are written next to the held-out ones with a
``val_`` prefix (``val_top1``, ``val_rotation_r2``, ``val_knn_top1``, ...), plus a ``validation`` record
saying which objects were used. A grid of runs is then compared on the ``val_*`` numbers
(``python -m benchmark.studies.selection``), never on the held-out objects the reported numbers come from.

The pre-training itself is unchanged (it saw every training object, as in any SSL benchmark that tunes
on a split of its training set); what the split protects is the probes' held-out objects.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from benchmark.data.base import SequenceDataset
from benchmark.infra.errors import ConfigError

SPLIT_SEED = 20_241  # fixed: the split is a function of the training split's labels only, never of the run seed
RULE = ("class-balanced: n // C objects per class and one more for the first n % C classes in label order; "
        "inside a class, the first of a fixed-seed permutation of its training objects")


def carve(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Training-object indices -> (fit, validation): ``n`` validation objects, class-balanced, deterministic.

    Every class gives ``n // C`` objects and the first ``n % C`` classes (in label order) one more; inside a
    class the objects are taken in the order of a permutation seeded by :data:`SPLIT_SEED` and the class
    label, so the split depends on the labels alone. Every class keeps at least one fitting object.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if n <= 0:
        raise ConfigError(f"probe.validation_objects must be > 0 to carve a split, got {n}")
    counts = {int(c): int((labels == c).sum()) for c in classes}
    want = {int(c): n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
    short = [f"class {c}: {want[c]} of {counts[c]}" for c in want if want[c] >= counts[c]]
    if short:
        raise ConfigError(f"probe.validation_objects={n} leaves a class without training objects for the probes "
                          f"({'; '.join(short)}); use fewer (at most {len(classes) * (min(counts.values()) - 1)} "
                          f"for {len(labels)} training objects in {len(classes)} classes) or 0 to turn it off")
    val = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([SPLIT_SEED, int(c)]).permutation(len(members))
        val.append(members[order[:want[int(c)]]])
    val_idx = np.sort(np.concatenate(val))
    fit_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return fit_idx, val_idx


# What a dataset says about itself (benchmark/data/base.py SequenceDataset): the subset's are its base's.
SHARED = ("num_classes", "action_dim", "probe_targets", "label_note", "view_bank", "views_per_object",
          "path_composition")


class ObjectSubset(SequenceDataset):
    """The objects ``indices`` of ``base`` (positions in it), as a dataset of their own.

    Item ``i`` is object ``indices[i]`` of ``base`` (its views drawn by this dataset's own per-item
    generator); every other attribute (classes, probe targets, view bank) is the base dataset's.
    """

    def __init__(self, base: SequenceDataset, indices: np.ndarray) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        super().__init__(base.num_views, base.seed, base.fixed)
        self.epoch = base.epoch
        for name in SHARED:  # class attributes of SequenceDataset: set here, or they would shadow the base's
            setattr(self, name, getattr(base, name))

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found on the subset itself
        if name in ("base", "indices") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def num_items(self) -> int:
        return len(self.indices)

    def item(self, index: int, rng: np.random.Generator) -> dict:
        return self.base.item(int(self.indices[index]), rng)

    def labels_of(self) -> np.ndarray:
        return np.asarray(self.base.labels_of())[self.indices]

    def bank_targets(self, first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
        return self.base.bank_targets(first, second)

    def with_views(self, num_views: int) -> ObjectSubset:
        ds = copy.copy(self)
        ds.base = self.base.with_views(num_views)
        ds.num_views, ds.repeats = num_views, 1
        return ds


def split(train_ds: SequenceDataset, n: int) -> tuple[ObjectSubset, ObjectSubset, dict]:
    """(fit dataset, validation dataset, the ``validation`` record) carved from the training split."""
    labels = np.asarray(train_ds.labels_of())
    fit_idx, val_idx = carve(labels, n)
    per_class = {str(int(c)): int((labels[val_idx] == c).sum()) for c in np.unique(labels)}
    record = {"objects": int(len(val_idx)), "fit_objects": int(len(fit_idx)), "per_class": per_class,
              "seed": SPLIT_SEED, "rule": RULE}
    return ObjectSubset(train_ds, fit_idx), ObjectSubset(train_ds, val_idx), record


def prefixed(metrics: dict, record: dict) -> dict:
    """The scalar headline numbers of a validation evaluation as ``val_<name>``, and the ``validation`` record."""
    out: dict = {f"val_{k}": v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {**out, "validation": record}
