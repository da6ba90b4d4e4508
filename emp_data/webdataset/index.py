"""Shard indexes for WebDataset tar shards: each sample's key and its members' offsets and sizes,
from the tar headers alone (scanned and grouped in C++), with dense ids in shard order. Also the
naming rules both stream modes share: urls, webdataset's key/field split, member-name decoding.

    index = build_index("data/train-{00000..00099}.tar", out="data/index.empidx")
    index.num_samples, index.shard_range(0), index.sample_members(0)

Sample ids and grouping follow webdataset: consecutive members whose names share the part before
the first dot of the basename form one sample; the rest of the name, lower-cased, is the field.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

import numpy as np

from .. import _C
from .._files import write_atomically as _write_atomically
from . import remote

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
        """Refuse an index whose local shards changed since it was built (size or mtime). Remote
        shards are checked by every read instead (size and ETag of each response), which costs no
        request here."""
        for shard in self.shards:
            if not remote.is_local(shard["url"]):
                continue
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


def build_index(urls, out=None, *, handler=None, distributed: bool = False, workers: int = 8,
                progress: bool | None = None) -> ShardIndex:
    """Scan every shard's tar headers and group members into samples (both in C++, no payload
    reads), then write a sidecar index to `out` (atomically; format version and checksum inside).
    Sample ids are dense, in shard order. A corrupt or truncated shard raises ValueError naming it
    and the offset; with a `handler` (e.g. webdataset's warn_and_continue) that returns True, the
    readable part of the shard is kept and the problem reported to it. Keys seen more than once in
    the shard set are counted in `duplicate_keys` and warned about (ids are positional, so such
    samples stay distinct).

    Urls are anything `emp_data.webdataset.remote` reads: local paths, http(s), fsspec protocols, `pipe:`.
    Remote shards are streamed once each (retried on transient errors) into a temporary file that
    the C++ scanner reads, `workers` shards at a time; the index records each one's size and ETag
    (or Last-Modified), and reads check them. A progress line goes to a terminal's stderr
    (`progress=None`: when stderr is a terminal).

    ``distributed=True`` (call it on every torch.distributed rank): each rank scans every world-th
    shard, the per-shard results are all-gathered, and every rank returns the same index, the one a
    single process builds; rank 0 writes `out`, and the call returns once it is on disk."""
    urls = expand_urls(urls)
    import torch.distributed as dist

    parallel = distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not parallel:
        scans = _scan_shards(urls, list(range(len(urls))), handler, workers, progress)
    else:
        rank, world = dist.get_rank(), dist.get_world_size()
        try:
            owned = list(range(rank, len(urls), world))
            mine = dict(zip(owned, _scan_shards(urls, owned, handler, workers, progress and rank == 0)))
        except Exception as exc:     # noqa: BLE001 - every rank must learn of it, or the others would hang
            mine = {"error": f"{type(exc).__name__}: {exc}"}
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        errors = [part["error"] for part in everyone if "error" in part]
        if errors:
            raise ValueError(f"build_index(distributed=True) failed on a rank: {errors[0]}")
        scans = [everyone[i % world][i] for i in range(len(urls))]
    parts = [arrays for arrays, _ in scans]
    shards_meta = [meta for _, meta in scans]
    shard_first_sample = [0]
    for meta in shards_meta:
        shard_first_sample.append(shard_first_sample[-1] + meta["num_samples"])
    key_hash = np.concatenate([p.pop("key_hash") for p in parts]) if parts else np.zeros(0, np.uint64)
    arrays = _concat_shards(parts, shard_first_sample)
    duplicates = _count_duplicate_keys(arrays["keys"], arrays["key_offsets"], key_hash)
    if duplicates and (not parallel or dist.get_rank() == 0):
        warnings.warn(f"{duplicates} sample keys occur more than once in the shard set", stacklevel=2)
    meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "num_samples": shard_first_sample[-1],
            "shards": shards_meta, "duplicate_keys": duplicates}
    index = ShardIndex(meta, arrays)
    if out is not None and (not parallel or dist.get_rank() == 0):
        index.save(out)
    if parallel:
        dist.barrier()               # `out` exists on return, on every rank
    return index


def _scan_shards(urls, which, handler, workers, progress) -> list:
    """_scan_shard of urls[i] for i in `which`, in that order, `workers` at a time for remote ones."""
    if progress is None:
        progress = sys.stderr.isatty()
    done = [0]

    def scan(i):
        out = _scan_shard(urls[i], handler)
        done[0] += 1
        if progress:
            print(f"\rbuild_index: {done[0]}/{len(which)} shards", end="", file=sys.stderr, flush=True)
        return out

    if any(not remote.is_local(urls[i]) for i in which) and workers > 1 and len(which) > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(scan, which))
    else:
        results = [scan(i) for i in which]
    if progress:
        print(file=sys.stderr)
    return results


def _scan_shard(url: str, handler) -> tuple[dict, dict]:
    """One shard's index arrays (key_hash included) and its entry in the shard list. A remote shard is
    streamed once into a temporary file for the C++ scanner (retried as a whole on a failure the
    stream could not resume from)."""
    if remote.is_local(url):
        path = remote.local_path(url)
        arrays = _index_file(url, path, handler)
        st = os.stat(path)
        return arrays, {"url": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "num_samples": len(arrays["key_offsets"]) - 1}
    with tempfile.NamedTemporaryFile(prefix="emp_shard_", suffix=".tar") as tmp:
        try:
            # An object store (fsspec) reports its ETag through info(), taken before the bytes: a
            # shard replaced while it streams then fails the check of the first epoch's reads.
            fsspec_etag = None if remote.is_http(url) or url.startswith("pipe:") else remote.stat(url)["etag"]
            with remote.open_stream(url) as stream:
                shutil.copyfileobj(stream, tmp, 4 << 20)
                etag = getattr(stream, "etag", None) or fsspec_etag
                last_modified = getattr(stream, "last_modified", None)
        except OSError as exc:       # failed for good after the retries (remote.RemoteError), or unreadable
            err = ValueError(f"shard '{url}' could not be read: {exc}")
            if handler is None or not handler(err):
                raise err from None
            return _no_samples(), {"url": url, "size": 0, "num_samples": 0}   # skipped: no ids
        tmp.flush()
        arrays = _index_file(url, tmp.name, handler)
        size = os.path.getsize(tmp.name)
    entry = {"url": url, "size": size, "num_samples": len(arrays["key_offsets"]) - 1}
    if etag is not None:
        entry["etag"] = etag
    if last_modified is not None:
        entry["last_modified"] = last_modified
    return arrays, entry


def _no_samples() -> dict:
    """The index arrays of a shard with no samples (one a handler skipped)."""
    empty_u8, zero = np.zeros(0, np.uint8), np.zeros(1, np.int64)
    return {"keys": empty_u8, "key_offsets": zero, "exts": empty_u8, "ext_offsets": zero.copy(),
            "member_offset": np.zeros(0, np.uint64), "member_size": np.zeros(0, np.uint64),
            "sample_first_member": zero.copy(), "key_hash": np.zeros(0, np.uint64)}


def _index_file(url: str, path: str, handler) -> dict:
    arrays, _size, scan_error, error_offset, group_error = _C.index_shard(path)
    if group_error:
        raise ValueError(f"shard '{url}': {group_error}")
    if scan_error:
        exc = ValueError(f"shard '{url}': {scan_error} at byte offset {error_offset}")
        if handler is None or not handler(exc):
            raise exc
        # The stream drops the sample it was assembling when a shard breaks (as webdataset's
        # group_by_keys does): its members after the break are lost. The index drops it too, so both
        # keep the same samples.
        arrays = _without_last_sample(arrays)
    return arrays


def _without_last_sample(a: dict) -> dict:
    n = len(a["key_offsets"]) - 1
    if n == 0:
        return a
    members = int(a["sample_first_member"][n - 1])
    out = dict(a)
    out["keys"] = a["keys"][:int(a["key_offsets"][n - 1])]
    out["key_offsets"] = a["key_offsets"][:n]
    out["sample_first_member"] = a["sample_first_member"][:n]
    out["member_offset"], out["member_size"] = a["member_offset"][:members], a["member_size"][:members]
    out["ext_offsets"] = a["ext_offsets"][:members + 1]
    out["exts"] = a["exts"][:int(a["ext_offsets"][members])]
    if "key_hash" in a:
        out["key_hash"] = a["key_hash"][:n - 1]
    return out
