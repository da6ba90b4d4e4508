import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from emp_data import Pruner
from emp_data.webdataset import PrunedIterableDataset, ShardIndex, build_index

from shards import PER_SHARD, SHARDS, write_shards  # noqa: E402,F401


def value_of(sample):
    return int(np.frombuffer(sample["bin"], dtype=np.int32)[0])


@pytest.fixture
def shards(tmp_path):
    return write_shards(str(tmp_path))


def test_build_index_ids_keys_and_offsets(shards, tmp_path):
    index = build_index(shards, out=tmp_path / "idx.empidx")
    assert index.num_samples == SHARDS * PER_SHARD
    assert index.shard_range(2) == (100, 150)
    assert index.sample_key(101) == "s002_00001"
    members = dict((e, (o, s)) for e, o, s in index.sample_members(101))
    with open(shards[2], "rb") as f:
        f.seek(members["bin"][0])
        assert np.frombuffer(f.read(members["bin"][1]), np.int32)[0] == 2001
    loaded = ShardIndex.load(tmp_path / "idx.empidx")
    assert loaded.num_samples == index.num_samples and loaded.sample_key(199) == "s003_00049"


def test_index_refuses_changed_corrupt_and_foreign_files(shards, tmp_path):
    build_index(shards, out=tmp_path / "idx.empidx")
    raw = (tmp_path / "idx.empidx").read_bytes()
    with open(shards[1], "ab") as f:
        f.write(b"\0" * 1024)
    with pytest.raises(ValueError, match="changed since the index was built"):
        ShardIndex.load(tmp_path / "idx.empidx")
    bad = tmp_path / "bad.empidx"
    bad.write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match="not a readable emp_data shard index"):
        ShardIndex.load(bad)
    # flip one byte inside an array: the checksum catches it
    tampered = bytearray(raw)
    pos = raw.find(b"s001_00007")
    tampered[pos] ^= 0x01
    (tmp_path / "t.empidx").write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="checksum mismatch|not a readable"):
        ShardIndex.load(tmp_path / "t.empidx", check_shards=False)


def test_corrupt_and_truncated_shards_name_the_shard_and_offset(shards, tmp_path):
    data = bytearray(open(shards[2], "rb").read())
    data[1024 + 100] ^= 0xFF                             # inside the 2nd header (1st payload: 1 block)
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt.tar': corrupt tar header \(checksum mismatch\) at byte offset 1024"):
        build_index([str(corrupt)])
    truncated = tmp_path / "trunc.tar"
    truncated.write_bytes(open(shards[0], "rb").read()[:5000])
    with pytest.raises(ValueError, match="trunc.tar': truncated tar"):
        build_index([str(truncated)])
    seen = []
    index = build_index([shards[0], str(truncated)], handler=lambda exc: seen.append(exc) or True)
    assert len(seen) == 1 and PER_SHARD < index.num_samples < 2 * PER_SHARD


def test_duplicate_member_in_sample_and_duplicate_keys(tmp_path):
    url = str(tmp_path / "dup.tar")
    with tarfile.open(url, "w") as tar:
        for name in ("a.cls", "a.cls"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(ValueError, match="duplicate file name in tar file: a.cls"):
        build_index([url])
    urls = write_shards(str(tmp_path), shards=1, per_shard=5, prefix="x")
    copy = str(tmp_path / "copy.tar")
    open(copy, "wb").write(open(urls[0], "rb").read())
    with pytest.warns(UserWarning, match="5 sample keys occur more than once"):
        assert build_index([urls[0], copy]).duplicate_keys == 5


def collect(ds):
    return {int(s["__id__"]): s for s in ds}


def test_only_kept_samples_come_out_and_pruned_bytes_are_never_read(shards, tmp_path, monkeypatch):
    index = build_index(shards, out=tmp_path / "idx.empidx")
    pruner = Pruner(index.num_samples, policy="random", prune_ratio=0.7, seed=1)
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    ds.set_epoch(0)
    kept_ids, weights = pruner.select(0)
    read_bytes = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: read_bytes.append(n) or real_pread(fd, n, off))
    out = collect(ds)
    assert sorted(out) == sorted(kept_ids.tolist())
    for sid, sample in out.items():
        s, i = divmod(sid, PER_SHARD)
        assert value_of(sample) == s * 1000 + i and sample["__key__"] == f"s{s:03d}_{i:05d}"
        assert sample["__url__"] == shards[s] and sample["__weight__"] == 1.0
    assert sum(read_bytes) == len(kept_ids) * (256 + 1 + 2 * 512)   # kept members only, each with its tar header


