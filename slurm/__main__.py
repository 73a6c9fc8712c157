"""``python -m slurm`` = ``python -m slurm.launch``."""

import sys

from slurm.launch import main

sys.exit(main())
