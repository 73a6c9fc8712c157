"""Train and evaluate one run: ``python -m benchmark.run --method seqjepa --dataset 3diebench``.

Entry point only (the name users type); the code lives in ``benchmark.core.runner`` (docs/architecture.md).
"""

import sys

from benchmark.core.runner import RunOutcome, StopHook, StopRequested, build_parser, config_from_args, main, run_one  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
