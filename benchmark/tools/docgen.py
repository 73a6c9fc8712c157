"""Regenerate the parts of the docs that the code knows: ``python -m benchmark.tools.docgen [--check]``.

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in a Markdown
file; everything outside the markers is hand-written. ``--check`` rewrites nothing and exits 1 when a
block is stale (tests/test_docs.py runs it, so the docs cannot drift from the code again).

Blocks: ``sweeps`` (the named sweeps of benchmark/core/sweeps.py, with their sizes), ``identity``
(the config keys that do not change a run's identity, benchmark/config.py NON_SEMANTIC) and
``metrics`` (every result.json metric key, declared beside the result writer in
benchmark/core/results.py and checked against real runs by the tests).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "slurm/README.md", "docs/protocol.md")


def sweeps_block() -> str:
    from benchmark.core.sweeps import SWEEPS

    return "\n".join(f"* `{name}` ({len(s)} runs): {s.description}" for name, s in SWEEPS.items())


def identity_block() -> str:
    from benchmark.config import NON_SEMANTIC

    keys = sorted(".".join(k) for k in NON_SEMANTIC)
    return ("These keys do not change a run's identity (its directory name): setting them on a finished or\n"
            "interrupted run keeps its run directory. Every other key does.\n\n"
            + ", ".join(f"`{k}`" for k in keys))


def metrics_block() -> str:
    from benchmark.core.results import METRIC_KEYS

    rows = ["| key | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in METRIC_KEYS.items()]
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[], str]] = {"sweeps": sweeps_block, "identity": identity_block,
                                        "metrics": metrics_block}
MARK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def render(text: str, where: str) -> str:
    """``text`` with every generated block rebuilt; an unknown block name is an error naming ``where``."""
    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise SystemExit(f"{where}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return f"{m.group(1)}{BLOCKS[name]()}\n{m.group(4)}"
    return MARK.sub(fill, text)


def stale(root: Path = ROOT) -> list[str]:
    """Docs whose generated blocks differ from what the code gives now."""
    return [doc for doc in DOCS if (root / doc).is_file()
            and render((root / doc).read_text(), doc) != (root / doc).read_text()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.docgen", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a generated block is stale")
    args = p.parse_args(argv)
    old = stale()
    if args.check:
        for doc in old:
            print(f"{doc}: generated blocks are stale; run python -m benchmark.tools.docgen")
        return 1 if old else 0
    from benchmark.infra.fileio import atomic_write_text

    for doc in old:
        atomic_write_text(ROOT / doc, render((ROOT / doc).read_text(), doc))
        print(f"rewrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
