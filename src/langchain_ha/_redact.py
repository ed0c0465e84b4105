"""Secrets out of everything printed: logs, error messages, status output.

:func:`redact` masks what looks like a credential: ``password=...`` in a libpq conninfo,
``user:password@`` in a URL, ``PGPASSWORD=...``, ``Authorization: Bearer/Basic ...``, and
``"password": "..."``-style pairs in JSON or a dict's repr.  :class:`RedactingFormatter` applies
it to every formatted log record, tracebacks included, so an exception whose message carries a
conninfo never reaches a log file in clear.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_KEYS = r"(?:password|passwd|pgpassword|secret|token|api_key|apikey|admin_token)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "password": "x" / 'password': 'x' (JSON, a dict's repr)
    (re.compile(rf"""(["']{_KEYS}["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2""", re.IGNORECASE),
     rf"\1\2{MASK}\2"),
    # password='x y' / password=x (libpq conninfo, env assignments, query strings)
    (re.compile(rf"""(\b{_KEYS}\s*=\s*)(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|[^\s&'"]+)""",
                re.IGNORECASE), rf"\1{MASK}"),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE), rf"\1{MASK}@"),
    # Authorization: Bearer x / Basic x
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\1 {MASK}"),
)


def redact(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``***``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output (message and traceback) is :func:`redact`-ed."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_logging(fmt: str | None = None) -> None:
    """Give every handler of the root logger a :class:`RedactingFormatter` (keeping ``fmt``)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt))
