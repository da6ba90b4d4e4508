"""How a stream reads one shard: indexed (only the kept members' bytes, by range reads), streamed
(the whole tar, parsed in order, numbering samples by a wids index or the key table), or from a
user's webdataset pipeline; and what a bad shard does (webdataset's handler semantics)."""
from __future__ import annotations

import collections
import concurrent.futures
import os
import tarfile
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch.utils.data import get_worker_info

from . import range_reads, remote
from .index import _split_name
from .reports import report_received


@dataclass
class ReadOptions:
    """How a stream reads: `handler` for a bad shard (webdataset's handlers), and for indexed
    reads the gap below which neighbouring members share a request, the requests in flight on a
    remote shard, the bytes one request costs (None: latency bytes / read_ahead) and whether each
    member's tar header is read and checked (512 bytes each)."""
    handler: Callable | None = None
    read_gap: int = remote.DEFAULT_GAP
    read_ahead: int = 32
    request_cost: int | None = None
    check_headers: bool = True


class ReadStats:
    """What a copy of a stream really read: bytes received from shards, the sizes of the shards
    indexed reads came from, shards a handler skipped, and repeated keys. A DataLoader worker also
    reports its received bytes beside the store (`<store_path>.received`) for the training process."""

    def __init__(self, store_path: str | None):
        self.store_path = store_path
        self.received = 0
        self.shard_bytes = 0
        self.skipped_shards = 0
        self.duplicate_keys = 0

    def add_received(self, nbytes: int) -> None:
        self.received += nbytes
        if nbytes and self.store_path is not None and get_worker_info() is not None:
            report_received(self.store_path, nbytes)