def test_decoders_after_the_stage_see_only_kept_samples(shards, tmp_path):
    import webdataset as wds

    build_index(shards, out=tmp_path / "idx.empidx")
    pruner = Pruner(SHARDS * PER_SHARD, policy="random", prune_ratio=0.5, seed=2)
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    calls = []
    pipeline = wds.DataPipeline(ds, wds.map(lambda s: calls.append(s["__id__"]) or s), wds.decode(),
                                wds.to_tuple("__id__", "cls"))
    ids = [i for i, _ in pipeline]
    assert len(calls) == len(ids) == len(pruner.select(0)[0]) == 100


def test_workers_read_shared_store_and_follow_score_updates(shards, tmp_path):
    build_index(shards, out=tmp_path / "idx.empidx")
    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="ucb", prune_ratio=0.75, seed=3, store_path=tmp_path / "scores.emp")
    pruner.store.update(np.arange(n), np.linspace(0, 1, n).astype(np.float32))   # high ids score high
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    ds.set_epoch(0)
    epoch0 = sorted(int(s["__id__"]) for s in loader)
    assert epoch0 == list(range(150, 200))                       # top 50 by score
    pruner.store.update(np.arange(n), np.linspace(1, 0, n).astype(np.float32))   # training reverses it
    pruner.store.update(np.arange(n), np.linspace(1, 0, n).astype(np.float32))
    ds.set_epoch(1)
    epoch1 = sorted(int(s["__id__"]) for s in loader)
    assert epoch1 == sorted(pruner.select(1)[0].tolist()) and epoch1[0] < 50


def test_in_memory_store_with_workers_is_a_clear_error(shards, tmp_path):
    build_index(shards, out=tmp_path / "idx.empidx")
    ds = PrunedIterableDataset(shards, Pruner(200, policy="random"), index=tmp_path / "idx.empidx")
    with pytest.raises(ValueError, match="store_path="):
        list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1))


def test_resume_mid_epoch_continues_at_the_next_sample(shards, tmp_path):
    build_index(shards, out=tmp_path / "idx.empidx")
    pruner = Pruner(200, policy="infobatch", prune_ratio=0.5, seed=4)
    pruner.store.update(np.arange(200), np.random.default_rng(0).random(200).astype(np.float32))
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    ds.set_epoch(1)
    it = iter(ds)
    head = [int(next(it)["__id__"]) for _ in range(37)]
    state = ds.state_dict()
    rest = [int(s["__id__"]) for s in it]
    resumed = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    resumed.load_state_dict(state)
    assert [int(s["__id__"]) for s in resumed] == rest
    assert sorted(head + rest) == sorted(pruner.select(1)[0].tolist())


def test_streaming_without_index_matches_index_mode_and_reports_corruption(shards, tmp_path):
    pruner = Pruner(200, policy="random", prune_ratio=0.6, seed=5)
    streamed = PrunedIterableDataset(shards, pruner, shuffle_shards=False)
    out = collect(streamed)
    assert streamed.samples_seen == 200
    assert sorted(out) == sorted(pruner.select(0)[0].tolist())
    for sid, sample in out.items():
        s, i = divmod(sid, PER_SHARD)
        assert value_of(sample) == s * 1000 + i
    bad = tmp_path / "bad.tar"
    bad.write_bytes(open(shards[0], "rb").read()[:3000])
    broken = PrunedIterableDataset([str(bad)], Pruner(200, policy="full"))
    with pytest.raises(ValueError, match="bad.tar' is corrupt or truncated"):
        list(broken)
    tolerant = PrunedIterableDataset([str(bad), shards[1]], Pruner(200, policy="full"), shuffle_shards=False,
                                     handler=lambda exc: True)
    assert len(list(tolerant)) > PER_SHARD and tolerant.skipped_shards == 1


