"""Files seqbench writes: one atomic-write helper, one lock, one disk-full message.

* :func:`atomic_write` (and the ``_text`` / ``_bytes`` / :func:`atomic_torch_save` variants) writes to a
  temporary file in the destination folder, fsyncs it and renames it over the destination, so a reader
  (or a crash, or ``kill -9``) never sees half a file: the previous version stays until the new one is
  complete. ``tempfile.mkstemp`` creates its file with mode 0600; the helper gives it the mode a plain
  ``open(path, "w")`` would (0666 minus the umask, so 0644 under umask 022), so collaborators can read
  results and tables.
* :class:`DiskFull` turns ENOSPC / EDQUOT / EFBIG (a full disk, a quota, ``ulimit -f``) and torch's
  ``unexpected pos`` (what ``torch.save`` reports for the same failures) into one clear message; the
  temporary file is removed and the previous file is intact.
* :func:`exclusive_lock` is an ``fcntl.flock`` on a lock file that records who holds it ("host, pid"),
  so a second process can say where the work is already running.
* :func:`now`: the UTC timestamp every record seqbench writes carries (result.json, manifests).

No torch import at module level: the aggregator uses this module and must not pay for torch.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from benchmark.infra.errors import SeqbenchError

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# torch.save swallows the OSError of a failed write and raises RuntimeError with one of these instead.
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def now() -> str:
    """The current UTC time to the second, ISO 8601 (``2026-01-31T12:00:00+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class DiskFull(SeqbenchError):
    """No space (or quota, or file-size limit) left while writing a file; nothing half-written remains."""


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (no window with another umask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """Mode of a new file as ``open()`` would create it: 0666 & ~umask."""
    return 0o666 & ~current_umask()


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there now"
    except OSError:
        return "free space unknown"


def disk_full_error(path: Path, what: str, cause: BaseException | None = None) -> DiskFull:
    """The one message for a write that ran out of space (or hit a quota or ``ulimit -f``)."""
    reason = f"{os.strerror(cause.errno)}" if isinstance(cause, OSError) and cause.errno else "the write failed"
    return DiskFull(f"could not write {what} {path}: {reason} ({_free_space(path.parent)}). The disk is full, "
                    f"a quota is exhausted or a file-size limit (ulimit -f) applies. Nothing was half-written: "
                    f"the previous version of the file, if any, is intact and no finished step is lost. Free "
                    f"space (or point --out at another disk), then re-run the same command to resume.")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILURES)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], what: str = "file") -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``; fsync; rename it over ``path``.

    The file gets the umask's mode (see the module docstring). On any failure the temporary file is
    removed and ``path`` is untouched; a full disk raises :class:`DiskFull` with ``what`` in its message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, default_mode())
        except OSError:  # a filesystem without modes (some network/FUSE mounts): keep what it gives
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError) and is_disk_full(e):
            raise disk_full_error(path, what, e) from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, what: str = "file") -> Path:
    return atomic_write(path, lambda f: f.write(data), what)


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()), what)


def atomic_torch_save(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """``torch.save(obj)`` through :func:`atomic_write` (a kill mid-write never leaves a truncated file)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), what)


# ---------------------------------------------------------------------------------------- locks
class LockHeld(SeqbenchError):
    """Another process holds the lock; ``holder`` is what it wrote into the lock file ("host, pid")."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def holder_text() -> str:
    return f"host {socket.gethostname()}, pid {os.getpid()}"


@contextmanager
def exclusive_lock(path: str | Path, what: str, wait_s: float = 0.0,
                   on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Raises :class:`LockHeld` ("``what`` is running elsewhere (host, pid)") if another process holds it
    for longer than ``wait_s`` seconds. The holder writes "host, pid" into the file; the file is removed
    when the lock is released. Removing it is safe: a process that opened the old file re-checks after
    locking that the path still names the file it locked, and starts over if not. On a filesystem
    without locks (``ENOLCK``) the block runs unlocked after a warning through ``on_wait``.
    """
    path = Path(path)
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # removed again if left empty
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise SeqbenchError(f"cannot create {e.filename or path.parent}: permission denied; choose a folder you "
                            f"can write to (--out)") from None
    fd = _acquire(path, what, wait_s, on_wait)
    if fd is None:  # no lock support on this filesystem
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder_text()}, since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)  # releases the flock
        for d in created:  # deepest first: a block that wrote nothing leaves no empty folders behind
            try:
                d.rmdir()
            except OSError:
                break


def _acquire(path: Path, what: str, wait_s: float, on_wait: Callable[[str], None] | None) -> int | None:
    """An open descriptor of ``path`` holding its flock (waiting up to ``wait_s`` s for another holder), or
    None, after a warning, where the filesystem has no locks."""
    import fcntl

    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        except PermissionError:
            raise SeqbenchError(f"cannot create the lock file {path}: permission denied; choose a folder you "
                                f"can write to (--out)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockHeld(f"{what} is running elsewhere ({holder}); it holds the lock {path}. "
                               f"Nothing was done here. Wait for it to finish (then re-run this command), or "
                               f"stop it first.", holder) from None
            if on_wait is not None and not said:
                on_wait(f"waiting up to {wait_s:.0f} s for the lock {path} held by {holder}")
                said = True
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            continue
        except OSError as e:  # no lock support on this filesystem
            os.close(fd)
            if on_wait is not None:
                on_wait(f"warning: cannot lock {path} ({e.strerror}); two processes running {what} at once "
                        f"would not be detected")
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file between our open and our lock: start over


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "holder unknown"


# ---------------------------------------------------------------------------------------- digests
FULL_DIGEST_BYTES = 64 * 2**20  # files up to this size are hashed whole; larger ones are sampled


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, or ``sha256-sampled:<hex>`` of its size and 64 evenly spread 64 KiB
    blocks for files over 64 MiB (saliency arrays run to gigabytes; a sample still tells two files apart
    in practice, and costs milliseconds)."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_DIGEST_BYTES:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(str(size).encode())
        block, n = 2**16, 64
        for i in range(n):
            f.seek((size - block) * i // (n - 1))
            h.update(f.read(block))
    return f"sha256-sampled:{h.hexdigest()}"
