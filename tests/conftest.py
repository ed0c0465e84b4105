"""Shared test set-up: loads every ``tests/support/fixtures_*.py`` module as a plugin.

Each area (simulator, server, database, cluster) keeps its process fixtures in its own
``fixtures_<area>.py`` so they can be used from any test directory.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

pytest_plugins = sorted(
    f"tests.support.{mod.name}"
    for mod in pkgutil.iter_modules([str(Path(__file__).parent / "support")])
    if mod.name.startswith("fixtures_")
)
