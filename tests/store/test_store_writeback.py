"""A memory-mapped store updated at random ids writes back about a page per changed sample, not a
large folio (up to 2 MiB) per changed sample, which the page cache would otherwise use for the file."""
import os

import numpy as np
import pytest

from emp_data.store.host import ScoreStore

PAGE = 4096


def written_bytes() -> int:
    try:
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("write_bytes")).split()[1])
    except (OSError, StopIteration):
        pytest.skip("no per-process I/O accounting here")


@pytest.mark.parametrize("reopen", [False, True])
def test_random_updates_write_back_a_page_per_sample(tmp_path, reopen):
    n = 4_000_000                                  # 96 MB of records
    path = tmp_path / "s.emp"
    store = ScoreStore(n, path)
    store.update(np.arange(n), np.ones(n, np.float32))
    store.flush()
    if reopen:                                     # a restart: the file comes back from the page cache
        del store
        store = ScoreStore.open(path, readonly=False)
    ids = np.random.default_rng(0).choice(n, 1000, replace=False)
    before = written_bytes()
    store.update(ids, np.full(1000, 2.0, np.float32))
    store.flush()
    written = written_bytes() - before
    # Each id dirties its record's page (sometimes two, where a record straddles pages) and the
    # weights are untouched; the header page is written too. 1000 pages at most twice over.
    assert written <= 2 * 1000 * PAGE + 64 * PAGE, f"{written / 1e6:.1f} MB written for 1000 updated samples"
    os.sync()
