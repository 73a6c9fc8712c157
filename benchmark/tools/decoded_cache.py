"""Build or check the decoded 3DIEBench cache (``benchmark/data/view_cache.py``) for a run's settings.

``python -m benchmark.tools.decoded_cache --data-root DIR --image-size 128 [--verify [--full]] [--set KEY=VALUE]``
resolves the config as ``benchmark.core.runner`` does (dataset preset, ``--set``) and builds, resumes or checks the
cache of each split. The command lives here, not in ``benchmark/data/``, because it needs the registry, which
itself imports the data modules (``benchmark.data`` never imports the registry).
"""

from __future__ import annotations

import argparse
import sys

from benchmark.config import layer, set_overrides, stack
from benchmark.core.registry import dataset_entry
from benchmark.core.resolve import resolve
from benchmark.data.base import available_cpus, loader_workers
from benchmark.data.view_cache import cache_path, inspect
from benchmark.infra.errors import SeqbenchError, user_message


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.decoded_cache", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="3diebench", choices=["3diebench", "3diebench-mini"])
    p.add_argument("--data-root", help="the extracted 3DIEBench/ folder (3diebench-mini: the generator's cache)")
    p.add_argument("--image-size", type=int, help="training resolution (default: the dataset's preset)")
    p.add_argument("--splits", default="train,val")
    p.add_argument("--verify", action="store_true", help="check the caches (no building); exit 1 if one is unusable")
    p.add_argument("--full", action="store_true", help="with --verify: check every chunk, not a sample")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field")
    args = p.parse_args(argv)
    try:
        flags = {"dataset": args.dataset, "data": {k: v for k, v in (("root", args.data_root),
                                                                     ("image_size", args.image_size)) if v is not None}}
        cfg = resolve(stack(layer(flags, "a command-line flag"), set_overrides(args.set),
                            layer({"data": {"decoded_cache": not args.verify}}, "--verify")))
        entry, bad = dataset_entry(cfg.dataset), 0
        if not args.verify:
            print(f"DataLoader workers: {loader_workers(cfg.data.num_workers)} (data.num_workers="
                  f"{cfg.data.num_workers}, {available_cpus()} CPU cores available to this process) for decoding")
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            ds = entry.build(cfg, split, 1, True)
            if args.verify:
                path = cache_path(ds, cfg.data.cache_dir)
                status = inspect(path, ds, full=args.full)
                bad += not status.ok
                print(f"{split}: {path}: {'ok' if status.ok else status.reason}")
            else:
                print(f"{split}: {ds.cache_path} ({len(ds.objects)} objects x {ds.views_per_object} views, "
                      f"{ds.image_size} px)")
    except SeqbenchError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