class ShardReader:
    """Turns one pass's shards into its kept samples, as (next sample ordinal, sample) pairs: the
    ordinal says where a resume continues in the shard (or pipeline). `weights` are the epoch's
    (EpochWeights), `shares` places ids in the store, `key_table` numbers samples without an index."""

    def __init__(self, urls, index, wids, key_table, shares, weights, options: ReadOptions, stats: ReadStats):
        self.urls, self.index, self.wids, self.key_table = urls, index, wids, key_table
        self.shares, self.weights, self.options, self.stats = shares, weights, options, stats
        self._pass_url, self._pass_ids = None, set()   # keys met in the current shard (duplicates)

    def shard(self, shard: int, first: int, end: int | None = None):
        """The kept samples among samples [first, end) of one shard (end None: to its end)."""
        if self.index is not None:
            return self._indexed(shard, first, end)
        return self._streamed(shard, first, end)

    def pipeline(self, pipeline, first: int):
        """Samples of a user's pipeline, numbered by the key table; the first `first` are skipped
        (resume: the pipeline must repeat an epoch's order, e.g. seeded shuffles)."""
        for ordinal, sample in enumerate(pipeline):
            if not isinstance(sample, dict) or "__key__" not in sample:
                got = sorted(sample)[:6] if isinstance(sample, dict) else type(sample).__name__
                raise ValueError(f"sample {ordinal} of the pipeline has no '__key__' (got {got}); "
                                 "PrunedIterableDataset takes raw webdataset samples, before decoding or to_tuple")
            if ordinal < first:
                continue
            out = self._keep(sample.get("__url__", ""), sample["__key__"])
            if out is not None:
                out.update((k, v) for k, v in sample.items() if k not in out)
                yield ordinal + 1, out

    def _indexed(self, shard, first, end=None):
        """The kept samples of one shard, reading only their members' bytes: neighbouring members
        share a request (gap below `read_gap`), a few requests run ahead of the consumer on remote
        shards, and the whole span is one request when that is cheaper (see emp_data.webdataset.remote)."""
        opts = self.options
        url = self.urls[shard]
        lo, _ = self.index.shard_range(shard)
        shard_weights = self.weights.slice(*self.shares.slot_range(shard))
        kept = (np.flatnonzero(shard_weights[first:end] > 0) + first).tolist()
        meta = self.index.shards[shard]
        self.stats.shard_bytes += int(meta["size"])
        members = [(j, field, off, size) for j in kept for field, off, size in self.index.sample_members(lo + j)]
        local = remote.is_local(url)      # a pread per member: pruned bytes are never read
        # Each member's read starts at its tar header (checked in _assemble).
        head = TAR_BLOCK if opts.check_headers else 0
        reads = range_reads.plan_reads([m[2] - head for m in members], [m[3] + head for m in members],
                                       gap=0 if local else opts.read_gap,
                                       shard_size=None if local else int(meta["size"]),
                                       request_cost=opts.request_cost if opts.request_cost is not None else
                                       remote.REQUEST_LATENCY_BYTES // max(opts.read_ahead, 1),
                                       max_read=None if local else remote.MAX_READ)
        try:
            with range_reads.RangeReader(url, meta["size"], meta.get("etag"), meta.get("last_modified")) as reader:
                try:
                    fetched = _fetch_ahead(reader, reads, 1 if local else opts.read_ahead)
                    yield from self._assemble(url, lo, members, fetched, shard_weights)
                finally:
                    self.stats.add_received(reader.received)   # what arrived, not what was asked
        except (remote.ShardChanged, remote.RemoteError) as exc:    # as a corrupt shard in streamed mode
            self._handle(ValueError(str(exc)))

    def _assemble(self, url, lo, members, fetched, shard_weights):
        """Samples from the planned reads' bytes, yielded in order as each becomes whole. Each member
        is read with the 512-byte tar header in front of it, which must name it and its size: a shard
        replaced under an index (same size, even the same mtime or Last-Modified) is caught at the
        first member that moved, never returned as another sample's bytes."""
        samples: dict[int, dict] = {}
        for read, data in fetched:
            for m in read.members:
                j, field, off, size = members[m]
                if j not in samples:
                    samples[j] = {"__key__": self.index.sample_key(lo + j), "__url__": url, "__id__": lo + j,
                                  "__weight__": np.float32(shard_weights[j])}
                at = off - read.start
                if self.options.check_headers:
                    _check_header(data[at - TAR_BLOCK:at], url, off, samples[j]["__key__"], field, size)
                samples[j][field] = data[at:at + size]
            # Members are in file order, so reads complete samples in order: every sample before
            # the read's last one is whole, and that one too unless its next member is still to come.
            last_m = read.members[-1]
            last_j = members[last_m][0]
            last_whole = last_m + 1 == len(members) or members[last_m + 1][0] != last_j
            for j in sorted(j for j in samples if j < last_j or (j == last_j and last_whole)):
                yield j + 1, samples.pop(j)

    def _streamed(self, shard, first, end=None):
        url = self.urls[shard]
        self._pass_url = None
        ids = None if self.wids is None else self.wids.shard_range(shard)   # wids: id = first + ordinal
        ordinal = -1
        raw = None
        try:
            raw = remote.open_stream(url)
            with raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
                current_key, current = None, None
                for name, data in _members_with_data(tar):
                    key, ext = _split_name(name)
                    if key is None:
                        continue
                    if key != current_key:
                        if current is not None:
                            ordinal += 1
                            out = self._emit(url, current_key, current, ordinal, first, ids)
                            if out is not None:
                                yield ordinal + 1, out
                            if end is not None and ordinal + 1 >= end:
                                return       # the rest of the shard is another worker's share
                        current_key, current = key, {}
                    if ext in current:   # as build_index and webdataset's group_by_keys: an error
                        raise _DuplicateMember(f"duplicate file name in tar file: {name} (sample '{key}' already "
                                               f"has .{ext}) in shard '{url}'")
                    current[ext] = data
                _check_tar_end(tar, raw, url)
                if current is not None:
                    ordinal += 1
                    out = self._emit(url, current_key, current, ordinal, first, ids)
                    if out is not None:
                        yield ordinal + 1, out
        except (tarfile.TarError, EOFError, OSError, _DuplicateMember) as exc:
            err = exc if isinstance(exc, _DuplicateMember) else \
                ValueError(f"shard '{url}' is corrupt or truncated near sample {ordinal + 1}: {exc}")
            self._handle(err)
            return
        finally:
            if raw is not None:
                self.stats.add_received(getattr(raw, "received", 0))   # http: what arrived
        if ids is not None and ordinal + 1 < ids[1] - ids[0]:
            # Ids stay unique (the shard's range is fixed), but the index no longer describes the shard.
            warnings.warn(f"shard '{url}' holds {ordinal + 1} samples, the wids index says {ids[1] - ids[0]}: "
                          "the index is stale; rebuild it", stacklevel=2)

    def _handle(self, err: Exception) -> None:
        """A bad shard, as webdataset's handlers mean it: no handler raises; a handler returning True
        (warn_and_continue) skips the rest of the shard; False (ignore_and_stop) ends the pass
        quietly; a handler may also raise (reraise_exception)."""
        handler = self.options.handler
        if handler is None:
            raise err from None
        if not handler(err):
            raise StopPass()
        self.stats.skipped_shards += 1

    def _emit(self, url, key, fields, ordinal, first, ids=None):
        sid = None
        if ids is not None:
            sid = ids[0] + ordinal
            if sid >= ids[1]:
                raise ValueError(f"shard '{url}' holds more than the {ids[1] - ids[0]} samples its wids index "
                                 "says: the index is stale; rebuild it")
        if ordinal < first:
            return None
        out = self._keep(url, key, sid)
        if out is not None:
            out.update(fields)
        return out

    def _keep(self, url, key, sid=None):
        """The id/weight header of a kept sample, None for a pruned one. `sid` is given by a wids
        index; otherwise it comes from the key table."""
        if sid is None:
            sid = self._key_table_id(url, key)
        w = self.weights.at(self.shares.slot(sid))
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
            if self.stats.duplicate_keys == 0:
                warnings.warn(f"key {key!r} occurs more than once in '{url}': its samples share one id and one "
                              "score (counted in duplicate_keys)", stacklevel=4)
            self.stats.duplicate_keys += 1
        self._pass_ids.add(sid)
        return sid


