"""Seed inputs for the fuzz targets, made by the real writers: tar files from Python's tarfile in
each format (ustar, GNU, pax; long names, a pax size record, non-UTF-8 names) and webdataset's
TarWriter, a store snapshot, a key table, a shard index and wids JSON. `python fuzz/make_seeds.py DIR`
writes DIR/<target>/*."""
import io
import json
import os
import sys
import tarfile
import tempfile

import numpy as np


def tar_bytes(members, fmt):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pax_size_member(name: str, payload: bytes) -> bytes:
    """One member whose size is only in a pax 'size' record (the ustar field says 0), as tarfile and
    GNU tar write members over 8 GiB: its header blocks and padded payload."""
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.pax_headers = {"size": str(len(payload))}
    header = bytearray(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    ustar = header[-512:]
    ustar[124:136] = b"%011o\0" % 0
    ustar[148:156] = b"        "
    ustar[148:156] = b"%06o\0 " % sum(ustar)
    header[-512:] = ustar
    return bytes(header) + payload + b"\0" * (-len(payload) % 512)


def pax_size_tar(payload: bytes) -> bytes:
    """A pax-size member, then an ordinary one."""
    return pax_size_member("s000.bin", payload) + tar_bytes([("s001.cls", b"7")], tarfile.USTAR_FORMAT)


def main(out):
    samples = [(f"s{i:03d}.{ext}", bytes([i]) * (i * 37 % 700)) for i in range(6) for ext in ("bin", "cls")]
    tars = {
        "ustar": tar_bytes(samples, tarfile.USTAR_FORMAT),
        "gnu_longname": tar_bytes([("d/" + "x" * 150 + ".bin", b"abc"), ("d/" + "x" * 150 + ".txt", b"de")],
                                  tarfile.GNU_FORMAT),
        "pax": tar_bytes([("p" * 120 + ".json", b"{}"), ("caf\u00e9.txt", b"x")], tarfile.PAX_FORMAT),
        "non_utf8": tar_bytes([("k\udcff.bin", b"1"), ("k\udcff.cls", b"2")], tarfile.GNU_FORMAT),
        "pax_size": pax_size_tar(b"payload" * 100),
    }
    import webdataset as wds

    buf = io.BytesIO()
    with wds.TarWriter(buf) as w:
        for i in range(3):
            w.write({"__key__": f"w{i:03d}", "npy": np.arange(i + 2).tobytes(), "txt": f"caption {i}"})
    tars["wds"] = buf.getvalue()

    from emp_data import ScoreStore
    from emp_data.webdataset import KeyTable, build_index

    with tempfile.TemporaryDirectory() as tmp:
        store = ScoreStore(5)
        store.update([1, 3], np.array([0.5, 2.0], np.float32))
        store.save(os.path.join(tmp, "s.emp"), metadata=b'{"state_version": 1}')
        live = ScoreStore(3, path=os.path.join(tmp, "live.emp"))
        live.flush()
        table = KeyTable(8, os.path.join(tmp, "t.keys"), key_bytes=24)
        for i in range(5):
            table.id_of("shard-0.tar", f"k{i}")
        table.flush()
        shard = os.path.join(tmp, "shard.tar")
        with open(shard, "wb") as f:
            f.write(tars["ustar"])
        build_index([shard], out=os.path.join(tmp, "i.empidx"))
        files = {
            "store": {"snapshot": open(os.path.join(tmp, "s.emp"), "rb").read(),
                      "live": open(os.path.join(tmp, "live.emp"), "rb").read()},
            "key_table": {"table": open(os.path.join(tmp, "t.keys"), "rb").read()},
            "shard_index": {"index": open(os.path.join(tmp, "i.empidx"), "rb").read(),
                            # 'S': arrays built from the bytes under a right checksum (checks.py)
                            "structured": b"S" + bytes(range(256)) * 2},
        }
    files["tar"] = tars
    files["wids_json"] = {
        "plain": json.dumps({"wids_version": 1, "shardlist": [{"url": "a.tar", "nsamples": 3},
                                                             {"url": "b.tar", "nsamples": 0}]}).encode(),
        "datasets": json.dumps({"__kind__": "wids-shard-index-v1", "wids_version": 1,
                                "datasets": [{"base": "sub", "shardlist": [{"url": "c.tar", "nsamples": 2}]}]}).encode(),
    }
    for target, seeds in files.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(out, target, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
