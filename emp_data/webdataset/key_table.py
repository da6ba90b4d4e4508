"""KeyTable: sample key -> dense id for WebDataset streams read without an index (C++, shared by
processes through a memory-mapped file)."""
from __future__ import annotations

import fcntl
import os

from .. import _C
from .._validate import as_count
from .index import _decode_name, _encode_name
from ..store.host import MAX_SAMPLES


class KeyTable:
    """Sample key -> dense id for streams read without an index, in C++: ids in order of first
    appearance, stable for the life of the table.

    The table is a lock-free hash table in a memory-mapped file, so DataLoader workers and a
    restarted job share it and agree on every id. Keys are (url, key) as webdataset names samples,
    hashed to 64 bits; the full key is stored too, so two keys with the same hash get different ids
    (never merged) and are counted in `collisions`.

        KeyTable(max_samples)                       # anonymous memory: this process (and forks)
        KeyTable(max_samples, path="scores.keys")   # opens the file if it exists, else creates it
    ``key_bytes`` is the per-sample budget for stored keys (16 bytes of bookkeeping + the key). The
    slots and id entries get their disk blocks when the file is created; the key arena is reserved in
    1 MiB steps as keys arrive, so unused budget costs address space, not disk or memory.
    """

    def __init__(self, max_samples: int, path=None, *, key_bytes: int = 128, _hash_bits: int = 64):
        max_samples = as_count(max_samples, "max_samples", minimum=1, maximum=MAX_SAMPLES)
        key_bytes = as_count(key_bytes, "key_bytes", minimum=24, maximum=65536)
        self.path = None if path is None else os.fspath(path)
        self.existed = self.path is not None and os.path.exists(self.path)
        try:
            if self.path is None:
                self._table = _C.KeyTable.create_anonymous(max_samples, key_bytes, int(_hash_bits))
            elif self.existed:
                self._table = _C.KeyTable.open(self.path)
            else:
                self._table = _C.KeyTable.create(self.path, max_samples, key_bytes, int(_hash_bits))
        except RuntimeError as exc:      # a foreign, corrupt or crafted file: the caller's bad input
            raise ValueError(str(exc)) from None
        if self._table.max_ids != max_samples:
            raise ValueError(f"key table '{self.path}' numbers {self._table.max_ids} samples, not {max_samples}; "
                             "delete it to renumber for this pruner")
        self._hold()

    def _hold(self) -> None:
        """Every process that has the table open holds a shared lock on `<path>.lock` until it exits
        (the kernel drops it when a process dies, however it dies): `recover` runs only where it can
        take that lock alone, so it never scans a table that a live process is inserting into."""
        self._lock_fd = None
        if self.path is not None:
            self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def id_of(self, url: str, key: str) -> int:
        """The id of (url, key), numbering it if new. ValueError once more distinct samples appear
        than `max_samples` (the pruner's size)."""
        return self._table.id_of(_encode_name(url), _encode_name(key))

    def find(self, url: str, key: str) -> int:
        """The id of (url, key), or -1 if it has not been seen."""
        return self._table.find(_encode_name(url), _encode_name(key))

    def flush(self) -> None:
        """Write the table to its file (msync): the ids handed out so far survive a power loss."""
        self._table.flush()

    @property
    def clean(self) -> bool:
        """True when the table was flushed and nothing was inserted since."""
        return self._table.clean

    def recover(self) -> int:
        """After a crash: turn inserts that never finished into tombstones (their keys get fresh ids)
        and check every id; ValueError if the table is inconsistent (delete it to renumber). Runs
        only when no other live process has the table open (their inserts may be under way, which
        a scan would take for damage); otherwise it leaves the table to them and returns 0. Returns
        the number of slots repaired."""
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0            # live processes use it: nothing of theirs is a crash's leftover
        try:
            return self._table.recover()
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def key_of(self, sample_id: int) -> str:
        return _decode_name(self._table.key_of(int(sample_id)))

    def __len__(self) -> int:
        return len(self._table)

    @property
    def max_samples(self) -> int:
        return self._table.max_ids

    @property
    def collisions(self) -> int:
        """Distinct keys whose 64-bit hash equals an earlier key's (kept apart, never merged)."""
        return self._table.collisions

    # Workers and pickles carry the path; each process maps the file itself.
    def __getstate__(self):
        if self.path is None:
            raise ValueError("an in-memory KeyTable cannot be sent to another process; give it a path")
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self.existed = True
        self._table = _C.KeyTable.open(self.path)
        self._hold()

    def __del__(self):
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
