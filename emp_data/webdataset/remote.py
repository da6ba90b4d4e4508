"""Reading shards where they live: local files, HTTP(S) servers and fsspec object stores.

Two ways in:
- `open_stream(url)`: the whole shard as a sequential byte stream (streamed mode, index builds),
  the way webdataset opens urls: `pipe:` commands and local paths through `webdataset.gopen`,
  http(s) through keep-alive `http.client` connections with retries, other schemes (s3://, gs://,
  ...) through fsspec.
- `range_reads.RangeReader(url, size, etag)`: byte ranges of a shard (indexed mode). Only the kept members'
  bytes are requested: `plan_reads` merges ranges closer than a gap threshold into one request
  (one request per 1 KiB sample would be slower than streaming the shard) and reads the shard's
  whole span in one request when that costs less than the merged requests (each request counted as
  REQUEST_LATENCY_BYTES / requests in flight bytes of transfer).

Transient failures (connection reset, timeout, HTTP 5xx/429) are retried with exponential backoff;
a shard that changed since its index was built (another size or ETag) and a short body are errors
that name the url and the offset.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import os
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass

RETRIES = 5               # attempts after the first, for transient failures
BACKOFF_S = 0.05          # first retry delay; doubles each time
TIMEOUT_S = 60.0
DEFAULT_GAP = 64 * 1024            # merge kept members whose gap is below this (bytes)
# What one request's latency is worth in transfer: latency x bandwidth (20 ms x 200 MB/s, an object
# store). Divided by the requests in flight, it is what one more request costs in plan_reads.
REQUEST_LATENCY_BYTES = 4_000_000
REQUEST_COST = REQUEST_LATENCY_BYTES // 32
MAX_READ = 2 << 20                 # a longer planned read is split (at member boundaries) into parts fetched
                                   # side by side: the consumer starts on the first while the rest arrive


def is_local(url: str) -> bool:
    scheme = urllib.parse.urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url


def is_http(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("http", "https")


class RemoteError(OSError):
    """A remote read that failed for good (after retries), naming the url."""


class ShardChanged(ValueError):
    """The shard is not the one the index describes (size or ETag differ), or its body ended early."""


# --------------------------------------------------------------------------------------- HTTP
class _Connections(threading.local):
    """One keep-alive connection per (thread, scheme, host)."""

    def __init__(self):
        self.pool: dict[tuple[str, str], http.client.HTTPConnection] = {}


_connections = _Connections()


def _connection(parsed) -> http.client.HTTPConnection:
    key = (parsed.scheme, parsed.netloc)
    conn = _connections.pool.get(key)
    if conn is None:
        cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        conn = cls(parsed.netloc, timeout=TIMEOUT_S)
        _connections.pool[key] = conn
    return conn


def _drop_connection(parsed) -> None:
    conn = _connections.pool.pop((parsed.scheme, parsed.netloc), None)
    if conn is not None:
        conn.close()


@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: bytes


def _transient(status: int) -> bool:
    return status in (408, 425, 429) or 500 <= status < 600


def http_get(url: str, start: int | None = None, end: int | None = None, *, method: str = "GET",
             retries: int = RETRIES) -> HttpResponse:
    """GET (or HEAD) `url`, bytes [start, end) when given, retrying transient failures; the whole body
    is read (a body shorter than Content-Length is a transient failure, retried)."""
    parsed = urllib.parse.urlparse(url)
    target = parsed.path or "/"
    if parsed.query:
        target += "?" + parsed.query
    headers = {"Accept-Encoding": "identity"}
    if start is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    delay, last = BACKOFF_S, None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(delay)
            delay *= 2
        conn = _connection(parsed)
        try:
            conn.request(method, target, headers=headers)
            resp = conn.getresponse()
            body = resp.read() if method != "HEAD" else b""
            got = HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
            if resp.will_close:
                _drop_connection(parsed)
        except (OSError, http.client.HTTPException) as exc:      # reset, timeout, IncompleteRead
            _drop_connection(parsed)
            last = f"{type(exc).__name__}: {exc}"
            continue
        if _transient(got.status):
            last = f"HTTP {got.status}"
            continue
        if got.status >= 400:
            raise RemoteError(f"'{url}': HTTP {got.status}" + (f" for bytes {start}-{end - 1}" if start is not None else ""))
        return got
    where = f" (bytes {start}-{end - 1})" if start is not None else ""
    raise RemoteError(f"'{url}'{where}: failed after {retries + 1} attempts: {last}")


def http_stat(url: str) -> dict:
    """Size, ETag and Last-Modified of a remote shard (each None when the server sends none), from a
    HEAD request."""
    resp = http_get(url, method="HEAD")
    size = resp.headers.get("content-length")
    return {"size": int(size) if size is not None else None, "etag": resp.headers.get("etag"),
            "last_modified": resp.headers.get("last-modified")}


_RANGE_SUPPORT: dict[str, bool] = {}     # server -> whether its last answer to a Range request was a 206
_RANGE_IGNORED: set[str] = set()          # servers already warned about
_RANGE_IGNORED_LOCK = threading.Lock()


def _server(url: str) -> str:
    return urllib.parse.urlparse(url).netloc


def _honours_range(url: str) -> bool | None:
    return _RANGE_SUPPORT.get(_server(url))


def _warn_range_ignored(url: str) -> None:
    """Once per server: it answers Range requests with the whole body (200)."""
    server = _server(url)
    with _RANGE_IGNORED_LOCK:
        if server in _RANGE_IGNORED:
            return
        _RANGE_IGNORED.add(server)
    warnings.warn(f"server {server} ignores Range requests (it answered one for '{url}' with the whole file): each "
                  "shard is downloaded whole, once per pass, and pruned members save no transfer there",
                  stacklevel=3)


# ------------------------------------------------------------------------------------ streams
class _HttpStream:
    """A remote shard as a sequential file object, fetched in ranges of CHUNK bytes with retries (so a
    reset mid-shard resumes where it stopped instead of restarting or failing); the next range is
    fetched by a helper thread while the reader parses this one."""

    CHUNK = 4 << 20

    def __init__(self, url: str):
        self.url = url
        info = http_stat(url)
        self.size, self.etag, self.last_modified = info["size"], info["etag"], info["last_modified"]
        self.received = 0            # bytes that arrived, whatever was asked
        self.pos = 0
        self._buf, self._off = b"", 0    # the current range, and how much of it was read
        self._fetched_to = 0          # end of what has been requested so far
        self._next = None             # the next range, in flight
        self._pool = None

    def read(self, n: int = -1) -> bytes:
        if self.size is None:        # no length: one plain GET
            if self.pos == 0 and not self._buf:
                self._buf, self._off = http_get(self.url).body, 0
                self.size = self._fetched_to = len(self._buf)
                self.received += len(self._buf)
        out = []
        want = (self.size - self.pos) if n is None or n < 0 else n
        while want > 0 and self.pos < self.size:
            if self._off == len(self._buf):
                self._buf, self._off = self._take_next(), 0
            take = self._buf[self._off:self._off + want]     # a copy of what is asked only
            self._off += len(take)
            self.pos += len(take)
            want -= len(take)
            out.append(take)
        return b"".join(out)

    def _fetch(self, start: int, end: int) -> tuple[bytes, bool]:
        """Bytes [start, end), or (the server ignored Range) [start, size): then True."""
        resp = http_get(self.url, start, end)
        self.received += len(resp.body)
        whole = resp.status == 200
        if whole:
            _warn_range_ignored(self.url)
        check_range(self.url, resp, start, self.size if whole else end, self.size, self.etag, self.last_modified)
        return resp.body, whole

    def _request_next(self) -> None:
        if self._fetched_to < self.size:
            start, end = self._fetched_to, min(self.size, self._fetched_to + self.CHUNK)
            self._fetched_to = end
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            self._next = self._pool.submit(self._fetch, start, end)

    def _take_next(self) -> bytes:
        if self._next is None:
            self._request_next()
        data, whole = self._next.result()
        self._next = None
        if whole:
            self._fetched_to = self.size   # the rest came with it: no more requests for this shard
        self._request_next()           # the one after, while this one is parsed
        return data

    def close(self):
        self._buf, self._off = b"", 0
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_stream(url: str):
    """A readable binary file object over the whole shard (see the module docstring)."""
    if is_local(url):
        return open(local_path(url), "rb")
    if is_http(url):
        return _HttpStream(url)
    if url.startswith("pipe:"):
        import webdataset as wds

        return wds.gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def stat(url: str) -> dict:
    """{'size', 'etag'} of a shard: os.stat for local files (etag: mtime_ns), HEAD for http(s),
    fsspec's info elsewhere (etag when the store reports one). pipe: urls have neither."""
    if is_local(url):
        st = os.stat(local_path(url))
        return {"size": st.st_size, "etag": None, "last_modified": None, "mtime_ns": st.st_mtime_ns}
    if is_http(url):
        return http_stat(url)
    if url.startswith("pipe:"):
        return {"size": None, "etag": None, "last_modified": None}
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag") or info.get("mtime")
    return {"size": info.get("size"), "etag": None if etag is None else str(etag), "last_modified": None}


