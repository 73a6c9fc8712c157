"""User-facing errors: the CLI prints their message as one paragraph, without a traceback."""

from __future__ import annotations


class SeqbenchError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class ConfigError(SeqbenchError):
    """Unknown config key, wrong type, bad value."""


class DataError(SeqbenchError):
    """Dataset missing, malformed or corrupt."""


def user_message(exc: BaseException) -> str:
    """The message of a SeqbenchError, also when a DataLoader worker re-raised it with a traceback."""
    text = str(exc)
    marker = f"{type(exc).__name__}: "
    if "Original Traceback" in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()
