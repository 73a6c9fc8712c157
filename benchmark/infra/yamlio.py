"""The one YAML loader of seqbench: PyYAML's safe loader with YAML 1.2 floats.

PyYAML implements YAML 1.1, whose floats need a dot and a signed exponent: ``1e-3`` and ``5e-4`` load
as the *strings* "1e-3" and "5e-4", and ``1.0e5`` as the string "1.0e5". YAML 1.2 (core schema) reads
all three as numbers, as every user writing a learning rate expects. :class:`Loader` adds the YAML 1.2
float rule and changes nothing else: ints stay ints, ``.inf`` / ``-.inf`` / ``.nan`` are floats, and
``nan``, ``inf`` or ``1e-3abc`` stay strings (so a typed config field rejects them by name). Every
config file, sweep file, cluster preset and ``--set`` value goes through :func:`load`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2 core schema floats (plus YAML 1.1's "_" separators and base-60 form, which PyYAML accepts).
# Every alternative needs a dot, an exponent or a special name, so no integer matches.
FLOAT_12 = re.compile(r"""^(?:
    [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5  1.  1.5e-3  1.0e5
  | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                 # 1e-3  5E4 (strings in YAML 1.1)
  | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?          # .5  -.5e3
  | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*      # 1:30.5 (YAML 1.1 base 60, as PyYAML)
  | [-+]?\.(?:inf|Inf|INF)
  | \.(?:nan|NaN|NAN)
)$""", re.X)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats."""


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes every string :class:`Loader` would read as a float (``"1e-3"``)."""


# A scalar's implicit rules are tried in order: this one comes after YAML 1.1's float rule (which it contains) and
# the int, bool, null and timestamp rules (none of which it overlaps).
yaml.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+.0123456789"), Loader=Loader, Dumper=Dumper)


def load(text: str) -> Any:
    """Parse one YAML document (``yaml.safe_load`` with YAML 1.2 floats); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader


def dump(data: Any) -> str:
    """``yaml.safe_dump(data, sort_keys=False)`` that :func:`load` reads back unchanged."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False)
