"""Shared fixtures; tests/helpers (servers, jobs, references, shard writers) is importable from every test folder."""
import multiprocessing
import pathlib
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
from _worker_start import WORKER_START_OVERRIDE  # noqa: E402

if WORKER_START_OVERRIDE:
    multiprocessing.set_start_method(WORKER_START_OVERRIDE, force=True)


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
