"""Start a program as an unprivileged user who can reach exactly the paths it needs.

Run by root as ``python -I -S _runas.py SPEC -- PROGRAM ARGS...`` (see
:func:`langchain_ha._proc.run_as`); SPEC is JSON: ``uid``, ``gid``, ``user``, ``reach`` (the
paths the program needs: the interpreter, the package, its data directories) and ``cwd``.

The paths may lie under directories the user cannot traverse (``/root`` 0700 holding a pyenv
interpreter, pytest's 0700 temporary directories).  Instead of opening those directories to
every local user, this launcher gives the program a private mount namespace: each such
directory is covered, in that namespace only, by an empty tmpfs (0711) into which exactly the
needed child is bind-mounted, so paths stay the same and nothing changes for anyone else.  A
directory counts as open only when everyone may list and traverse it (``o+rx``) or it belongs
to the user; a directory that is merely ``o+x`` is covered too, so the program does not depend
on a mode someone may take back.  The reached paths keep their own owners and modes.

Then it drops to the user (no supplementary groups, ``no_new_privs``) and execs the program,
which keeps this PID.  Stdlib only: it runs before ``langchain_ha`` is importable by the user.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_EXIT_SETUP = 126


class SetupError(Exception):
    """The view or the privilege drop could not be set up (the message says how to fix it)."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def is_open(path: Path, uid: int, gid: int) -> bool:
    """True when ``uid`` (group ``gid``) can traverse ``path`` without depending on a mode
    that only lets strangers through (``--x``)."""
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        return bool(mode & 0o100)
    if st.st_gid == gid and mode & 0o050 == 0o050:
        return True
    return mode & 0o005 == 0o005


def plan(reach: list[str], uid: int, gid: int) -> dict[Path, list[str]]:
    """The directories to cover, outermost first, each with the children to keep visible."""
    targets = sorted({Path(os.path.realpath(p)) for p in reach if os.path.exists(p)})
    # A reached directory the user cannot traverse is covered like any other when a path
    # inside it is reached: its other content stays out of sight, as it was.
    cover: dict[Path, set[str]] = {}
    for target in targets:
        for parent in sorted(target.parents, key=lambda p: len(p.parts)):
            if parent == Path("/") or is_open(parent, uid, gid):
                continue
            cover.setdefault(parent, set()).add(target.relative_to(parent).parts[0])
    return {d: sorted(cover[d]) for d in sorted(cover, key=lambda p: len(p.parts))}


def build_view(covers: dict[Path, list[str]]) -> None:
    """In a new private mount namespace, cover each directory with a tmpfs holding binds of
    its needed children."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Nothing mounted here may propagate back to the rest of the machine.
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    for directory, children in covers.items():
        fds = {name: os.open(directory / name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
               for name in children}
        try:
            _check(libc.mount(b"tmpfs", str(directory).encode(), b"tmpfs", 0,
                              b"mode=0711,size=64k,nr_inodes=1024"), f"tmpfs on {directory}")
            for name, fd in fds.items():
                point = directory / name
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    point.mkdir()
                else:
                    point.touch()
                _check(libc.mount(f"/proc/self/fd/{fd}".encode(), str(point).encode(), None,
                                  _MS_BIND | _MS_REC, None), f"bind {point}")
        finally:
            for fd in fds.values():
                os.close(fd)


def drop(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no supplementary groups, no way back up."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _check(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise SetupError("the privilege drop did not take")


def prepare(spec: dict[str, Any]) -> None:
    """Build the view (if one is needed) and drop privileges, as ``spec`` says."""
    uid, gid, user = int(spec["uid"]), int(spec["gid"]), str(spec["user"])
    covers = plan(list(spec.get("reach", [])), uid, gid)
    if covers:
        try:
            build_view(covers)
        except OSError as exc:
            first = next(iter(covers))
            raise SetupError(
                f"cannot give user {user} a private view of {first} ({exc}); run lcha as an "
                f"unprivileged user instead of root, or install Python and the project where "
                f"user {user} can reach them") from None
    drop(uid, gid)
    if spec.get("cwd"):
        os.chdir(spec["cwd"])


def main(argv: list[str]) -> int:
    """``_runas.py SPEC -- PROGRAM ARGS...``: never returns on success (exec)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: _runas.py SPEC -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        prepare(json.loads(argv[0]))
        os.execvp(argv[2], argv[2:])  # noqa: S606 - the program our caller chose, no shell
    except (SetupError, OSError) as exc:
        print(f"lcha: cannot start {argv[2]}: {exc}", file=sys.stderr, flush=True)
    return _EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
