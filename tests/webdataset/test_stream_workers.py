"""Streams with DataLoader workers: the epoch they read, selects while they read, resume in a pipeline, persistent workers."""
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


def test_persistent_workers_reshuffle_and_follow_set_epoch(tmp_path):
    urls = _shards(str(tmp_path))
    build_index(urls, out=tmp_path / "i.empidx")
    pruner = Pruner(120, policy="random", prune_ratio=0.5, seed=1, store_path=tmp_path / "s.emp")
    ds = PrunedIterableDataset(urls, pruner, index=tmp_path / "i.empidx")
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        got = [(int(s["__id__"]), s["__url__"]) for s in loader]
        assert sorted(i for i, _ in got) == sorted(pruner.select(epoch)[0].tolist())
        orders.append([u for _, u in got])
    # The workers' shard order changes with the epoch (each worker's first shard, at least).
    firsts = [tuple(dict.fromkeys(o))[:2] for o in orders]
    assert len(set(firsts)) > 1, firsts


def test_workers_refuse_a_store_with_no_selected_epoch(tmp_path):
    urls = _shards(str(tmp_path), count=2)
    pruner = Pruner(60, policy="random", prune_ratio=0.5, store_path=tmp_path / "s.emp")
    ds = PrunedIterableDataset(urls, pruner, index=build_index(urls))
    with pytest.raises(ValueError, match="no epoch is selected"):
        list(DataLoader(ds, batch_size=None, num_workers=1))


def test_a_select_mid_read_is_an_error_not_a_mix(tmp_path):
    urls = _shards(str(tmp_path), count=2)
    pruner = Pruner(60, policy="random", prune_ratio=0.5, store_path=tmp_path / "s.emp")
    ds = PrunedIterableDataset(urls, pruner, index=build_index(urls))
    ds.set_epoch(0)
    it = iter(DataLoader(ds, batch_size=None, num_workers=1, prefetch_factor=1))
    next(it)
    pruner.select(1)                                   # the trainer moves on while the worker reads
    with pytest.raises(RuntimeError, match="still reading epoch 0"):
        for _ in it:
            pass


def test_a_select_while_other_processes_read_is_never_seen_half_done(tmp_path):
    """One process selects epochs 0..3 in a loop on a 200k store; two others copy the weights again
    and again. Under the epoch stamp every copy is exactly one epoch's keep set; the same reader on
    the raw array (no stamp) does see mixes, so the writer really overlaps the readers."""
    n = 200_000
    path = str(tmp_path / "s.emp")
    pruner = Pruner(n, policy="random", prune_ratio=0.5, seed=3, store_path=path)
    expected = [pruner.select(e)[0] for e in range(4)]
    masks = []
    for ids in expected:
        m = np.zeros(n, bool)
        m[ids] = True
        masks.append(m)
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=faults.pruner_job, args=(path, n))
    writer.start()
    try:
        q = ctx.Queue()
        readers = [ctx.Process(target=faults.read_weights_while_selecting, args=(path, masks, 3.0, q)),
                   ctx.Process(target=faults.torn_reads_without_the_lock, args=(path, masks, 3.0, q))]
        for r in readers:
            r.start()
        results = [q.get(timeout=120) for _ in readers]
        for r in readers:
            r.join(30)
    finally:
        writer.kill()
        writer.join()
    by_kind = {kind: (reads, bad) for kind, reads, bad in results}
    # Some complete reads (a reader can be starved while the writer selects back to back, and an
    # ASan build copies slowly), none of them a mix.
    assert by_kind["locked"][0] >= 5 and by_kind["locked"][1] == 0, by_kind
    assert by_kind["raw"][1] > 0, f"the raw reader never saw a select in progress: {by_kind}"


