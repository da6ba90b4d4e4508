"""Files written so that a crash or a full disk never leaves half of one behind."""
from __future__ import annotations

import contextlib
import os


def write_atomically(path: str, write) -> None:
    """`write(file)` into a temp file beside `path`, fsync, rename over `path`, fsync the folder.
    On any failure (a full disk) the temp file is removed and `path` is left as it was."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
