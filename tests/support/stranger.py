"""Another local user, for the security tests: runs Python code as ``nobody``.

The tests run as root.  ``as_stranger(code, reach=[...])`` runs ``code`` in a fresh interpreter
as an unprivileged OS user (``nobody``, created when missing) and returns what it printed as
JSON.  The stranger is given a way to *traverse* to ``reach`` (through the same private mount
view the project's children get, see ``langchain_ha/_runas.py``), as if the state directory sat
somewhere every user can walk to (``/srv``, a shared home): so what stops them is the modes
and credentials of our own files and services, never pytest's 0700 temporary directories.

Only ``_runas.py`` (a stdlib script) is used from the project, so the same probes can be run
against an older version of the code to see them fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STRANGER = "nobody"

CONNECT = """
import json, psycopg
out = {{}}
for name, conninfo in {attempts}.items():
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            out[name] = "logged in as " + conn.execute("select current_user").fetchone()[0]
    except Exception as exc:
        out[name] = type(exc).__name__ + ": " + (str(exc).strip().splitlines() or [""])[-1]
print(json.dumps(out))
"""
"""Try each conninfo of ``attempts`` (a JSON object name → conninfo)."""

READ = """
import json
out = {{}}
for path in {paths}:
    try:
        with open(path, "rb") as f:
            out[path] = "read %d bytes" % len(f.read())
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""
"""Try to read each file of ``paths`` (a JSON list)."""

UNIX_CONNECT = """
import json, socket
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect({path!r})
    result = "connected"
except OSError as exc:
    result = type(exc).__name__
print(json.dumps(result))
"""
"""Try to connect to the unix socket ``path``."""


def stranger() -> str:
    """The name of an unprivileged user that is not ours (``nobody``, or one made for this)."""
    try:
        pwd.getpwnam(STRANGER)
        return STRANGER
    except KeyError:
        name = "lcha-test-stranger"
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=False, capture_output=True)
        return name


def python_paths() -> list[str]:
    """This interpreter's prefixes and ``sys.path``: what a Python child must reach."""
    paths = {sys.base_prefix, sys.prefix, sysconfig.get_paths()["purelib"]}
    paths.update(p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p))
    return sorted(paths)


def run_as_os_user(argv: Sequence[str], user: str, reach: Iterable[str | Path] = (),
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` through the project's launcher, ``reach`` made reachable."""
    assert os.geteuid() == 0, "the security tests run as root"
    spec = importlib.util.find_spec("langchain_ha._runas")
    assert spec is not None and spec.origin, "langchain_ha/_runas.py not found"
    entry = pwd.getpwnam(user)
    view = {"uid": entry.pw_uid, "gid": entry.pw_gid, "user": user, "cwd": "/",
            "reach": [*python_paths(), *(str(p) for p in reach)]}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-I", "-S", spec.origin, json.dumps(view), "--",
                           *argv], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env, cwd="/")


def as_stranger(code: str, *, reach: Iterable[str | Path] = (), timeout: float = 60) -> Any:
    """Run ``code`` (Python that prints one JSON document) as the stranger; its document."""
    done = run_as_os_user([sys.executable, "-c", code], stranger(), reach, timeout)
    assert done.returncode == 0, f"the probe failed to run: {done.stdout}{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])
