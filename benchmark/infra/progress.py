"""Progress reports: a tqdm bar on a terminal, plain lines in a log file.

A tqdm bar redraws one line with carriage returns; in a SLURM log or a file it becomes one long line
of bars. So :class:`Progress` draws a bar only when its stream (stderr) is a terminal, and otherwise
prints a plain line every ``every_frac`` of the total (10 %) or every ``every_s`` seconds (30),
whichever comes first, and one closing line with the count and the time taken. Every progress
report of seqbench (training, probe features, probe heads, dataset generation, downloads) goes
through here; nothing is printed when ``enabled`` is False.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def is_tty(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Count of ``total`` (None = unknown) things done; ``update(n)`` as they are, ``close()`` at the end.

    ``say``: where plain lines go (default: ``stream``, which defaults to stderr); ``leave`` only affects
    the terminal bar (False: erased when closed, for short inner loops). ``unit_scale``: sizes as 1.2M.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0, enabled: bool = True,
                 leave: bool = True, unit_scale: bool = False, stream: IO | None = None,
                 say: Callable[[str], None] | None = None, every_frac: float | None = 0.1,
                 every_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.done = self.start = initial
        self.enabled, self.every_s = enabled, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.say = say or (lambda line: print(line, file=self.stream, flush=True))
        self.postfix: dict[str, Any] = {}
        self.bar = None
        if enabled and is_tty(self.stream):
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=self.stream,
                            unit_scale=unit_scale, unit_divisor=1024 if unit_scale else 1000)
        self.step = max(1, math.ceil(total * every_frac)) if total and every_frac else None
        self.next_mark = self._mark_after(initial)
        self.t0 = self.last_line = time.monotonic()
        self.reported = initial  # the count the last plain line showed

    def _mark_after(self, n: int) -> float:
        return math.inf if self.step is None else (n // self.step + 1) * self.step

    def _fmt(self, n: float) -> str:
        return tqdm.format_sizeof(n, divisor=1024) if self.unit_scale else f"{n:g}"

    def line(self) -> str:
        """The plain progress line: ``desc: 30/100 step (30 %), 12 s, 2.5 step/s, loss=0.41``."""
        elapsed = time.monotonic() - self.t0
        count = self._fmt(self.done) + (f"/{self._fmt(self.total)}" if self.total else "")
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        rate = self._fmt(round((self.done - self.start) / elapsed, 2) if elapsed > 0 else 0)
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        return f"{self.desc}: {count} {self.unit}{pct}, {elapsed:.0f} s, {rate} {self.unit}/s{extra}"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.done >= self.next_mark or now - self.last_line >= self.every_s:
            self._report(now)

    def _report(self, now: float) -> None:
        self.say(self.line())
        self.last_line, self.reported = now, self.done
        self.next_mark = self._mark_after(self.done)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (the bar's postfix; the next plain line's tail)."""
        self.postfix = dict(values)
        if self.bar is not None:
            self.bar.set_postfix(values)

    def close(self) -> None:
        """Closes the bar; a closing plain line unless the last line already showed the final count."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and (self.reported != self.done or self.done == self.start):
            self._report(time.monotonic())
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it", *, enabled: bool = True,
             leave: bool = True, stream: IO | None = None, every_frac: float | None = 0.1,
             every_s: float = 30.0) -> Iterator[T]:
    """``iterable``, reporting each item taken from it (see :class:`Progress`); ``total`` defaults to its len."""
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled=enabled, leave=leave, stream=stream, every_frac=every_frac,
                  every_s=every_s) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def say(msg: str) -> None:
    """A message to stderr that does not break a bar being drawn there."""
    tqdm.write(msg, file=sys.stderr)
