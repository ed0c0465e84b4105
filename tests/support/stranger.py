"""Another local user, for the security tests: runs Python code as ``nobody``.

The tests run as root.  ``as_stranger(code, reach=[...])`` runs ``code`` in a fresh interpreter
as an unprivileged OS user (``nobody``, created when missing) and returns what it printed as
JSON.  The stranger is given a way to *traverse* to ``reach`` (through the same private mount
view the project's children get, see ``langchain_ha._runas``), as if the state directory sat
somewhere every user can walk to (``/srv``, a shared home): so what stops them is the modes
and credentials of our own files and services, never pytest's 0700 temporary directories.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langchain_ha._proc import child_env, python_reach, run_as, system_user

STRANGER = "nobody"


def stranger() -> str:
    """The name of an unprivileged user that is not ours (``nobody``, or one made for this)."""
    try:
        pwd.getpwnam(STRANGER)
        return STRANGER
    except KeyError:
        return system_user("lcha-test-stranger")


def as_stranger(code: str, *, reach: Iterable[str | Path] = (), timeout: float = 60) -> Any:
    """Run ``code`` (Python that prints one JSON document) as the stranger; its document."""
    assert os.geteuid() == 0, "the security tests run as root"
    argv = run_as([sys.executable, "-c", code], stranger(),
                  reach=[*python_reach(), *(str(p) for p in reach)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env=child_env(None, user=stranger()), cwd="/")
    assert done.returncode == 0, f"stranger's probe failed to run: {done.stdout}{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])