def test_stateful_dataloader_with_workers_resumes_the_stream(shards, tmp_path):
    from torchdata.stateful_dataloader import StatefulDataLoader

    build_index(shards, out=tmp_path / "idx.empidx")
    pruner = Pruner(200, policy="random", prune_ratio=0.4, seed=6, store_path=tmp_path / "scores.emp")

    def make_loader():
        ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
        ds.set_epoch(2)
        return StatefulDataLoader(ds, batch_size=None, num_workers=2)

    loader = make_loader()
    it = iter(loader)
    head = [int(next(it)["__id__"]) for _ in range(33)]
    state = loader.state_dict()
    rest = [int(s["__id__"]) for s in it]
    resumed = make_loader()
    resumed.load_state_dict(state)
    again = [int(s["__id__"]) for s in resumed]
    assert again == rest
    assert sorted(head + rest) == sorted(pruner.select(2)[0].tolist())


def test_workers_without_index_share_one_key_table(shards, tmp_path):
    """No index: two workers number samples in one shared table; every sample gets exactly one id,
    ids are dense, and a score update in the main process changes the next epoch's keeps."""
    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="ucb", prune_ratio=0.75, seed=3, store_path=tmp_path / "scores.emp")
    ds = PrunedIterableDataset(shards, pruner)
    assert ds.key_table.path == str(tmp_path / "scores.emp") + ".keys"
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    ds.set_epoch(0)
    epoch0 = {int(s["__id__"]): value_of(s) for s in loader}
    assert sorted(epoch0) == sorted(pruner.select(0)[0].tolist())
    assert ds.samples_seen == n and ds.key_collisions == 0       # pruned samples are numbered too

    def key_value(key):   # "s002_00017" -> 2017, the payload value of that sample
        s, i = key[1:].split("_")
        return int(s) * 1000 + int(i)

    value = np.array([key_value(ds.key_table.key_of(i)) for i in range(n)])
    assert len(set(value.tolist())) == n and all(value[i] == v for i, v in epoch0.items())
    pruner.store.update(np.arange(n), (value / value.max()).astype(np.float32))   # score by payload value
    ds.set_epoch(1)
    epoch1 = {int(s["__id__"]): value_of(s) for s in loader}
    assert sorted(epoch1.values()) == np.sort(value)[-50:].tolist()              # top 50 by score
    assert all(value[i] == v for i, v in epoch1.items())                          # ids stayed put


def test_existing_webdataset_pipeline_as_source(shards, tmp_path):
    import webdataset as wds

    pruner = Pruner(SHARDS * PER_SHARD, policy="random", prune_ratio=0.5, seed=2)
    source = wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples())
    ds = PrunedIterableDataset(source, pruner)
    decoded = []
    pipeline = wds.DataPipeline(ds, wds.map(lambda s: decoded.append(s["__id__"]) or s), wds.decode(),
                                wds.to_tuple("__id__", "__key__", "cls"))
    out = list(pipeline)
    kept = pruner.select(0)[0]
    assert len(decoded) == len(out) == len(kept) == 100          # decoder saw kept samples only
    assert sorted(i for i, _, _ in out) == sorted(kept.tolist())
    for sid, key, cls in out:                                     # ids follow order of appearance
        s, i = divmod(sid, PER_SHARD)
        assert key == f"s{s:03d}_{i:05d}" and cls == i % 10
    # resume inside an epoch: the same pipeline order, continued after the recorded sample
    ds.set_epoch(1)
    it = iter(ds)
    head = [int(next(it)["__id__"]) for _ in range(20)]
    state = ds.state_dict()
    rest = [int(s["__id__"]) for s in it]
    resumed = PrunedIterableDataset(wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples()), pruner,
                                    key_table=ds.key_table)
    resumed.load_state_dict(state)
    assert [int(s["__id__"]) for s in resumed] == rest and len(head + rest) == len(pruner.select(1)[0])
    with pytest.raises(ValueError, match="has no '__key__'"):
        list(PrunedIterableDataset(wds.DataPipeline(source, wds.to_tuple("cls")), pruner))   # already tupled
    with pytest.raises(ValueError, match="index= needs shard urls"):
        PrunedIterableDataset(source, pruner, index=tmp_path / "idx.empidx")


