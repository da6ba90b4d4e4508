"""Tar writers shared by the fault tests: the fuzz seeds' writers (fuzz/make_seeds.py) and small shard sets."""
import importlib.util
import os
import tarfile
import time

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "fuzz")


def _wait_for(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.is_alive(), "the job died before it was ready"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _load_seed_writers():
    """fuzz/make_seeds.py writes the fuzz seeds with tarfile; the tests use the same writers."""
    spec = importlib.util.spec_from_file_location("emp_make_seeds", os.path.join(FUZZ, "make_seeds.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED_WRITERS = _load_seed_writers()


def _tar(members, fmt=tarfile.GNU_FORMAT):
    return SEED_WRITERS.tar_bytes(members, fmt)


def _shards(folder, count=4, per_shard=30):
    urls = []
    for s in range(count):
        url = os.path.join(folder, f"r-{s:02d}.tar")
        with open(url, "wb") as f:
            f.write(_tar([(f"r{s:02d}_{i:04d}.{ext}", f"{s}:{i}".encode()) for i in range(per_shard)
                          for ext in ("txt", "cls")]))
        urls.append(url)
    return urls
