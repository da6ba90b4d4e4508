"""A Pruner and the files it writes: never over its live store, never over an existing one."""
import importlib.util
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emp_data import Pruner, ScoreStore
from emp_data.webdataset import KeyTable, PrunedIterableDataset, build_index

import _fault_jobs as faults  # noqa: F401
from tar_writers import SEED_WRITERS, _shards, _tar, _wait_for  # noqa: F401


def test_pruner_save_refuses_its_store_path(tmp_path):
    pruner = Pruner(20, policy="random", prune_ratio=0.5, store_path=tmp_path / "live.emp")
    pruner.select(0)
    with pytest.raises(ValueError, match="live store file"):
        pruner.save(str(tmp_path / "." / "live.emp"))
    pruner.save(tmp_path / "ckpt.emp")
    assert Pruner.load(tmp_path / "ckpt.emp").epoch == 0


def test_a_new_pruner_refuses_an_existing_store_file_and_load_restores_into_one(tmp_path):
    live = tmp_path / "scores.emp"
    first = Pruner(50, policy="random", prune_ratio=0.5, seed=2, store_path=live)
    first.select(0)
    first.loss(torch.ones(10), np.arange(10))
    first.save(tmp_path / "ckpt.emp")
    for n in (50, 60):                                   # same N or not: the scores would be wiped
        with pytest.raises(ValueError, match="already holds a score store of 50 samples"):
            Pruner(n, policy="random", prune_ratio=0.5, store_path=live)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a score store"):
        Pruner(5, store_path=tmp_path / "notes.txt")
    fresh = Pruner(50, policy="random", prune_ratio=0.5, store_path=live, overwrite=True)
    assert np.isnan(fresh.store.loss).all()
    # The restore step for stream workers: the checkpoint into a live file they can map.
    back = Pruner.load(tmp_path / "ckpt.emp", store_path=live)
    assert back.store_path == str(live) and back.epoch == 0
    mapped = ScoreStore.open(live)
    assert np.array_equal(mapped.loss, first.store.loss, equal_nan=True)
    assert mapped.epoch_stamp() == 0 and np.array_equal(mapped.weight, first.store.weight)
    with pytest.raises(ValueError, match="the checkpoint itself"):
        Pruner.load(tmp_path / "ckpt.emp", store_path=tmp_path / "ckpt.emp")