@pytest.mark.parametrize("persistent,shuffle", [(False, False), (True, False), (True, True)])
def test_the_readme_pipeline_resumes_exactly_under_stateful_dataloader(tmp_path, persistent, shuffle):
    """The README recipe: the stream inside wds.DataPipeline (so torchdata cannot reach its state and
    fast-forwards the pipeline instead), StatefulDataLoader with 2 workers. Stopped mid-epoch 1 and
    resumed by a new loader, the run reads exactly what an uninterrupted run reads, because workers
    take the epoch from the store (before, persistent workers replayed their own stale epoch). A
    shuffle stage must be seeded for a replay to repeat it."""
    import webdataset as wds
    from torchdata.stateful_dataloader import StatefulDataLoader

    urls = _shards(str(tmp_path))
    index = build_index(urls)

    def make(name):
        pruner = Pruner(120, policy="random", prune_ratio=0.4, seed=6, store_path=tmp_path / name)
        stream = PrunedIterableDataset(urls, pruner, index=index)
        stages = [stream] + ([wds.shuffle(20, seed=0)] if shuffle else []) + [wds.to_tuple("__id__", "cls")]
        loader = StatefulDataLoader(wds.DataPipeline(*stages), batch_size=None, num_workers=2,
                                    persistent_workers=persistent)
        return stream, loader

    def run(stream, loader, epochs, stop=None):
        out = []
        for epoch in epochs:
            stream.set_epoch(epoch)
            for i, (sid, _) in enumerate(loader):
                out.append((epoch, int(sid)))
                if stop == (epoch, i + 1):
                    return out, loader.state_dict()
        return out, None

    reference, _ = run(*make("a.emp"), range(3))
    head, state = run(*make("b.emp"), range(3), stop=(1, 23))
    stream, loader = make("c.emp")
    loader.load_state_dict(state)
    tail, _ = run(stream, loader, [1, 2])
    assert head + tail == reference


def test_reading_an_epoch_again_without_set_epoch_warns(tmp_path):
    """A forgotten set_epoch with workers: pruning is not off (the workers read the stamped
    selection), but the same epoch comes again, and the workers say so on their stderr (where a
    DataLoader worker's warnings go), persistent or not. Run as a script: pytest's own warning
    capture would swallow the forked workers' warnings."""
    urls = _shards(str(tmp_path), count=4)
    code = textwrap.dedent(f"""
        import sys
        from torch.utils.data import DataLoader
        from emp_data import Pruner
        from emp_data.webdataset import PrunedIterableDataset, build_index
        urls = {urls!r}
        pruner = Pruner(120, policy="random", prune_ratio=0.5, store_path={str(tmp_path / "s.emp")!r})
        ds = PrunedIterableDataset(urls, pruner, index=build_index(urls))
        for persistent in (False, True):
            loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=persistent)
            ds.set_epoch(3 + persistent)
            for attempt in ("first", "again"):
                print(f"--- {{persistent}} {{attempt}}", file=sys.stderr, flush=True)
                print(len(list(loader)), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["60"] * 4                     # pruned every time: half of 120
    sections = done.stderr.split("--- ")[1:]
    for section, warned in zip(sections, (False, True, False, True)):
        epoch = 4 if section.startswith("True") else 3
        assert (f"epoch {epoch} is read a second time" in section) == warned, section


def test_a_main_process_load_state_dict_reaches_persistent_workers(tmp_path):
    urls = _shards(str(tmp_path))
    pruner = Pruner(120, policy="random", prune_ratio=0.5, seed=4, store_path=tmp_path / "s.emp")
    ds = PrunedIterableDataset(urls, pruner, index=build_index(urls))
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    ds.set_epoch(0)
    assert sorted(int(s["__id__"]) for s in loader) == sorted(pruner.select(0)[0].tolist())
    ds.load_state_dict({"epoch": 5, "shard": 0, "sample": 0})      # e.g. restored from a checkpoint
    assert sorted(int(s["__id__"]) for s in loader) == sorted(pruner.select(5)[0].tolist())
