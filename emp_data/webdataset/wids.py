"""wids shard indexes as an id source: the JSON that ``widsindex create`` (webdataset's wids) writes,
with each shard's url and sample count. Ids are dense in shard order, sample j of shard s being
``first(s) + j``, so a stream needs neither a key table nor a header scan; shards are still streamed,
since the JSON has no member offsets.

    {"__kind__": "wids-shard-index-v1", "wids_version": 1,
     "shardlist": [{"url": "train-000000.tar", "nsamples": 10000}, ...]}

Relative urls are resolved against the JSON file's folder, as wids does.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import remote

WIDS_KIND = "wids-shard-index-v1"


class WidsIndex:
    """Shard urls and per-shard sample counts, with global dense ids in shard order."""

    def __init__(self, urls, nsamples, path=None):
        urls = [os.fspath(u) for u in urls]
        counts = [int(c) for c in nsamples]
        if len(urls) != len(counts):
            raise ValueError(f"{len(urls)} urls but {len(counts)} sample counts")
        if not urls:
            raise ValueError("a wids index needs at least one shard")
        if min(counts) < 0:
            raise ValueError(f"shard {counts.index(min(counts))} has a negative sample count")
        self.urls = urls
        self.nsamples = np.asarray(counts, dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(self.nsamples)]).astype(np.int64)
        self.num_samples = int(self._first[-1])
        self.path = None if path is None else os.fspath(path)

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Global ids [first, last) of the samples in shard number `shard`."""
        return int(self._first[shard]), int(self._first[shard + 1])

    @classmethod
    def load(cls, path) -> "WidsIndex":
        path = os.fspath(path)
        try:
            if remote.is_local(path):
                with open(remote.local_path(path), "rb") as f:
                    spec = json.load(f)
            else:                    # a remote index: its relative shard urls are relative to it
                with remote.open_stream(path) as f:
                    spec = json.loads(f.read())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:   # RecursionError: deep nesting
            raise ValueError(f"'{path}' is not a wids shard index (not JSON: {exc})") from None
        if not isinstance(spec, dict):
            raise ValueError(f"'{path}' is not a wids shard index (a JSON object is expected)")
        kind = spec.get("__kind__", WIDS_KIND)
        if kind != WIDS_KIND:
            raise ValueError(f"'{path}' is a {kind!r}, not a {WIDS_KIND!r} shard index")
        if spec.get("wids_version") != 1:
            raise ValueError(f"'{path}' has wids_version {spec.get('wids_version')!r}; this emp_data reads version 1")
        folder = os.path.dirname(os.path.abspath(remote.local_path(path))) if remote.is_local(path) else \
            path.rsplit("/", 1)[0]
        entries = [(e, folder) for e in _shardlist(spec.get("shardlist", []), path, "shardlist")]
        datasets = spec.get("datasets", [])
        if not isinstance(datasets, list):
            raise ValueError(f"'{path}': datasets must be a list, got {type(datasets).__name__}")
        for c, component in enumerate(datasets):
            if not isinstance(component, dict):
                raise ValueError(f"'{path}': datasets[{c}] must be an object, got {type(component).__name__}")
            if "source_url" in component:
                raise ValueError(f"'{path}': datasets[{c}] refers to another description (source_url); only "
                                 "inline shardlists are read")
            base = component.get("base")
            if base is not None and (not isinstance(base, str) or "\0" in base):
                raise ValueError(f"'{path}': datasets[{c}].base must be a folder name, got {base!r}")
            base = folder if base is None else _join(folder, base)
            shards = _shardlist(component.get("shardlist", []), path, f"datasets[{c}].shardlist")
            entries += [(e, base) for e in shards]
        if not entries:
            raise ValueError(f"'{path}' lists no shards")
        urls, counts = [], []
        for s, (entry, base) in enumerate(entries):
            url, count = entry.get("url"), entry.get("nsamples")
            if not isinstance(url, str) or not url or "\0" in url:
                raise ValueError(f"'{path}': shard {s} has no url (or not a string path)")
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**48:
                raise ValueError(f"'{path}': shard {s} ({url}) needs an integer nsamples >= 0, got {count!r}")
            urls.append(_join(base, url))
            counts.append(count)
        return cls(urls, counts, path)

    def __repr__(self) -> str:
        return f"WidsIndex({len(self.urls)} shards, {self.num_samples} samples)"


def _join(base: str, url: str) -> str:
    """A shard url from the index: absolute urls (any scheme) as given, relative ones against the
    index's folder (a local folder or a remote url's)."""
    if "://" in url or url.startswith("pipe:"):
        return remote.local_path(url) if url.startswith("file://") else url
    if remote.is_local(base):
        return os.path.normpath(os.path.join(base, url))
    return base.rstrip("/") + "/" + url


def _shardlist(shards, path: str, where: str) -> list:
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise ValueError(f"'{path}': {where} must be a list of {{url, nsamples}} objects")
    return shards


def looks_like_json(path) -> bool:
    """True when the file's first non-blank byte opens a JSON object (a wids index, not ours)."""
    path = os.fspath(path)
    if not remote.is_local(path):
        return path.split("?")[0].endswith(".json")
    try:
        with open(remote.local_path(path), "rb") as f:
            return f.read(256).lstrip().startswith(b"{")
    except OSError:
        return False
