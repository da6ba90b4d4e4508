"""One resume check for every resumable thing: the map-style sampler, the torchdata node, and every
stream mode (indexed, streamed with a key table, wids index, a webdataset pipeline source). Each is
cut at the start of an epoch, after one sample, mid-epoch, before its last sample and at its end;
a new one restored from the state yields exactly what the uninterrupted one yields from there on,
through the next epoch."""
import json
import os

import pytest
import webdataset as wds

from emp_data import Pruner, PrunedSampler
from emp_data.torch_data import PrunedSamplerNode
from emp_data.webdataset import PrunedIterableDataset, build_index
from emp_data.webdataset.shares import Seat

from shards import PER_SHARD, SHARDS, write_shards

N = SHARDS * PER_SHARD
CUTS = ("start", "first", "mid", "last", "end")
EPOCH = 1


def check_resume(run_from, cuts=CUTS):
    """`run_from(state, count, through)` makes a fresh resumable thing, restores `state` (None:
    start at EPOCH) and reads `count` ids, or (count None) every id through epoch `through`; it
    returns (ids, state now). Every cut and restore must reproduce the uninterrupted sequence."""
    reference, _ = run_from(None, None, EPOCH + 1)
    per_epoch = len(run_from(None, None, EPOCH)[0])
    positions = {"start": 0, "first": 1, "mid": per_epoch // 2, "last": per_epoch - 1, "end": per_epoch}
    for cut in cuts:
        head, state = run_from(None, positions[cut], None)
        tail, _ = run_from(state, None, EPOCH + 1)
        assert head == reference[:positions[cut]], cut
        assert head + tail == reference, (cut, state, len(head), len(tail), len(reference))


def _stream_runner(make):
    def run_from(state, count, through):
        stream = make()
        if state is None:
            stream.set_epoch(EPOCH)
        else:
            stream.load_state_dict(state)
        if count is not None:
            it = iter(stream)
            out = [int(next(it)["__id__"]) for _ in range(count)]
            return out, stream.state_dict()
        out = []
        while stream.epoch <= through:                  # a pass advances the epoch by itself here
            out += [int(s["__id__"]) for s in stream]
        return out, stream.state_dict()
    return run_from


def _sampler_runner(pruner):
    def run_from(state, count, through):
        sampler = PrunedSampler(pruner, start_epoch=EPOCH)
        it = iter(sampler)
        if state is not None:
            it.load_state_dict(state)
        if count is not None:
            return [next(it) for _ in range(count)], it.state_dict()
        out = list(it)                                   # exhausting it advances the sampler's epoch
        while sampler.epoch <= through:
            out += list(iter(sampler))
        return out, None
    return run_from


def _node_runner(pruner):
    def run_from(state, count, through):
        node = PrunedSamplerNode(pruner, start_epoch=EPOCH)
        node.reset(state)
        if count is not None:
            return [node.next() for _ in range(count)], node.get_state()
        out = _drain(node)
        while node.get_state()["epoch"] < through:
            node.reset()
            out += _drain(node)
        return out, None
    return run_from


def _drain(node):
    out = []
    while True:
        try:
            out.append(node.next())
        except StopIteration:
            return out


def test_the_sampler_and_the_node_resume_at_every_cut():
    pruner = Pruner(300, policy="random", prune_ratio=0.4, seed=5)
    check_resume(_sampler_runner(pruner))
    check_resume(_node_runner(pruner))


def _make(mode, folder, urls):
    pruner = Pruner(N, policy="random", prune_ratio=0.4, seed=5, store_path=os.path.join(folder, f"{mode}.emp"))
    if mode == "index":
        index = build_index(urls)
        return lambda: PrunedIterableDataset(urls, pruner, index=index)
    if mode == "key_table":
        return lambda: PrunedIterableDataset(urls, pruner, key_table=os.path.join(folder, "k.keys"))
    if mode == "wids":
        path = os.path.join(folder, "w.json")
        with open(path, "w") as f:
            json.dump({"wids_version": 1, "shardlist": [{"url": u, "nsamples": PER_SHARD} for u in urls]}, f)
        return lambda: PrunedIterableDataset(None, pruner, index=path)
    return lambda: PrunedIterableDataset(wds.WebDataset(urls, shardshuffle=False), pruner,
                                         key_table=os.path.join(folder, "p.keys"))


@pytest.mark.parametrize("mode", ["index", "key_table", "wids", "pipeline"])
def test_every_stream_mode_resumes_at_every_cut(tmp_path, mode):
    urls = write_shards(str(tmp_path))
    check_resume(_stream_runner(_make(mode, str(tmp_path), urls)))


@pytest.mark.parametrize("mode", ["index", "wids"])
def test_ranks_get_equal_shares_and_padding_resumes(tmp_path, monkeypatch, mode):
    """Rank r of 2 (simulated in one process): the epoch's kept samples, in shard order, are cut into
    one run per rank (a shard may be split between them); each rank yields its run, then at most one
    repeat, so both yield the same number; a resume cut inside a run or the padding continues it."""
    urls = write_shards(str(tmp_path), shards=5)
    n = 5 * PER_SHARD
    pruner = Pruner(n, policy="random", prune_ratio=0.4, seed=5, store_path=tmp_path / "s.emp")
    if mode == "index":
        index = build_index(urls)
    else:
        index = os.path.join(str(tmp_path), "w.json")
        with open(index, "w") as f:
            json.dump({"wids_version": 1, "shardlist": [{"url": u, "nsamples": PER_SHARD} for u in urls]}, f)
    counts, owns = [], []
    for rank in (0, 1):
        monkeypatch.setattr(PrunedIterableDataset, "_seat", lambda self, r=rank: Seat(rank=r, world=2))
        make = lambda: PrunedIterableDataset(urls, pruner, index=index)  # noqa: E731
        stream = make()
        stream.set_epoch(1)
        order = stream.shares.order(stream.epoch)                     # before the pass: it moves to epoch 2
        got = [int(s["__id__"]) for s in stream]
        keep = set(pruner.select(1)[0].tolist())
        in_order = [i for s in order for i in range(s * PER_SHARD, (s + 1) * PER_SHARD) if i in keep]
        half = len(in_order) // 2
        own = in_order[:half] if rank == 0 else in_order[half:]
        assert got[:len(own)] == own and set(got[len(own):]) <= set(own)
        assert len(got) == -(-len(in_order) // 2) and len(got) - len(own) <= 1      # at most one repeat
        assert stream.steps_per_epoch(1, epoch=1) == len(got)     # one rank's count, padding included
        counts.append(len(got))
        owns.append(len(own))
        check_resume(_stream_runner(make), cuts=("first", "mid", "last", "end"))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_steps_per_epoch_counts_each_workers_partial_batch(tmp_path, workers):
    import torch

    urls = write_shards(str(tmp_path), shards=5)
    n = 5 * PER_SHARD
    pruner = Pruner(n, policy="random", prune_ratio=0.45, seed=2, store_path=tmp_path / "s.emp")
    stream = PrunedIterableDataset(urls, pruner, index=build_index(urls))
    stream.set_epoch(1)
    predicted = stream.steps_per_epoch(16, num_workers=workers)
    loader = torch.utils.data.DataLoader(stream, batch_size=16, num_workers=workers,
                                         collate_fn=_batch_size)
    assert predicted == len(list(loader))
    assert pruner.steps_per_epoch(16) <= predicted


@pytest.mark.parametrize("mode", ["index", "key_table"])
def test_streams_over_http_resume_at_every_cut(tmp_path, mode):
    """The same cuts with the shards on a loopback HTTP server: range reads (index) and streamed
    shards (key table) resume where they stopped, nothing repeated or dropped."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _http_server import ShardServer

    local = write_shards(str(tmp_path))
    with ShardServer(str(tmp_path)) as server:
        urls = [f"{server.url}/{os.path.basename(u)}" for u in local]
        check_resume(_stream_runner(_make(mode, str(tmp_path), urls)))


def _recipe(tmp_path, shards, calls=None, pruner=None):
    """The README's recipe: the stream inside a pipeline of decode stages (a PrunedPipeline)."""
    from emp_data.webdataset import PrunedPipeline

    if pruner is None:
        pruner = Pruner(N, policy="random", prune_ratio=0.5, epochs=3, seed=1, store_path=tmp_path / "scores.emp",
                        overwrite=True)
    stream = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    return PrunedPipeline(stream, wds.map(_RecordDecodes(calls)), wds.to_tuple("__id__", "cls"))


# Module-level, so that workers started by spawn (`make sanitize`) can unpickle them.
def _batch_size(batch):
    return len(batch)


class _RecordDecodes:
    """A decode stage that appends each sample's id to `calls` (None: records nothing)."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, sample):
        if self.calls is not None:
            self.calls.append(int(sample["__id__"]))
        return sample


@pytest.mark.parametrize("workers", [0, 2])
def test_the_readme_pipeline_resumes_by_seeking_not_replaying(tmp_path, workers):
    import warnings

    from torchdata.stateful_dataloader import StatefulDataLoader

    shards = write_shards(str(tmp_path))
    build_index(shards, out=tmp_path / "idx.empidx")

    def batches(loader):
        return [b[0].tolist() for b in loader]

    pipeline = _recipe(tmp_path, shards)
    pipeline.set_epoch(EPOCH)
    reference = batches(StatefulDataLoader(pipeline, batch_size=8, num_workers=workers))
    for cut in (1, len(reference) // 2, len(reference) - 1):
        pipeline = _recipe(tmp_path, shards)
        pipeline.set_epoch(EPOCH)
        loader = StatefulDataLoader(pipeline, batch_size=8, num_workers=workers)
        it = iter(loader)
        head = [next(it)[0].tolist() for _ in range(cut)]
        state = loader.state_dict()
        pipeline.stream.pruner.save(tmp_path / "ckpt" / "pruner.emp")
        del it, loader, pipeline
        calls = []
        # A restarted job: the checkpoint into the live file the workers read, then the loader's state.
        pruner = Pruner.load(tmp_path / "ckpt" / "pruner.emp", store_path=tmp_path / "scores.emp")
        resumed = StatefulDataLoader(_recipe(tmp_path, shards, calls, pruner), batch_size=8, num_workers=workers)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed.load_state_dict(state)
            tail = batches(resumed)
        assert head + tail == reference, cut
        assert not [w for w in caught if "fast-forwarding" in str(w.message)]
        if workers == 0:
            # The decode stage ran on what was left of the epoch only: no replay of the first batches.
            assert calls == [i for batch in tail for i in batch], cut


def test_a_pipeline_stage_that_buffers_samples_is_refused(tmp_path):
    from emp_data.webdataset import PrunedPipeline

    shards = write_shards(str(tmp_path))
    build_index(shards, out=tmp_path / "idx.empidx")
    stream = PrunedIterableDataset(shards, Pruner(N, policy="random"), index=tmp_path / "idx.empidx")
    with pytest.raises(ValueError, match=r"stage 2 \(shuffle\) holds samples in a buffer"):
        PrunedPipeline(stream, wds.decode(), wds.shuffle(100))
    with pytest.raises(TypeError, match="starts with a PrunedIterableDataset"):
        PrunedPipeline(wds.SimpleShardList(shards), wds.decode())