def check_range(url: str, resp: HttpResponse, start: int, end: int, size: int | None, etag: str | None,
                last_modified: str | None = None) -> None:
    """The response must be the asked bytes of the shard the index describes: its size, and each
    validator the index recorded that the response carries (ETag, else Last-Modified, as servers like
    `python -m http.server` send only the date). A 200 (Range ignored) is cut to the asked bytes."""
    if resp.status == 200:         # the server ignored Range: the whole body
        body_size = len(resp.body)
        if size is not None and body_size != size:
            raise ShardChanged(f"shard '{url}' changed since the index was built: {body_size} bytes, the index "
                               f"says {size}; rebuild the index")
        resp.body = resp.body[start:end]
    elif resp.status == 206:
        total = resp.headers.get("content-range", "").rpartition("/")[2]
        if size is not None and total.isdigit() and int(total) != size:
            raise ShardChanged(f"shard '{url}' changed since the index was built: {total} bytes at offset {start}, "
                               f"the index says {size}; rebuild the index")
    for name, recorded in (("ETag", etag), ("Last-Modified", last_modified)):
        sent = resp.headers.get(name.lower())
        if recorded is not None and sent is not None and sent != recorded:
            raise ShardChanged(f"shard '{url}' changed since the index was built ({name} {sent} at offset {start}, "
                               f"the index has {recorded}); rebuild the index")
    if len(resp.body) != end - start:
        raise ShardChanged(f"shard '{url}' is truncated at byte offset {start + len(resp.body)} (asked for bytes "
                           f"{start}-{end - 1}); rebuild the index if the shard changed")


def _retry(fn, url, start, end):
    delay, last = BACKOFF_S, None
    for attempt in range(RETRIES + 1):
        if attempt:
            time.sleep(delay)
            delay *= 2
        try:
            return fn()
        except (ConnectionError, TimeoutError) as exc:
            last = exc
    raise RemoteError(f"'{url}' (bytes {start}-{end - 1}): failed after {RETRIES + 1} attempts: {last}")
