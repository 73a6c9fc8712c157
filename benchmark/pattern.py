"""The CPU pattern study's table, criteria and figure: ``python -m benchmark.pattern``.

Entry point only (the name users type); the code lives in ``benchmark.studies.pattern`` (docs/architecture.md).
"""

import sys

from benchmark.studies.pattern import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
