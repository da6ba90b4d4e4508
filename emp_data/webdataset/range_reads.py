"""Reading the kept members of one shard by byte range: which requests to send (neighbours merged
when a request costs more than the gap between them), and a reader that sends them (pread for local
files, Range requests over HTTP, fsspec's cat_file elsewhere), checking every response against the
index."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from . import remote


@dataclass
class Read:
    start: int
    end: int
    members: list          # indices into the member list this read covers


def plan_reads(offsets, sizes, gap: int = remote.DEFAULT_GAP, shard_size: int | None = None,
               request_cost: int = remote.REQUEST_COST, max_read: int | None = None) -> list[Read]:
    """Requests for members (offset, size) in file order: neighbours closer than `gap` bytes share
    one request. With `shard_size` (a remote shard), the whole span becomes one request when that
    costs less, counting each request as `request_cost` bytes: many small requests for most of a
    shard are slower than streaming it."""
    reads: list[Read] = []
    for m, (off, size) in enumerate(zip(offsets, sizes)):
        off, size = int(off), int(size)
        if reads and off - reads[-1].end < gap:
            reads[-1].end = max(reads[-1].end, off + size)
            reads[-1].members.append(m)
        else:
            reads.append(Read(off, off + size, [m]))
    if shard_size and len(reads) > 1:
        split = sum(r.end - r.start for r in reads) + len(reads) * request_cost
        whole = reads[-1].end - reads[0].start + request_cost
        if whole <= split:
            reads = [Read(reads[0].start, reads[-1].end, [m for r in reads for m in r.members])]
    if max_read:
        reads = [part for read in reads for part in _split_read(read, offsets, sizes, max_read)]
    return reads


def _split_read(read: Read, offsets, sizes, max_read: int) -> list[Read]:
    """`read` cut at member boundaries into parts of about `max_read` bytes (a member is never cut)."""
    parts, members, start = [], [], read.start
    for i, m in enumerate(read.members):
        members.append(m)
        end = int(offsets[m]) + int(sizes[m])
        if end - start >= max_read and i + 1 < len(read.members):
            parts.append(Read(start, end, members))
            members, start = [], int(offsets[read.members[i + 1]])
    parts.append(Read(start, read.end, members))
    return parts


class RangeReader:
    """Byte ranges of one shard: pread for local files, Range requests for http(s), fsspec's
    cat_file elsewhere. `size`, `etag` and `last_modified` (from the index) are checked against every
    response; `received` counts the bytes that arrived."""

    def __init__(self, url: str, size: int | None = None, etag: str | None = None, last_modified: str | None = None):
        self.url, self.size, self.etag, self.last_modified = url, size, etag, last_modified
        self.received = 0             # bytes that arrived (a server that ignores Range sends whole shards)
        self._whole: bytes | None = None   # the shard, once such a server has sent it: later reads slice it
        self._lock = threading.Lock()
        self._probe_lock, self._probed = threading.Lock(), False
        self._fd = os.open(remote.local_path(url), os.O_RDONLY) if remote.is_local(url) else None
        self._fs = None
        if self._fd is None and not remote.is_http(url):
            import fsspec

            self._fs, self._path = fsspec.core.url_to_fs(url)
            if size is not None or etag is not None:
                # fsspec's range reads carry no headers to check: one info() per reader instead.
                now = remote._retry(lambda: remote.stat(url), url, 0, 0)
                if size is not None and now["size"] not in (None, size):
                    raise remote.ShardChanged(f"shard '{url}' changed since the index was built: {now['size']} bytes, the "
                                       f"index says {size}; rebuild the index")
                if etag is not None and now["etag"] not in (None, etag):
                    raise remote.ShardChanged(f"shard '{url}' changed since the index was built (ETag {now['etag']}, the "
                                       f"index has {etag}); rebuild the index")

    def read(self, start: int, end: int) -> bytes:
        if self._fd is not None:
            data = os.pread(self._fd, end - start, start)
        elif self._fs is None:
            return self._http_read(start, end)
        else:
            data = remote._retry(lambda: self._fs.cat_file(self._path, start=start, end=end), self.url, start, end)
        self._count(len(data))
        if len(data) != end - start:
            raise remote.ShardChanged(f"shard '{self.url}' is truncated at byte offset {start + len(data)} (index expects "
                               f"{end - start} bytes at {start})")
        return data

    def _count(self, nbytes: int) -> None:
        with self._lock:            # reads run side by side in threads
            self.received += nbytes

    def _http_read(self, start: int, end: int) -> bytes:
        if remote._honours_range(self.url) is not True and not self._probed:
            # Until a server is known to honour Range, a shard's first request goes alone: if the
            # server ignores it, the reads queued behind are cut from the whole body it sends instead
            # of each downloading the shard again.
            with self._probe_lock:
                if not self._probed:
                    data = self._http_request(start, end)
                    self._probed = True
                    return data
        return self._http_request(start, end)

    def _http_request(self, start: int, end: int) -> bytes:
        whole = self._whole
        if whole is not None:
            return whole[start:end]
        resp = remote.http_get(self.url, start, end)
        self._count(len(resp.body))
        remote._RANGE_SUPPORT[remote._server(self.url)] = resp.status == 206
        if resp.status == 200:      # Range ignored: keep the shard for this pass's other reads
            remote._warn_range_ignored(self.url)
            remote.check_range(self.url, resp, 0, len(resp.body), self.size, self.etag, self.last_modified)
            self._whole = resp.body
            if len(resp.body) < end:
                raise remote.ShardChanged(f"shard '{self.url}' is truncated at byte offset {len(resp.body)} (index expects "
                                   f"{end - start} bytes at {start})")
            return resp.body[start:end]
        remote.check_range(self.url, resp, start, end, self.size, self.etag, self.last_modified)
        return resp.body

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
