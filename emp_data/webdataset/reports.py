"""The small files DataLoader workers write beside the store for the training process: the passes
read of each selection (so an epoch read twice is noticed) and the bytes received from shards."""
from __future__ import annotations

import fcntl
import json
import os


# Full passes that DataLoader workers have read of each selection, in a small file beside the store:
# workers of a new epoch that was never selected (a forgotten set_epoch, non-persistent workers)
# find the passes of the last one there and warn. A selection is named by the store file's identity
# and its epoch stamp, so a new store file (a new job) starts afresh.
def _selection_name(store_path: str, epoch: int) -> str:
    st = os.stat(store_path)
    return f"{st.st_dev}:{st.st_ino}:{epoch}"


def passes_done(store_path: str, epoch: int) -> int:
    try:
        with open(store_path + ".passes") as f:
            return int(json.load(f).get(_selection_name(store_path, epoch), 0))
    except (OSError, ValueError):
        return 0


def pass_done(store_path: str, epoch: int) -> None:
    try:
        with open(store_path + ".passes", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)          # workers finish at the same time
            f.seek(0)
            text = f.read()
            counts = json.loads(text) if text else {}
            name = _selection_name(store_path, epoch)
            counts = {name: int(counts.get(name, 0)) + 1}   # only the latest selection matters
            f.seek(0)
            f.truncate()
            json.dump(counts, f)
    except (OSError, ValueError):
        pass                                        # a hint only: never fail a pass over it


def reset_received(store_path: str) -> None:
    try:
        with open(store_path + ".received", "w"):
            pass
    except OSError:
        pass                     # a count only: never fail a stream over it


def report_received(store_path: str, nbytes: int) -> None:
    """One line per shard read; O_APPEND writes of a short line do not interleave between workers."""
    try:
        fd = os.open(store_path + ".received", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{int(nbytes)}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def workers_received(store_path: str) -> int:
    try:
        with open(store_path + ".received") as f:
            return sum(int(line) for line in f if line.strip().isdigit())
    except OSError:
        return 0
