"""ScoreStore: the per-sample state of dynamic pruning, 24 bytes a sample, owned or memory-mapped."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .. import _C
from .._validate import _FLOAT32, _INT64, as_count, as_ema_decay, as_ids, as_nonfinite_mode, as_values
from .protocol import STORE_FIELDS

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

# Largest supported sample count; well above 2**32 - 1 (ids are int64 everywhere).
MAX_SAMPLES = 2**48
assert MAX_SAMPLES == _C.MAX_SAMPLES
# How long a reader waits for a weights write (a select) in another process before calling it dead.
WRITE_TIMEOUT_S = 120.0

_ERRORS = {1: "id out of range", 2: "non-finite loss", 3: "non-finite memory value"}


class ScoreStore:
    """Per-sample pruning state for `num_samples` samples with dense ids 0..N-1.

    Fields (numpy views, zero copy): ``loss`` (last loss, NaN = never seen), ``memory`` (last memory
    term), ``loss_mean`` / ``loss_var`` (exponentially weighted), ``times_selected`` (uint16,
    saturating at 65535), ``idle`` (uint16: pruned epochs since the sample was last kept, for
    ``max_gap``) and ``weight`` (this epoch's loss weight; 0 = pruned, so ``keep`` is ``weight > 0``).
    The selection score is not stored: each policy derives it from these fields (for EMP,
    ``loss + beta * memory``), see ``Pruner.scores()``.

    With ``path=`` the store lives in a new memory-mapped file (created atomically) that other
    processes, e.g. DataLoader workers, open with ``ScoreStore.open(path, readonly=True)``.
    """

    def __init__(self, num_samples: int, path: str | os.PathLike | None = None, *, _core=None):
        self.skipped = 0      # entries `update` skipped under nonfinite="skip", since this object was made
        if _core is not None:
            self._core = _core
            return
        n = as_count(num_samples, "num_samples", minimum=1, maximum=MAX_SAMPLES)
        if path is None:
            self._core = _C.Store.create(n)
        else:
            self._core = _C.Store.create_mapped(os.fspath(path), n)

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = True) -> "ScoreStore":
        """Map an existing store file (shared with every process that maps it)."""
        return cls(0, _core=_wrap_io(_C.Store.open, os.fspath(path), bool(readonly)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreStore":
        """Read a store file into private memory (checks header and data checksum)."""
        return cls(0, _core=_wrap_io(_C.Store.load, os.fspath(path)))

    def save(self, path: str | os.PathLike, metadata: bytes = b"") -> None:
        """Write a checksummed snapshot to `path` atomically (temp file, fsync, rename). Refuses the
        store's own memory-mapped file under any name (compared by device and inode)."""
        if not isinstance(metadata, (bytes, bytearray)):
            raise TypeError("metadata must be bytes")
        _wrap_io(self._core.save, os.fspath(path), bytes(metadata))

    def is_file(self, path: str | os.PathLike) -> bool:
        """True when `path` (any spelling, a symlink) is the file this store is mapped from."""
        return self._core.same_file_as(os.fspath(path))

    # --- the epoch stamp: which epoch's weights the store holds, read consistently across processes
    @contextlib.contextmanager
    def writing_weights(self, epoch: int | None):
        """Bracket a write of the weights (a resume, a host copy): readers in other processes wait
        until it is done, then see `epoch` stamped (None: no epoch)."""
        self._core.begin_weights_write()
        done = False
        try:
            yield
            done = True
        finally:
            self._core.end_weights_write(-1 if (epoch is None or not done) else int(epoch))

    def epoch_stamp(self, timeout: float = WRITE_TIMEOUT_S) -> int | None:
        """The epoch whose weights the store holds (None: none selected), once no write is under way."""
        epoch = _wrap_io(self._core.stamped_epoch, float(timeout))
        return None if epoch < 0 else epoch

    def read_weights(self, lo: int, hi: int, timeout: float = WRITE_TIMEOUT_S):
        """(epoch or None, a copy of weight[lo:hi]) from one consistent epoch: a select running in
        another process is waited out, never seen half-written."""
        epoch, weights = _wrap_io(self._core.read_weights, int(lo), int(hi), float(timeout))
        return (None if epoch < 0 else epoch), weights

    @property
    def metadata(self) -> bytes:
        """Metadata saved with the file this store was loaded/opened from (b'' otherwise)."""
        return self._core.metadata

    @property
    def num_samples(self) -> int:
        return self._core.size

    def __len__(self) -> int:
        return self._core.size

    @property
    def nbytes(self) -> int:
        """Bytes of per-sample state (24 per sample)."""
        return self._core.nbytes

    @property
    def path(self) -> str | None:
        return self._core.path or None

    @property
    def readonly(self) -> bool:
        return self._core.readonly

    def _array(self, name: str) -> np.ndarray:
        arr = self._core.array(name)
        if self._core.readonly:
            arr.flags.writeable = False
        return arr

    loss = property(lambda self: self._array("loss"), doc="last loss per sample (NaN: never seen)")
    memory = property(lambda self: self._array("memory"), doc="last memory term per sample (NaN: never given)")
    loss_mean = property(lambda self: self._array("loss_mean"), doc="exponentially weighted loss mean")
    loss_var = property(lambda self: self._array("loss_var"), doc="exponentially weighted loss variance")
    times_selected = property(lambda self: self._array("times_selected"), doc="epochs each sample was kept")
    idle = property(lambda self: self._array("idle"), doc="pruned epochs since each sample was last kept")
    weight = property(lambda self: self._array("weight"), doc="this epoch's loss weight, 0 = pruned")

    @property
    def keep(self) -> np.ndarray:
        """This epoch's keep flags (a new bool array, weight > 0)."""
        return self._array("weight") > 0

    def update(self, ids, losses, memory=None, *, nonfinite: str = "raise", ema_decay: float = 0.8) -> int:
        """Record per-sample losses (and memory terms) for `ids` in one C++ pass without the GIL.

        Duplicate ids in one call are applied in order: the last write wins for loss and memory,
        and the running mean/variance see every value. ``nonfinite="skip"`` skips (and counts)
        entries with NaN/inf values instead of raising. Returns the number skipped.
        """
        # The per-step path: arguments already as the core takes them pass with inline checks only
        # (each Python call costs microseconds when a training step has left the caches cold).
        if nonfinite != "raise" and nonfinite != "skip":
            as_nonfinite_mode(nonfinite)
        decay = ema_decay if type(ema_decay) is float and 0.0 <= ema_decay < 1.0 else as_ema_decay(ema_decay)
        ids_arr = ids if type(ids) is np.ndarray and ids.dtype is _INT64 and ids.ndim == 1 else as_ids(ids)
        length = ids_arr.shape[0]
        loss_arr = (losses if type(losses) is np.ndarray and losses.dtype is _FLOAT32 and losses.shape == (length,)
                    else as_values(losses, "losses", length))
        mem_arr = (memory if memory is None or (type(memory) is np.ndarray and memory.dtype is _FLOAT32
                                                and memory.shape == (length,))
                   else as_values(memory, "memory", length))
        # (a strided array is copied into a contiguous one by the binding)
        outcome = self._core.update(ids_arr, loss_arr, mem_arr, decay, nonfinite == "skip")
        if outcome is None:      # every entry applied
            return 0
        error, where, skipped = outcome
        if error:
            detail = {1: f"ids[{where}] = {ids_arr[where]} is outside [0, {self.num_samples})",
                      2: f"losses[{where}] = {loss_arr[where] if error == 2 else ''}",
                      3: f"memory[{where}] = {mem_arr[where] if error == 3 else ''}"}[error]
            raise ValueError(f"{_ERRORS[error]}: {detail} (nothing was written)")
        self.skipped += skipped
        return skipped

    # --- the Store protocol (see protocol.py): what a Pruner calls
    @property
    def worker_path(self) -> str | None:
        """The file DataLoader workers read this epoch's weights from: the store's own."""
        return self.path

    def batch_ids(self, ids) -> np.ndarray:
        """A batch's ids as this store takes them: int64 numpy (a tensor on any device is copied)."""
        if torch is not None and isinstance(ids, torch.Tensor) and ids.device.type != "cpu":
            ids = ids.cpu()
        return as_ids(ids)

    def record(self, ids, values, *, nonfinite: str = "raise", ema_decay: float = 0.8) -> None:
        """`update` from one (B, 1) or (B, 2) tensor of (loss[, memory]) rows: one copy to the host."""
        rows = values.detach().cpu().numpy() if torch is not None and isinstance(values, torch.Tensor) \
            else np.asarray(values)
        memory = np.ascontiguousarray(rows[:, 1]) if rows.shape[1] > 1 else None
        self.update(self.batch_ids(ids), np.ascontiguousarray(rows[:, 0]), memory, nonfinite=nonfinite,
                    ema_decay=ema_decay)

    def batch_weights(self, ids: np.ndarray):
        """This epoch's loss weight of each id as a CPU tensor; 1 for ids outside the selection (an
        evaluation pass)."""
        w = self._array("weight")[ids]
        return torch.from_numpy(np.where(w > 0, w, np.float32(1.0)))

    def select(self, config, seed: int, epoch: int, count: bool, partition=None):
        """Run a policy's config for (seed, epoch): (kept ids, weights, info). A `partition` that
        splits the samples over ranks supplies the segments and reductions of the C++ selection."""
        extra = {} if partition is None else partition.select_args()
        return self._core.select(config, seed, epoch, count, **extra)

    def current_selection(self, seed: int, epoch: int, partition=None):
        """The current epoch's (ids, weights), rebuilt from the stored weights."""
        extra = {} if partition is None else partition.layout_args()
        return self._core.current_selection(seed, epoch, **extra)

    def scores(self, config) -> np.ndarray:
        """Every sample's selection score under `config` (NaN: never seen)."""
        return self._core.scores(config)

    def check(self) -> None:
        """Nothing to check: a host update raises at once."""

    def host_arrays(self) -> dict:
        """Copies of every field (checkpoints)."""
        return {name: self._array(name).copy() for name in STORE_FIELDS}

    def restore(self, arrays: dict, epoch: int | None) -> None:
        """Overwrite every field (a resume), under the epoch stamp: workers see the old state or this one."""
        with self.writing_weights(epoch):
            for name in STORE_FIELDS:
                self._array(name)[:] = np.asarray(arrays[name])

    def reset(self) -> None:
        """Forget everything: all samples never seen, weight 1, never selected, not idle."""
        if self.readonly:
            raise ValueError("this store was opened read-only")
        self._core.reset()

    def flush(self) -> None:
        """Apply the update log, then write a memory-mapped store's pages to its file."""
        self._core.flush()

    def settle(self) -> None:
        """Apply the update log to the records now. Every read through the store does this itself;
        call it to time updates whole, or before another process reads a live store file."""
        self._core.settle()

    def __repr__(self) -> str:
        where = f"path={self.path!r}" if self.path else "in memory"
        return f"ScoreStore(num_samples={self.num_samples}, {where}, nbytes={self.nbytes})"


def _wrap_io(fn, *args):
    """A bad file (foreign, corrupt, truncated, another version) arrives from C++ as RuntimeError: the
    caller's bad input, so ValueError. I/O failures (missing file, disk full) stay OSError."""
    try:
        return fn(*args)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
