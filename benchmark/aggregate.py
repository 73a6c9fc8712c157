"""Tables, plots and report.html from every result.json: ``python -m benchmark.aggregate``.

Entry point only (the name users type); the code lives in ``benchmark.reporting.aggregate`` (docs/architecture.md).
"""

import sys

from benchmark.reporting.aggregate import aggregate, load_runs, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
