"""Training throughput and fast-path ratios: ``python -m benchmark.speed``.

Entry point only (the name users type); the code lives in ``benchmark.tools.speed`` (docs/architecture.md).
"""

import sys

from benchmark.tools.speed import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
