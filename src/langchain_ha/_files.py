"""Files that hold secrets or state: private from the first byte, replaced atomically.

Every secret or state file (``secrets.json``, ``state.json``, Patroni's YAML, passfiles, logs)
is written through :func:`write_private`: the temporary file is created with
``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600 (never readable by others, not even for the
moment between a create and a chmod), owned by the right user before it gets its name,
fsynced, then renamed over the old file.  Its directory is made 0700 by
:func:`private_dir`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: str | Path, *, owner: tuple[int, int] | None = None) -> Path:
    """Create ``path`` (and missing parents) and make it 0700, owned by ``owner`` (uid, gid)
    when given.  Parents that already exist are left as they are."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if path.is_symlink():
        raise ValueError(f"{path}: a symlink where a private directory belongs")
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
    os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: str | Path, data: str | bytes, *,
                  owner: tuple[int, int] | None = None, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from creation, owned by ``owner``
    (uid, gid) when given.  A reader sees the old file or the new one, never a part."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)  # the umask may have taken bits away
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_private_log(path: str | Path, *, owner: tuple[int, int] | None = None) -> int:
    """A file descriptor appending to the log ``path``: created 0600 if new, never through a
    symlink, and made 0600 if an older version of us left it readable."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE_FILE)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd
