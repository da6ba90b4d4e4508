"""Shared fixtures; tests/helpers (servers, jobs, references, shard writers) is importable from every test folder."""
import multiprocessing
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))

# EMP_DATA_TEST_WORKER_START=spawn starts every DataLoader worker and helper process of the tests by
# spawn. `make sanitize` sets it: under the preloaded ASan runtime (GCC 12's) a forked child hangs
# when another thread of the test process held the sanitizer's allocator lock at the fork.
if os.environ.get("EMP_DATA_TEST_WORKER_START"):
    multiprocessing.set_start_method(os.environ["EMP_DATA_TEST_WORKER_START"], force=True)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
