"""Small WebDataset shard sets that tests write for themselves."""
import io
import os
import tarfile

import numpy as np

SHARDS, PER_SHARD = 4, 50


def write_shards(folder, shards=SHARDS, per_shard=PER_SHARD, prefix="s"):
    urls = []
    for s in range(shards):
        url = os.path.join(folder, f"{prefix}-{s:03d}.tar")
        with tarfile.open(url, "w") as tar:
            for i in range(per_shard):
                key = f"{prefix}{s:03d}_{i:05d}"
                payload = np.full(64, s * 1000 + i, dtype=np.int32).tobytes()
                for ext, data in (("bin", payload), ("cls", str(i % 10).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(url)
    return urls
