"""Property tests: tar files that Python's tarfile writes in every format (ustar, GNU, pax), with
long names, non-ASCII names, empty and odd-sized payloads, folders and members that are not part of
a sample, are read by build_index (C++ header scan + grouping) and by the streamed path exactly as
webdataset reads them: the same keys, the same fields, the same bytes, in the same order."""
import io
import os
import tarfile
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emp_data import Pruner  # noqa: E402
from emp_data.webdataset import PrunedIterableDataset, build_index  # noqa: E402

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
# Key characters: ASCII and a few multi-byte ones; no '.', which splits key from field.
KEY_CHARS = st.sampled_from(list("abcXYZ019_-") + ["\u00e9", "\u4e2d", " "])
FIELDS = st.sampled_from(["txt", "cls", "npy", "jpg", "json", "seg.png", "TXT"])


@st.composite
def shard(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    count = draw(st.integers(1, 6))
    members, used = [], set()
    for _ in range(count):
        folder = draw(st.sampled_from(["", "train/", "a/b/"]))
        stem = draw(st.text(KEY_CHARS, min_size=1, max_size=12))
        if draw(st.booleans()) and fmt != "ustar":
            stem = stem * (120 // len(stem) + 1)          # a long name: GNU 'L' entries or pax path
        key = folder + stem
        if key in used or stem.startswith("__"):
            continue
        used.add(key)
        fields = draw(st.lists(FIELDS, min_size=1, max_size=3, unique_by=str.lower))
        for field in fields:
            size = draw(st.sampled_from([0, 1, 511, 512, 513, 3000]))
            members.append((f"{key}.{field}", bytes([len(members) % 251]) * size))
    extras = draw(st.sampled_from(["none", "dir", "nodot"]))
    return fmt, members, extras


def write(path, fmt, members, extras):
    with tarfile.open(path, "w", format=FORMATS[fmt]) as tar:
        if extras == "dir":
            info = tarfile.TarInfo("train")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extras == "nodot":
            info = tarfile.TarInfo("README")                 # no key.field split: not a sample
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))


def webdataset_samples(path):
    from webdataset import tariterators

    with open(path, "rb") as stream:
        files = tariterators.tar_file_expander([{"stream": stream, "url": path}])
        out = []
        for sample in tariterators.group_by_keys(files):
            out.append((sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}))
        return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shard())
def test_tarfile_shards_read_as_webdataset_reads_them(case):
    fmt, members, extras = case
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "shard.tar")
        write(path, fmt, members, extras)
        expected = webdataset_samples(path)
        index = build_index([path])
        raw = open(path, "rb").read()
        indexed = [(index.sample_key(i), {f: raw[o:o + s] for f, o, s in index.sample_members(i)})
                   for i in range(index.num_samples)]
        assert indexed == expected
        pruner = Pruner(max(index.num_samples, 1), policy="full", store_path=os.path.join(folder, "s.emp"))
        for source in (dict(index=index), dict(key_table=os.path.join(folder, "k.keys"))):
            if index.num_samples == 0:
                break
            ds = PrunedIterableDataset([path], pruner, **source)
            ds.set_epoch(0)
            streamed = [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}) for s in ds]
            assert streamed == expected
