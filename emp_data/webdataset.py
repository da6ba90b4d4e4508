"""Dynamic pruning of WebDataset tar shards: stable sample ids from a header index, and a stream
that drops pruned samples before any decoder runs (and, with an index, before their bytes are read).

    index = emp_data.build_index("data/shard-{000000..000099}.tar", out="data/index.empidx")
    pruner = emp_data.Pruner(index.num_samples, policy="emp", prune_ratio=0.7, epochs=E,
                             store_path="data/scores.emp")           # shared with loader workers
    ds = emp_data.PrunedIterableDataset("data/shard-{000000..000099}.tar", pruner, index="data/index.empidx")
    pipeline = ds.decode() ... or wds.DataPipeline(ds, wds.decode(...), wds.to_tuple(...))
    for epoch in range(E):
        ds.set_epoch(epoch)                                          # selects the epoch's samples
        for batch in DataLoader(pipeline, batch_size=..., num_workers=...):
            ...pruner.loss(per_sample, batch["__id__"], logits=logits)

Sample ids and grouping follow webdataset: consecutive members whose names share the part before
the first dot of the basename form one sample; the rest of the name, lower-cased, is the field.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import warnings
import zipfile
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _C
from .pruner import Pruner
from ._validate import as_count
from .store import MAX_SAMPLES, ScoreStore
from .wids_index import WidsIndex, looks_like_json

INDEX_FORMAT = "emp_data.shard_index"
INDEX_VERSION = 1
_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def expand_urls(urls) -> list[str]:
    """A list of shard paths from a list, or a brace pattern like 'shard-{000..009}.tar'."""
    if isinstance(urls, (str, os.PathLike)):
        from braceexpand import braceexpand

        out = list(braceexpand(os.fspath(urls)))
    else:
        out = [os.fspath(u) for u in urls]
    if not out:
        raise ValueError("no shard urls given")
    return out


def _is_url_list(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return True
    return isinstance(source, (list, tuple)) and all(isinstance(u, (str, os.PathLike)) for u in source)


def _split_name(name: str):
    match = _KEY_RE.match(name)
    if not match:
        return None, None
    return match.group(1), match.group(2).lower()


class ShardIndex:
    """Per-shard sample keys and member offsets/sizes, with global dense ids in shard order."""

    def __init__(self, meta: dict, arrays: dict):
        self.meta = meta
        self.shards = meta["shards"]
        self.num_samples = int(meta["num_samples"])
        self.duplicate_keys = int(meta.get("duplicate_keys", 0))
        self._a = arrays

    # --- lookup
    def shard_range(self, shard: int) -> tuple[int, int]:
        """Global ids [first, last) of the samples in shard number `shard`."""
        sfs = self._a["shard_first_sample"]
        return int(sfs[shard]), int(sfs[shard + 1])

    def sample_key(self, sample_id: int) -> str:
        ko = self._a["key_offsets"]
        return _decode_name(bytes(self._a["keys"][ko[sample_id]:ko[sample_id + 1]]))

    def sample_members(self, sample_id: int):
        """[(field, offset, size), ...] of one sample."""
        fm = self._a["sample_first_member"]
        eo = self._a["ext_offsets"]
        exts = self._a["exts"]
        out = []
        for m in range(int(fm[sample_id]), int(fm[sample_id + 1])):
            out.append((_decode_name(bytes(exts[eo[m]:eo[m + 1]])), int(self._a["member_offset"][m]),
                        int(self._a["member_size"][m])))
        return out

    # --- persistence
    def save(self, path) -> None:
        path = os.fspath(path)
        meta = dict(self.meta, checksum=_arrays_checksum(self._a))
        _write_atomically(path, lambda f: np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                                                   **self._a))

    @classmethod
    def load(cls, path, check_shards: bool = True) -> "ShardIndex":
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except Exception as exc:  # noqa: BLE001 - numpy, zipfile and json raise many types on a damaged
            # file (EOFError, BadZipFile, KeyError, ...); each one means "unreadable"
            raise ValueError(f"'{path}' is not a readable emp_data shard index (corrupt or foreign): {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"'{path}' is not an emp_data shard index")
        if meta.get("version") != INDEX_VERSION:
            raise ValueError(f"'{path}' is shard index version {meta.get('version')}, this emp_data reads "
                             f"{INDEX_VERSION}; rebuild it with emp_data.build_index")
        if meta.get("checksum") != _arrays_checksum(arrays):
            raise ValueError(f"shard index '{path}' is corrupt (checksum mismatch); rebuild it")
        problem = _index_problem(meta, arrays)
        if problem:
            raise ValueError(f"shard index '{path}' is inconsistent ({problem}); rebuild it")
        index = cls(meta, arrays)
        if check_shards:
            index.check_shards()
        return index

    def check_shards(self) -> None:
        """Refuse an index whose shards changed since it was built (size or mtime)."""
        for shard in self.shards:
            try:
                st = os.stat(shard["url"])
            except OSError as exc:
                raise ValueError(f"shard '{shard['url']}' of the index cannot be read: {exc}") from None
            if st.st_size != shard["size"] or st.st_mtime_ns != shard["mtime_ns"]:
                raise ValueError(f"shard '{shard['url']}' changed since the index was built (size {st.st_size} vs "
                                 f"{shard['size']}, mtime {st.st_mtime_ns} vs {shard['mtime_ns']}); rebuild the index")


def _decode_name(raw: bytes) -> str:
    """A member name as Python's tarfile (and so webdataset) gives it: UTF-8, undecodable bytes kept
    as surrogate escapes, so a non-UTF-8 name is a sample like any other, never a TypeError."""
    return raw.decode("utf-8", "surrogateescape")


def _encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _write_atomically(path: str, write) -> None:
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


_INDEX_ARRAYS = ("keys", "key_offsets", "exts", "ext_offsets", "member_offset", "member_size",
                 "sample_first_member", "shard_first_sample")


def _index_problem(meta: dict, a: dict) -> str | None:
    """What makes an index's arrays unusable, or None. The checksum catches bit rot; this catches a
    file that was written wrong or crafted, before any lookup indexes with its numbers."""
    shards, n = meta.get("shards"), meta.get("num_samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return f"num_samples {n!r}"
    if not isinstance(shards, list) or not all(
            isinstance(sh, dict) and isinstance(sh.get("url"), str) and
            all(isinstance(sh.get(k), int) and sh.get(k) >= 0 for k in ("size", "num_samples")) for sh in shards):
        return "the shard list is malformed"
    for name in _INDEX_ARRAYS:
        if name not in a or a[name].ndim != 1 or a[name].dtype.kind not in "iu":
            return f"array {name!r} is missing or not 1-D integers"

    def offsets_ok(name, count, end):
        o = a[name].astype(np.int64, copy=False)
        return len(o) == count + 1 and o[0] == 0 and o[-1] == end and bool(np.all(o[1:] >= o[:-1]))

    members = len(a["member_offset"])
    counts = [sh["num_samples"] for sh in shards]
    if not offsets_ok("shard_first_sample", len(shards), n) or \
            not np.array_equal(np.diff(a["shard_first_sample"].astype(np.int64)), np.asarray(counts, np.int64)):
        return "shard_first_sample disagrees with the shard list"
    if not offsets_ok("key_offsets", n, len(a["keys"])):
        return "key_offsets"
    if not offsets_ok("sample_first_member", n, members) or len(a["member_size"]) != members:
        return "sample_first_member / member arrays"
    if not offsets_ok("ext_offsets", members, len(a["exts"])):
        return "ext_offsets"
    if members:
        # Every member inside its shard: the shard of member m is that of its sample.
        sample_of = np.repeat(np.arange(n), np.diff(a["sample_first_member"].astype(np.int64)))
        shard_of = np.repeat(np.arange(len(shards)), counts)[sample_of]
        size = np.asarray([sh["size"] for sh in shards], np.uint64)[shard_of]
        off, length = a["member_offset"].astype(np.uint64), a["member_size"].astype(np.uint64)
        if np.any(off > size) or np.any(length > size - np.minimum(off, size)):
            return "a member lies outside its shard"
    return None


def _arrays_checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _concat_shards(parts: list[dict], shard_first_sample: list[int]) -> dict:
    """One set of flat index arrays from per-shard ones (offsets shifted, leading zeros dropped)."""
    def chain(data_key, offsets_key):
        data = np.concatenate([p[data_key] for p in parts]) if parts else np.zeros(0, np.uint8)
        offsets, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            offsets.append(p[offsets_key][1:] + base)
            base += len(p[data_key])
        return data, np.concatenate(offsets)

    keys, key_offsets = chain("keys", "key_offsets")
    exts, ext_offsets = chain("exts", "ext_offsets")
    first_member, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        first_member.append(p["sample_first_member"][1:] + base)
        base += len(p["member_offset"])

    def cat(key, dtype):
        return np.concatenate([p[key] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    return {"keys": keys, "key_offsets": key_offsets, "exts": exts, "ext_offsets": ext_offsets,
            "member_offset": cat("member_offset", np.uint64), "member_size": cat("member_size", np.uint64),
            "sample_first_member": np.concatenate(first_member),
            "shard_first_sample": np.asarray(shard_first_sample, dtype=np.int64)}


def _count_duplicate_keys(key_bytes: np.ndarray, key_offsets: np.ndarray, key_hash: np.ndarray) -> int:
    """How many samples repeat a key seen earlier in the shard set: keys are grouped by their
    64-bit hash (a sort of integers), and only keys sharing a hash are compared byte for byte, so a
    hash collision is never counted as a duplicate."""
    if len(key_hash) < 2:
        return 0
    order = np.argsort(key_hash, kind="stable")
    sorted_hash = key_hash[order]
    same = np.flatnonzero(sorted_hash[1:] == sorted_hash[:-1])
    if same.size == 0:
        return 0
    duplicates = 0
    for start in np.unique(np.searchsorted(sorted_hash, sorted_hash[same])):   # each group of equal hashes
        group = order[start:np.searchsorted(sorted_hash, sorted_hash[start], side="right")]
        keys = {bytes(key_bytes[key_offsets[i]:key_offsets[i + 1]]) for i in group}
        duplicates += len(group) - len(keys)
    return duplicates


def build_index(urls, out=None, *, handler=None) -> ShardIndex:
    """Scan every shard's tar headers and group members into samples (both in C++, no payload
    reads), then write a sidecar index to `out` (atomically; format version and checksum inside).
    Sample ids are dense, in shard order. A corrupt or truncated shard raises ValueError naming it
    and the offset; with a `handler` (e.g. webdataset's warn_and_continue) that returns True, the
    readable part of the shard is kept and the problem reported to it. Keys seen more than once in
    the shard set are counted in `duplicate_keys` and warned about (ids are positional, so such
    samples stay distinct)."""
    shards_meta, parts, shard_first_sample = [], [], [0]
    for url in expand_urls(urls):
        arrays, _size, scan_error, error_offset, group_error = _C.index_shard(url)
        if group_error:
            raise ValueError(f"shard '{url}': {group_error}")
        if scan_error:
            exc = ValueError(f"shard '{url}': {scan_error} at byte offset {error_offset}")
            if handler is None or not handler(exc):
                raise exc
        st = os.stat(url)
        count = len(arrays["key_offsets"]) - 1
        parts.append(arrays)
        shards_meta.append({"url": os.path.abspath(url), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                            "num_samples": count})
        shard_first_sample.append(shard_first_sample[-1] + count)
    key_hash = np.concatenate([p.pop("key_hash") for p in parts]) if parts else np.zeros(0, np.uint64)
    arrays = _concat_shards(parts, shard_first_sample)
    duplicates = _count_duplicate_keys(arrays["keys"], arrays["key_offsets"], key_hash)
    if duplicates:
        warnings.warn(f"{duplicates} sample keys occur more than once in the shard set", stacklevel=2)
    meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "num_samples": shard_first_sample[-1],
            "shards": shards_meta, "duplicate_keys": duplicates}
    index = ShardIndex(meta, arrays)
    if out is not None:
        index.save(out)
    return index


class KeyTable:
    """Sample key -> dense id for streams read without an index, in C++: ids in order of first
    appearance, stable for the life of the table.

    The table is a lock-free hash table in a memory-mapped file, so DataLoader workers and a
    restarted job share it and agree on every id. Keys are (url, key) as webdataset names samples,
    hashed to 64 bits; the full key is stored too, so two keys with the same hash get different ids
    (never merged) and are counted in `collisions`.

        KeyTable(max_samples)                       # anonymous memory: this process (and forks)
        KeyTable(max_samples, path="scores.keys")   # opens the file if it exists, else creates it
    ``key_bytes`` is the per-sample budget for stored keys (16 bytes of bookkeeping + the key); the
    file is sparse, so unused budget costs address space, not disk or memory.
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
        and check every id; ValueError if the table is inconsistent (delete it to renumber). Call
        it only while no other process uses the table. Returns the number of slots repaired."""
        try:
            return self._table.recover()
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None

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


class PrunedIterableDataset(IterableDataset):
    """Iterates WebDataset samples as dicts with ``__key__``, ``__url__``, ``__id__`` (int64 dense
    id) and ``__weight__`` (float32), dropping the samples the pruner pruned this epoch before any
    later stage (decoder, map) sees them.

    ``source`` is either shard urls (a list or a brace pattern) or an existing webdataset pipeline
    that yields raw samples (e.g. ``wds.WebDataset(urls, shardshuffle=...)`` or
    ``wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples())``,
    with no decoder yet).

    With urls and ``index=`` (from `build_index`) only kept samples' bytes are read (seek + read per
    member). ``index=`` also takes a wids shard index (``widsindex create`` JSON, or a `WidsIndex`):
    ids are then dense in shard order from its per-shard counts, and shards are streamed. With an
    index, ``source=None`` takes the index's urls. Otherwise ids come from a `KeyTable` (url + key
    -> id in order of first appearance): ``key_table=`` takes a path or a KeyTable; by default it is
    the file ``<store_path>.keys`` beside the pruner's memory-mapped store, shared by DataLoader
    workers and reused by a restarted job.

    With urls, shards are shuffled per epoch with the pruner's seed and split across DDP ranks and
    DataLoader workers like ``wds.split_by_node`` / ``wds.split_by_worker``; a pipeline source does
    its own shuffling and splitting. In DataLoader workers the keep flags and weights are read from
    the pruner's memory-mapped store (``Pruner(store_path=...)``). ``state_dict()`` holds (epoch,
    shard position, sample offset) for exact resume.
    """

    def __init__(self, source, pruner: Pruner, *, index=None, key_table=None, shuffle_shards: bool = True,
                 handler=None, epoch_length: int | None = None):
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an emp_data.Pruner, got {type(pruner).__name__}")
        if source is None and index is None:
            raise ValueError("source=None needs index= (the shards are then the index's); otherwise pass shard urls "
                             "or a webdataset pipeline")
        self.pipeline = None if source is None or _is_url_list(source) else source
        if self.pipeline is not None:
            if not hasattr(source, "__iter__"):
                raise TypeError(f"source must be shard urls or an iterable webdataset pipeline, got {type(source).__name__}")
            if index is not None:
                raise ValueError("index= needs shard urls as the source (it reads members by offset); a pipeline "
                                 "source has read the bytes already, so ids come from the key table")
        self.urls = [] if self.pipeline is not None or source is None else expand_urls(source)
        self.pruner = pruner
        self.store_path = pruner.store_path     # the file workers read weights from (GPU store: its host copy)
        self.seed = pruner.seed
        self.shuffle_shards = bool(shuffle_shards)
        self.handler = handler
        self.epoch_length = epoch_length
        self.index_path = None
        self._index = None           # ShardIndex: ids and member offsets
        self._wids = None            # WidsIndex: ids from per-shard counts, shards streamed
        if index is not None:
            if isinstance(index, (ShardIndex, WidsIndex)):
                loaded = index
            else:
                loaded = WidsIndex.load(index) if looks_like_json(index) else ShardIndex.load(index)
                self.index_path = os.fspath(index) if isinstance(loaded, ShardIndex) else None
            if isinstance(loaded, WidsIndex):
                self._wids, index_urls = loaded, loaded.urls
            else:
                self._index, index_urls = loaded, [s["url"] for s in loaded.shards]
            if source is None:
                self.urls = list(index_urls)
            elif [os.path.abspath(u) for u in self.urls] != [os.path.abspath(u) for u in index_urls]:
                raise ValueError("the index was built for other shards (or another order) than `urls`")
            if loaded.num_samples != pruner.num_samples:
                raise ValueError(f"index has {loaded.num_samples} samples, the pruner {pruner.num_samples}")
        self.key_table = None
        if index is None:
            if isinstance(key_table, KeyTable):
                self.key_table = key_table
            else:
                if key_table is None and pruner.store_path is not None:
                    key_table = pruner.store_path + ".keys"
                self.key_table = KeyTable(pruner.num_samples, key_table)
            if self.key_table.max_samples != pruner.num_samples:
                raise ValueError(f"key table numbers {self.key_table.max_samples} samples, the pruner {pruner.num_samples}")
            if self.key_table.existed:
                # Reopened (a restart, maybe after a crash or a power loss): void what a killed
                # process left half-done and check every id, before any worker starts. Not only when
                # the clean flag is off: after a power loss that flag's page may be older than others.
                repaired = self.key_table.recover()
                if repaired:
                    warnings.warn(f"key table '{self.key_table.path}': {repaired} insert(s) cut short by a crash "
                                  "were voided; those keys get fresh ids", stacklevel=2)
        self.epoch = 0
        self._start = (0, 0)        # (shard position, sample offset) to resume from
        self._position = (0, 0)
        self._finished = None        # the last epoch this copy of the stream read to its end
        self.skipped_shards = 0
        self.duplicate_keys = 0      # samples whose (url, key) already appeared in the same shard pass
        self._pass_url, self._pass_ids = None, set()

    # --- pickling for DataLoader workers: never the Pruner (its store travels by path)
    def __getstate__(self):
        state = dict(self.__dict__)
        state["pruner"] = None
        if self.index_path is not None:
            state["_index"] = None
        if self.key_table is not None and self.key_table.path is None:
            state["key_table"] = None   # anonymous memory: main process only (checked in __iter__)
        return state

    def set_epoch(self, epoch: int) -> None:
        """Make `epoch` current: selects it in the pruner (main process) and re-shuffles shards."""
        self.epoch = int(epoch)
        self._start = (0, 0)
        if self.pruner is not None:
            self.pruner.select(self.epoch)

    def __len__(self):
        if self.epoch_length is None:
            raise TypeError("PrunedIterableDataset has no length unless epoch_length= is given")
        return self.epoch_length

    # --- resume
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self._position[0], "sample": self._position[1]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._start = (int(state["shard"]), int(state["sample"]))

    # --- iteration
    def _weights(self) -> "_EpochWeights":
        """This epoch's weights. In the training process they are the pruner's (selected here if
        needed). A DataLoader worker reads the pruner's memory-mapped store and takes the epoch from
        its stamp, so persistent workers follow `set_epoch` and a resume made in the main process."""
        in_worker = get_worker_info() is not None
        if self.pruner is not None and not in_worker:
            if self.pruner.epoch != self.epoch:
                self.pruner.select(self.epoch)
            return _EpochWeights(self.epoch, array=self.pruner.store.weight)
        # A worker always reads the shared file: a forked copy of an in-memory store would be a
        # snapshot that silently goes stale (persistent workers).
        if self.store_path is None:
            raise ValueError("DataLoader workers cannot see an in-memory store: create the Pruner with "
                             "store_path= so its keep flags are shared through a memory-mapped file")
        store = ScoreStore.open(self.store_path, readonly=True)
        stamp = store.epoch_stamp()
        if stamp is None:
            raise ValueError(f"no epoch is selected in the store '{self.store_path}': call stream.set_epoch(epoch) "
                             "(or pruner.select(epoch)) in the training process before iterating")
        if stamp != self.epoch:
            # The trainer selected another epoch than this copy of the stream knows (persistent
            # workers, or a resume): the store wins; a saved position only holds for its own epoch.
            self.epoch, self._start = stamp, (0, 0)
        elif self._finished == stamp and self._start == (0, 0):
            warnings.warn(f"epoch {stamp} is read a second time by this worker: the store still holds its "
                          "selection. Call stream.set_epoch(epoch) before each epoch", stacklevel=3)
        return _EpochWeights(stamp, store=store)

    def _my_shards(self) -> list[int]:
        order = np.arange(len(self.urls))
        if self.shuffle_shards:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.urls))
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        order = order[rank::world]
        info = get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        return order.tolist()

    def __iter__(self) -> Iterator[dict]:
        if self._index is None and self.index_path is not None:
            self._index = ShardIndex.load(self.index_path)
        if self._index is None and self._wids is None and self.key_table is None:
            raise ValueError("DataLoader workers cannot share an in-memory key table: create the Pruner with "
                             "store_path= (the table then lives beside it) or pass key_table=<path>")
        weights = self._weights()
        self._pass_url = None        # duplicate-key tracking starts afresh each pass
        start_shard, start_sample = self._start
        self._start = (0, 0)
        if self.pipeline is not None:
            yield from self._pipeline_samples(start_sample, weights)
            self._end_epoch()
            return
        shards = self._my_shards()
        for pos in range(start_shard, len(shards)):
            shard = shards[pos]
            first = start_sample if pos == start_shard else 0
            self._position = (pos, first)
            if self._index is not None:
                yield from self._indexed_shard(pos, shard, first, weights)
            else:
                yield from self._streamed_shard(pos, shard, first, weights)
        self._position = (len(shards), 0)
        self._end_epoch()

    def _end_epoch(self):
        self._finished = self.epoch
        if self.key_table is not None:
            self.key_table.flush()   # the ids of this pass survive a power loss
        if self.pruner is not None and get_worker_info() is None:
            self.epoch += 1

    def _pipeline_samples(self, first, weights):
        """Samples of a user's pipeline, numbered by the key table; the first `first` are skipped
        (resume: the pipeline must repeat an epoch's order, e.g. seeded shuffles)."""
        ordinal = -1
        for ordinal, sample in enumerate(self.pipeline):
            if not isinstance(sample, dict) or "__key__" not in sample:
                got = sorted(sample)[:6] if isinstance(sample, dict) else type(sample).__name__
                raise ValueError(f"sample {ordinal} of the pipeline has no '__key__' (got {got}); "
                                 "PrunedIterableDataset takes raw webdataset samples, before decoding or to_tuple")
            self._position = (0, ordinal + 1)
            if ordinal < first:
                continue
            url = sample.get("__url__", "")
            out = self._keep(url, sample["__key__"], weights)
            if out is not None:
                out.update((k, v) for k, v in sample.items() if k not in out)
                yield out
        self._position = (0, ordinal + 1)

    def _indexed_shard(self, pos, shard, first, weights):
        url = self.urls[shard]
        lo, hi = self._index.shard_range(shard)
        shard_weights = weights.slice(lo, hi)
        kept = np.flatnonzero(shard_weights[first:] > 0) + first
        fd = os.open(url, os.O_RDONLY)
        try:
            for j in kept.tolist():
                sid = lo + j
                sample = {"__key__": self._index.sample_key(sid), "__url__": url, "__id__": sid,
                          "__weight__": np.float32(shard_weights[j])}
                for ext, off, size in self._index.sample_members(sid):
                    data = os.pread(fd, size, off)
                    if len(data) != size:
                        raise ValueError(f"shard '{url}' is truncated at byte offset {off} (index expects {size} bytes)")
                    sample[ext] = data
                self._position = (pos, j + 1)
                yield sample
        finally:
            os.close(fd)

    def _streamed_shard(self, pos, shard, first, weights):
        url = self.urls[shard]
        self._pass_url = None
        ids = None if self._wids is None else self._wids.shard_range(shard)   # wids: id = first + ordinal
        ordinal = -1
        try:
            with open(url, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
                current_key, current = None, None
                for member in _members_with_data(tar):
                    name, data = member
                    key, ext = _split_name(name)
                    if key is None:
                        continue
                    if key != current_key:
                        if current is not None:
                            ordinal += 1
                            out = self._emit(url, current_key, current, ordinal, first, pos, weights, ids)
                            if out is not None:
                                yield out
                        current_key, current = key, {}
                    current[ext] = data
                if current is not None:
                    ordinal += 1
                    out = self._emit(url, current_key, current, ordinal, first, pos, weights, ids)
                    if out is not None:
                        yield out
        except (tarfile.TarError, EOFError, OSError) as exc:
            err = ValueError(f"shard '{url}' is corrupt or truncated near sample {ordinal + 1}: {exc}")
            if self.handler is None or not self.handler(err):
                raise err from None
            self.skipped_shards += 1
            return
        if ids is not None and ordinal + 1 < ids[1] - ids[0]:
            # Ids stay unique (the shard's range is fixed), but the index no longer describes the shard.
            warnings.warn(f"shard '{url}' holds {ordinal + 1} samples, the wids index says {ids[1] - ids[0]}: "
                          "the index is stale; rebuild it", stacklevel=2)

    def _emit(self, url, key, fields, ordinal, first, pos, weights, ids=None):
        self._position = (pos, ordinal + 1)
        sid = None
        if ids is not None:
            sid = ids[0] + ordinal
            if sid >= ids[1]:
                raise ValueError(f"shard '{url}' holds more than the {ids[1] - ids[0]} samples its wids index "
                                 "says: the index is stale; rebuild it")
        if ordinal < first:
            return None
        out = self._keep(url, key, weights, sid)
        if out is not None:
            out.update(fields)
        return out

    def _keep(self, url, key, weights, sid=None):
        """The id/weight header of a kept sample, None for a pruned one. `sid` is given by a wids
        index; otherwise it comes from the key table."""
        if sid is None:
            sid = self._key_table_id(url, key)
        w = weights.at(sid)
        if not w > 0:
            return None
        return {"__key__": key, "__url__": url, "__id__": sid, "__weight__": np.float32(w)}

    def _key_table_id(self, url, key) -> int:
        try:
            sid = self.key_table.id_of(url, key)
        except ValueError as exc:     # more distinct samples than the pruner has
            raise ValueError(f"{exc} (at '{url}' key {key!r})") from None
        # The same key twice in one shard (non-consecutive members) maps to one id: report it.
        # The set covers one shard at a time, so its memory stays bounded by the shard size.
        if url != self._pass_url:
            self._pass_url, self._pass_ids = url, set()
        if sid in self._pass_ids:
            if self.duplicate_keys == 0:
                warnings.warn(f"key {key!r} occurs more than once in '{url}': its samples share one id and one "
                              "score (counted in duplicate_keys)", stacklevel=4)
            self.duplicate_keys += 1
        self._pass_ids.add(sid)
        return sid

    @property
    def samples_seen(self) -> int:
        """Distinct samples numbered so far by the key table (all processes), or the index's count."""
        if self.key_table is not None:
            return len(self.key_table)
        return (self._index or self._wids).num_samples

    @property
    def key_collisions(self) -> int:
        """Distinct keys whose 64-bit hash collided with an earlier key (kept apart; 0 with an index)."""
        return self.key_table.collisions if self.key_table is not None else 0


class _EpochWeights:
    """One epoch's loss weights as a stream reads them: the training process's own array, or the
    shared store file, read under its epoch stamp so that a select in another process is waited out
    (never seen half-written) and a change of epoch mid-read is an error, not a silent mix."""

    def __init__(self, epoch: int, *, array: np.ndarray | None = None, store: ScoreStore | None = None):
        self.epoch, self._array, self._store = epoch, array, store

    def slice(self, lo: int, hi: int) -> np.ndarray:
        if self._array is not None:
            return self._array[lo:hi]
        epoch, weights = self._store.read_weights(lo, hi)
        self._check(epoch)
        return weights

    def at(self, sample_id: int) -> float:
        return float(self.slice(sample_id, sample_id + 1)[0])

    def _check(self, epoch):
        if epoch != self.epoch:
            raise RuntimeError(f"the store now holds epoch {epoch}'s selection while this DataLoader worker is still "
                               f"reading epoch {self.epoch}: call stream.set_epoch (or pruner.select) only between "
                               "epochs, after the loader has been read to its end")


def _members_with_data(tar):
    for info in tar:
        if not info.isfile():
            continue
        f = tar.extractfile(info)
        yield info.name, f.read() if f is not None else b""
