"""Probe a checkpoint you bring (ours, solo-learn, torchvision): ``python -m benchmark.evaluate``.

Entry point only (the name users type); the code lives in ``benchmark.tools.evaluate_checkpoint``
(docs/architecture.md).
"""

import sys

from benchmark.tools.evaluate_checkpoint import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