def _resume_second(folder, urls, queue):
    import _training_jobs as jobs

    queue.put(jobs.stream_resume_without_index("second", folder, urls))


def test_no_index_stream_resumes_in_a_new_process(shards, tmp_path):
    import multiprocessing as mp
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    import _training_jobs as jobs

    head, rest = jobs.stream_resume_without_index("first", str(tmp_path), shards)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_resume_second, args=(str(tmp_path), shards, queue))
    proc.start()
    _, again = queue.get(timeout=300)
    proc.join(60)
    assert proc.exitcode == 0
    assert again == rest and len(head) == 33
    ids = [i for i, _ in head + rest]
    assert len(set(ids)) == len(ids) and len(ids) == round(0.6 * SHARDS * PER_SHARD)


def test_duplicate_key_count_compares_keys_not_just_hashes():
    from emp_data.webdataset.index import _count_duplicate_keys

    keys = np.frombuffer(b"aabab", dtype=np.uint8)           # "a", "a", "b", "ab"
    offsets = np.array([0, 1, 2, 3, 5])
    forged = np.array([7, 7, 7, 9], dtype=np.uint64)        # "b" collides with "a" on purpose
    assert _count_duplicate_keys(keys, offsets, forged) == 1
    assert _count_duplicate_keys(keys, offsets, np.array([1, 2, 3, 4], dtype=np.uint64)) == 0


def test_streaming_reports_a_key_repeated_inside_a_shard(tmp_path):
    url = str(tmp_path / "dup.tar")
    with tarfile.open(url, "w") as tar:
        for name in ("a.cls", "b.cls", "a.txt"):          # "a" again after "b": a second sample "a"
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    ds = PrunedIterableDataset([url], Pruner(2, policy="full"))
    with pytest.warns(UserWarning, match="occurs more than once"):
        out = [(s["__key__"], int(s["__id__"])) for s in ds]
    assert out == [("a", 0), ("b", 1), ("a", 0)] and ds.duplicate_keys == 1
    list(ds)                                               # a new pass counts again, from its own shard set
    assert ds.duplicate_keys == 2


def test_pipeline_source_with_workers_shares_the_key_table(shards, tmp_path):
    import webdataset as wds

    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="random", prune_ratio=0.5, seed=8, store_path=tmp_path / "scores.emp")
    source = wds.DataPipeline(wds.SimpleShardList(shards), wds.split_by_worker, wds.tarfile_to_samples())
    ds = PrunedIterableDataset(source, pruner)
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    out = [(int(s["__id__"]), s["__key__"]) for s in loader]
    assert sorted(i for i, _ in out) == sorted(pruner.select(0)[0].tolist())   # each kept sample once
    assert ds.samples_seen == n                                                 # numbered by both workers
    assert all(ds.key_table.key_of(i) == key for i, key in out)


def write_wids_index(path, entries, **extra):
    import json

    spec = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "shardlist": entries, **extra}
    path.write_text(json.dumps(spec))
    return path