def _fetch_ahead(reader, reads, ahead: int):
    """(read, bytes) for each planned read, in order, with up to `ahead` requests in flight."""
    if ahead <= 1 or len(reads) <= 1:
        for read in reads:
            yield read, reader.read(read.start, read.end)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = collections.deque()
        for read in reads:
            pending.append((read, pool.submit(reader.read, read.start, read.end)))
            if len(pending) >= ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


TAR_BLOCK = 512


def _check_header(block: bytes, url: str, offset: int, key: str, field: str, size: int) -> None:
    """The tar header in front of a member must be a header of that member: its name (the index
    lower-cases the field; a name over 100 bytes, or a non-ASCII one from a pax writer, is only
    approximated in this header, its full form being in an extension header before it) and, outside
    POSIX archives (where a pax record may override it), its size. The usual case costs a few byte
    comparisons; tarfile parses the header only to say what is wrong."""
    name = block[:100].split(b"\0", 1)[0]
    posix = block[257:263] == b"ustar\x00"
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    expected = f"{key}.{field}".encode("utf-8", "surrogateescape")
    if name.lower() == expected.lower() and (posix or _header_size(block) == size):
        return
    _header_mismatch(block, url, offset, key, field, size, posix)


def _header_size(block: bytes) -> int:
    try:
        return tarfile.nti(block[124:136])
    except (tarfile.HeaderError, ValueError):
        return -1


def _header_mismatch(block, url, offset, key, field, size, posix) -> None:
    """The slow path: accepts what writers put in this header for a name that does not fit it (the
    first 100 bytes of a long name, cut anywhere in a character by GNU tar; '?' for each non-ASCII
    character from a pax writer), and raises for anything else."""
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError) as exc:
        raise remote.ShardChanged(f"shard '{url}' changed since the index was built: no tar header of sample "
                                  f"'{key}' (.{field}) before byte offset {offset} ({exc}); rebuild the index") from None
    got = info.name.encode("utf-8", "surrogateescape").lower()
    expected = f"{key}.{field}"
    forms = (expected.encode("utf-8", "surrogateescape").lower(), expected.encode("ascii", "replace").lower())
    cut = len(forms[0]) > 100 and len(got) >= 50          # a long name: this header holds its first bytes
    same_name = got in forms or (cut and any(f.startswith(got) for f in forms))
    if not same_name or (info.size != size and not posix):
        raise remote.ShardChanged(f"shard '{url}' changed since the index was built: the member at byte offset "
                                  f"{offset} is '{info.name}' of {info.size} bytes, the index has sample '{key}' "
                                  f"(.{field}) of {size} bytes; rebuild the index")


def _normal_url(url: str) -> str:
    """A url as indexes record it: local paths absolute, remote urls as given."""
    return os.path.abspath(remote.local_path(url)) if remote.is_local(url) else url


class _DuplicateMember(ValueError):
    """A member whose field the sample already has (an error, as in webdataset)."""


class StopPass(Exception):
    """The handler returned False: end this pass quietly."""


def _check_tar_end(tar, raw, url) -> None:
    """Python's tarfile ends a stream quietly at a header cut short, where the index's scanner (and
    so build_index) sees a truncated tar: the shard's known size settles it, so both modes drop the
    sample that was being assembled."""
    size = getattr(raw, "size", None)
    if size is None and hasattr(raw, "fileno"):
        try:
            size = os.fstat(raw.fileno()).st_size
        except (OSError, ValueError):
            size = None
    if size is not None and 0 < size - tar.offset < TAR_BLOCK:
        raise tarfile.ReadError(f"truncated tar header at byte offset {tar.offset} of '{url}'")


def _members_with_data(tar):
    for info in tar:
        if not info.isfile():
            continue
        f = tar.extractfile(info)
        yield info.name, f.read() if f is not None else b""
