"""The one error type for mistakes a user can fix from the command line."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix; the CLI prints it as one line, without a traceback."""


class InvalidInput(ValueError):
    """An application's input is malformed; the server answers 422 with this message."""