def test_wids_index_gives_the_same_ids_as_our_index_with_workers(shards, tmp_path):
    """Relative urls resolve against the JSON's folder; ids are dense in shard order (as build_index's),
    so 2 workers streaming shuffled shards yield exactly the kept set, each sample under its own id."""
    wids = write_wids_index(tmp_path / "train.json",
                            [{"url": os.path.basename(u), "nsamples": PER_SHARD} for u in shards])
    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="random", prune_ratio=0.6, seed=11, store_path=tmp_path / "scores.emp")
    ds = PrunedIterableDataset(None, pruner, index=wids)          # urls from the index
    assert ds.urls == shards and ds.samples_seen == n and ds.key_table is None
    ds.set_epoch(0)
    out = {int(s["__id__"]): s for s in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)}
    assert sorted(out) == sorted(pruner.select(0)[0].tolist())
    index = build_index(shards)
    for sid, sample in out.items():
        s, i = divmod(sid, PER_SHARD)
        assert value_of(sample) == s * 1000 + i and sample["__key__"] == index.sample_key(sid)
    assert not os.path.exists(str(tmp_path / "scores.emp") + ".keys")     # no key table needed


def test_wids_index_resumes_mid_epoch(shards, tmp_path):
    wids = write_wids_index(tmp_path / "train.json", [{"url": u, "nsamples": PER_SHARD} for u in shards])
    pruner = Pruner(200, policy="infobatch", prune_ratio=0.5, seed=4)
    pruner.store.update(np.arange(200), np.random.default_rng(0).random(200).astype(np.float32))
    ds = PrunedIterableDataset(shards, pruner, index=wids)
    ds.set_epoch(1)
    it = iter(ds)
    head = [int(next(it)["__id__"]) for _ in range(41)]
    state = ds.state_dict()
    rest = [int(s["__id__"]) for s in it]
    resumed = PrunedIterableDataset(shards, pruner, index=wids)
    resumed.load_state_dict(state)
    assert [int(s["__id__"]) for s in resumed] == rest
    assert sorted(head + rest) == sorted(pruner.select(1)[0].tolist())


def test_stale_or_bad_wids_index_is_named(shards, tmp_path):
    entries = [{"url": u, "nsamples": PER_SHARD} for u in shards]
    short = write_wids_index(tmp_path / "short.json", entries[:1] + [{"url": shards[1], "nsamples": PER_SHARD - 1}])
    ds = PrunedIterableDataset(None, Pruner(2 * PER_SHARD - 1, policy="full"), index=short, shuffle_shards=False)
    with pytest.raises(ValueError, match="s-001.tar' holds more than the 49 samples"):
        list(ds)
    long = write_wids_index(tmp_path / "long.json", [{"url": shards[0], "nsamples": PER_SHARD + 5}])
    ds = PrunedIterableDataset(None, Pruner(PER_SHARD + 5, policy="full"), index=long)
    with pytest.warns(UserWarning, match="holds 50 samples, the wids index says 55"):
        assert len(list(ds)) == PER_SHARD
    with pytest.raises(ValueError, match="index has 200 samples, the pruner 10"):
        PrunedIterableDataset(shards, Pruner(10), index=write_wids_index(tmp_path / "ok.json", entries))
    with pytest.raises(ValueError, match="other shards"):
        PrunedIterableDataset(shards[::-1], Pruner(200), index=tmp_path / "ok.json")
    cases = {
        "kind.json": ('{"__kind__": "something-else", "wids_version": 1, "shardlist": []}', "not a 'wids-shard"),
        "version.json": ('{"wids_version": 2, "shardlist": []}', "wids_version 2"),
        "count.json": ('{"wids_version": 1, "shardlist": [{"url": "a.tar", "nsamples": "7"}]}', "integer nsamples"),
        "empty.json": ('{"wids_version": 1, "shardlist": []}', "lists no shards"),
        "broken.json": ('{"wids_version": 1, "shardl', "not JSON"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            PrunedIterableDataset(None, Pruner(7), index=tmp_path / name)
    with pytest.raises(ValueError, match="source=None needs index="):
        PrunedIterableDataset(None, Pruner(7))


def test_prune_stage_in_webdataset_pipelines_and_compose(shards, tmp_path):
    """emp_data.webdataset.prune(pruner) as a stage of wds.DataPipeline and through .compose(): the
    same kept samples as the stream, ids from the key table, in workers too."""
    import webdataset as wds

    from emp_data.webdataset import prune

    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="infobatch", prune_ratio=0.5, seed=7, store_path=tmp_path / "s.emp")
    stage = prune(pruner)
    assert isinstance(stage, wds.filters.FilterFunction)              # what wds.pipelinefilter curries
    assert isinstance(pickle.loads(pickle.dumps(stage)), wds.filters.FilterFunction)
    pipeline = wds.DataPipeline(wds.SimpleShardList(shards), wds.split_by_worker, wds.tarfile_to_samples(), stage,
                                wds.to_tuple("__key__", "__id__", "__weight__"))
    pruner.select(0)
    first = list(pipeline)
    assert len(first) == n                                            # epoch 0: nothing seen, all kept
    ids = np.array([i for _, i, _ in first])
    pruner.store.update(ids, np.linspace(0, 1, n).astype(np.float32))
    pruner.select(1)
    kept = {key: (i, w) for key, i, w in pipeline}
    assert 0 < len(kept) < n and all(pruner.store.weight[i] == w > 0 for i, w in kept.values())
    composed = wds.WebDataset(shards, shardshuffle=False).compose(stage).to_tuple("__key__", "__id__")
    assert {key: i for key, i in composed} == {key: i for key, (i, _) in kept.items()}
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
    assert sorted(key for key, _, _ in loader) == sorted(kept)
    # Used in this process, the stage still pickles (into workers started by spawn).
    assert isinstance(pickle.loads(pickle.dumps(stage)), wds.filters.FilterFunction)


def test_set_epoch_refuses_non_integers_and_says_what_unusual_epochs_do(shards, tmp_path):
    import warnings

    build_index(shards, out=tmp_path / "idx.empidx")
    n = SHARDS * PER_SHARD
    pruner = Pruner(n, policy="random", prune_ratio=0.5, epochs=4, seed=0, store_path=tmp_path / "scores.emp")
    ds = PrunedIterableDataset(shards, pruner, index=tmp_path / "idx.empidx")
    for bad in (1.5, "1", True):
        with pytest.raises(TypeError, match="epoch must be an integer"):
            ds.set_epoch(bad)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        ds.set_epoch(-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in (0, 2, 1, 0):                       # going back: one warning
            ds.set_epoch(epoch)
        ds.set_epoch(10)                                 # past epochs=4: one warning
        ds.set_epoch(11)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "set_epoch(1) after set_epoch(2)" in messages[0] and "other samples" in messages[0]
    assert "past the pruner's epochs=4" in messages[1] and "every sample" in messages[1]
    assert len(list(ds)) == n                            # epoch 11: annealing, every sample


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pruner_larger_than_the_data_without_an_index_is_refused_once_the_count_is_known(shards, tmp_path,
                                                                                          workers):
    """Without an index the stream numbers samples as it meets them. A Pruner sized above the data
    would spend its budget on ids the data never reaches (never seen, so ranked first): once a whole
    pass is known to be over, selecting another epoch says how to size it."""
    n = SHARDS * PER_SHARD
    pruner = Pruner(n + 100, policy="emp", prune_ratio=0.7, exact_budget=True, epochs=5,
                    store_path=tmp_path / "scores.emp")
    ds = PrunedIterableDataset(shards, pruner)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    first_whole_pass_known = 1 if workers == 0 else 2     # workers: an epoch without a new key shows it
    for epoch in range(first_whole_pass_known):
        ds.set_epoch(epoch)
        trained = list(loader)
        assert pruner.stats()["kept"] > len(trained) or epoch == 0
    with pytest.raises(ValueError, match=rf"has {n + 100} samples, but a whole pass of the stream numbered {n} "
                                         rf".*num_samples={n}"):
        ds.set_epoch(first_whole_pass_known)
    assert ds.samples_seen == n


@pytest.mark.parametrize("cut", [5000, 5000 + 512, 5000 + 1024, 6000])   # in a payload, a header, the next
def test_build_index_and_the_stream_keep_the_same_samples_of_a_broken_shard(shards, tmp_path, cut):
    """A truncated shard under a handler that continues: the sample being assembled at the break is
    dropped by both (its later members are lost), so the index and the no-index stream agree."""
    truncated = tmp_path / "trunc.tar"
    truncated.write_bytes(open(shards[0], "rb").read()[:cut])
    urls = [str(truncated), shards[1]]
    keep_going = lambda exc: True   # noqa: E731  (webdataset's warn_and_continue, without the warning)
    index = build_index(urls, handler=keep_going)
    indexed = [index.sample_key(i) for i in range(index.num_samples)]
    stream = PrunedIterableDataset(urls, Pruner(2 * PER_SHARD, policy="full"), handler=keep_going, shuffle_shards=False)
    streamed = [s["__key__"] for s in stream]
    assert indexed == streamed and PER_SHARD < len(streamed) < 2 * PER_SHARD
    assert all(set(index.sample_members(i)[j][0] for j in range(2)) == {"bin", "cls"}
               for i in range(index.num_samples))                       # no half sample in the index


def test_a_sample_missing_a_field_is_named_with_its_shard_and_seen_by_the_handler(tmp_path):
    """A jpg without its txt: to_tuple's error becomes one naming the sample's key and shard,
    and the stream's handler decides (skip it and go on, or stop)."""
    import webdataset as wds

    from emp_data.webdataset import PrunedPipeline

    url = str(tmp_path / "pairs.tar")
    with tarfile.open(url, "w") as tar:
        for i in range(6):
            for ext in (("jpg", "txt") if i != 3 else ("jpg",)):          # sample 3 has no caption
                info = tarfile.TarInfo(f"p{i}.{ext}")
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
    build_index([url], out=tmp_path / "idx.empidx")

    def pipeline(handler):
        stream = PrunedIterableDataset([url], Pruner(6, policy="full"), index=tmp_path / "idx.empidx", handler=handler)
        return PrunedPipeline(stream, wds.to_tuple("__key__", "jpg", "txt"))

    with pytest.raises(ValueError, match=r"sample 'p3' of shard '.*pairs\.tar': ValueError: didn't find \['txt'\]"):
        list(pipeline(None))
    seen = []
    got = [key for key, _, _ in pipeline(lambda exc: seen.append(str(exc)) or True)]
    assert got == ["p0", "p1", "p2", "p4", "p5"] and len(seen) == 1 and "'p3'" in seen[0]
    assert [key for key, _, _ in pipeline(lambda exc: False)] == ["p0", "p1", "p2"]


def test_a_stage_that_fails_without_taking_a_sample_is_raised_not_skipped_forever(shards, tmp_path):
    """A handler that says "go on" skips the sample a stage failed on; a stage that fails again before
    taking any new sample is not failing on a sample, and is raised instead of retried forever."""
    from emp_data.webdataset import PrunedPipeline

    build_index(shards, out=tmp_path / "idx.empidx")
    calls = []

    def broken_after_one(samples):
        for sample in samples:
            if calls:
                raise RuntimeError("stage state broken")
            calls.append(1)
            yield sample

    def stuck(samples):
        if calls:                                   # fails at once, without pulling a sample
            raise RuntimeError("stage cannot start")
        yield from broken_after_one(samples)

    stream = PrunedIterableDataset(shards, Pruner(SHARDS * PER_SHARD, policy="full"), index=tmp_path / "idx.empidx",
                                   handler=lambda exc: True)
    with pytest.raises(RuntimeError, match="stage cannot start"):
        list(PrunedPipeline(stream, stuck))
