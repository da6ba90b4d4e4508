import math
import multiprocessing as mp
import os
import sys

import numpy as np
import pytest
import torch

from emp_data import IndexedDataset, Pruner, PrunedSampler

sys.path.insert(0, os.path.dirname(__file__))
import _training_jobs as jobs  # noqa: E402


def test_indexed_dataset_and_sampler_epochs():
    data = IndexedDataset([10, 11, 12, 13])
    assert len(data) == 4 and data[2] == (2, 12)
    pruner = Pruner(1000, policy="random", prune_ratio=0.6, seed=1)
    sampler = PrunedSampler(pruner)
    assert len(sampler) == 400
    first = list(sampler)
    assert first == pruner.select(0)[0].tolist() and sampler.epoch == 1
    second = list(sampler)
    assert second == pruner.select(1)[0].tolist() and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_current_epoch_selection_is_fixed_although_scores_move():
    pruner = Pruner(2000, policy="infobatch", prune_ratio=0.5, seed=2)
    pruner.store.update(np.arange(2000), np.random.default_rng(0).random(2000).astype(np.float32))
    ids, weights = pruner.select(1)
    pruner.store.update(ids[:500], np.full(500, 9.0, np.float32))   # training moves the scores
    again_ids, again_weights = pruner.select(1)
    assert np.array_equal(ids, again_ids) and np.array_equal(weights, again_weights)
    assert pruner.store.times_selected.sum() == len(ids)            # counted once


def _run_second(ckpt_dir, queue):
    queue.put(jobs.train_with_stateful_loader("second", ckpt_dir))


def test_stateful_dataloader_resume_in_new_process_matches_uninterrupted(tmp_path):
    full_ids, full_scores = jobs.train_with_stateful_loader("full", str(tmp_path))
    batches_per_epoch0 = math.ceil(jobs.N / jobs.BATCH)        # epoch 0 keeps every (unseen) sample
    stop = batches_per_epoch0 + 5                                  # mid-way through epoch 1
    first_ids, _ = jobs.train_with_stateful_loader("first", str(tmp_path), stop_after_batches=stop)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_second, args=(str(tmp_path), queue))
    proc.start()
    second_ids, second_scores = queue.get(timeout=300)
    proc.join(60)
    assert proc.exitcode == 0
    assert first_ids + second_ids == full_ids
    assert np.array_equal(second_scores, full_scores, equal_nan=True)
    # the loader state is a few integers, not the score table
    state = torch.load(tmp_path / "train.pt", weights_only=False)["loader"]
    assert len(repr(state)) < 2000


def test_ddp_two_ranks_gloo_identical_stores_and_disjoint_slices(tmp_path):
    world = 2
    torch.multiprocessing.spawn(jobs.ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=world, join=True)
    stores = [np.load(tmp_path / f"rank{r}.npz") for r in range(world)]
    for key in ("loss", "mean", "times"):
        assert np.array_equal(stores[0][key], stores[1][key], equal_nan=True)
    assert not np.isnan(stores[0]["loss"]).any()     # every sample was trained on at least once
    epochs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for epoch in range(jobs.EPOCHS):
        (ids0, full0), (ids1, full1) = epochs[0][epoch], epochs[1][epoch]
        assert full0 == full1                          # same selection on every rank
        k = len(full0)
        pad = (-k) % world
        assert len(ids0) == len(ids1) == (k + pad) // world
        assert set(ids0) | set(ids1) == set(full0)     # covering
        assert len(set(ids0) & set(ids1)) <= pad       # disjoint but for the padding


def test_varlen_gather_with_unequal_rows_keeps_rank_order_and_int64_ids(tmp_path):
    world = 3
    torch.multiprocessing.spawn(jobs.varlen_gather_worker, args=(world, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=world, join=True)
    want_ids = torch.cat([torch.arange(r + 2, dtype=torch.int64) + (2**62 + 1000 * r) for r in range(world)])
    want_values = torch.cat([torch.full((r + 2, 2), float(r)) + torch.arange(r + 2, dtype=torch.float32)[:, None]
                             for r in range(world)])
    for r in range(world):
        ids_all, values_all = torch.load(tmp_path / f"gather{r}.pt")
        assert ids_all.dtype == torch.int64 and torch.equal(ids_all, want_ids)
        assert torch.equal(values_all, want_values)


def test_sampler_state_is_tiny_and_roundtrips():
    pruner = Pruner(500, policy="ucb", prune_ratio=0.5)
    sampler = PrunedSampler(pruner, start_epoch=2)
    it = iter(sampler)
    head = [next(it) for _ in range(10)]
    state = it.state_dict()
    assert state == {"epoch": 2, "position": 10}
    rest = list(it)
    fresh = PrunedSampler(pruner)
    fresh.load_state_dict(sampler.state_dict())
    it2 = iter(fresh)
    it2.load_state_dict(state)
    assert list(it2) == rest and head + rest == pruner.select(2)[0].tolist()


def test_torchdata_nodes_source_node_resumes():
    from torchdata.nodes import Batcher, Loader

    from emp_data.torch_data import PrunedSamplerNode

    pruner = Pruner(300, policy="random", prune_ratio=0.5, seed=4)
    loader = Loader(Batcher(PrunedSamplerNode(pruner), batch_size=16, drop_last=False))
    epoch0 = [i for b in loader for i in b]
    epoch1 = [i for b in loader for i in b]
    assert epoch0 == pruner.select(0)[0].tolist() and epoch1 == pruner.select(1)[0].tolist()

    node = PrunedSamplerNode(pruner)
    node.reset()
    head = [next(node) for _ in range(40)]
    state = node.get_state()
    resumed = PrunedSamplerNode(pruner)
    resumed.reset(state)
    assert head + list(resumed) == epoch0


def test_planned_steps_match_the_run_and_soft_rules_refuse():
    pruner = Pruner(1000, policy="ucb", prune_ratio=0.7, epochs=8, anneal=0.75)
    planned = pruner.planned_steps(64)
    actual = 0
    for epoch in range(8):
        pruner.select(epoch)
        actual += pruner.steps_per_epoch(64)
    assert planned == actual == 6 * math.ceil(300 / 64) + 2 * math.ceil(1000 / 64)
    with pytest.raises(ValueError, match="data-dependent number of samples"):
        Pruner(1000, policy="infobatch", epochs=4).planned_steps(64)
    exact = Pruner(1000, policy="infobatch", prune_ratio=0.5, epochs=4, exact_budget=True)
    assert exact.planned_steps(100) == 4 * 5   # 4 < 0.875 * 4 is false only from epoch 4 on


def test_sampler_rejects_bad_arguments():
    with pytest.raises(TypeError, match="emp_data.Pruner"):
        PrunedSampler(object())
    from emp_data import DistributedPrunedSampler

    with pytest.raises(ValueError, match="rank must be"):
        DistributedPrunedSampler(Pruner(10), num_replicas=2, rank=2)


def test_planned_steps_round_half_like_the_selection():
    # 0.5 * 1001 = 500.5: the C++ budget rounds half away from zero (501), so must planned_steps
    pruner = Pruner(1001, policy="ucb", prune_ratio=0.5, epochs=1, anneal=1.0)
    assert pruner.planned_steps(1) == len(pruner.select(0)[0]) == 501


def _stream_shards(folder, sizes=(10, 50, 20, 40, 30, 30, 15, 45, 25, 35)):
    """10 shards of unequal sizes (300 samples): ranks and workers get unequal shares."""
    from emp_data.webdataset import build_index

    jobs.write_xcls_shards(folder, "d", sizes)
    build_index(os.path.join(folder, "d-{00..09}.tar"), out=os.path.join(folder, "d.empidx"))


def test_ddp_stream_recipe_runs_equal_batches_and_identical_stores(tmp_path):
    """2 gloo ranks x 2 DataLoader workers run the README stream recipe for 4 epochs at r = 0.7:
    every rank runs the same number of batches each epoch (so pruner.loss's gathers stay paired),
    both finish, and their stores are identical."""
    world = 2
    _stream_shards(str(tmp_path))
    torch.multiprocessing.spawn(jobs.ddp_stream_worker,
                                args=(world, str(tmp_path / "init"), str(tmp_path), str(tmp_path)),
                                nprocs=world, join=True)
    runs = [np.load(tmp_path / f"stream{r}.npz") for r in range(world)]
    assert np.array_equal(runs[0]["batches"], runs[1]["batches"])
    # Every pruned epoch keeps exactly round(0.3 * 300) = 90 (the default's exact budget), epoch 0
    # included; the ranks split them with no overlap (a rank repeats only its own, as padding).
    first = [list(r["first_epoch_ids"]) for r in runs]
    assert set(first[0]) | set(first[1]) == set(runs[0]["kept_ids0"].tolist())
    assert len(first[0]) == len(first[1]) < 300 and len(set(first[0]) & set(first[1])) == 0
    assert all(len(runs[0][f"kept_ids{epoch}"]) == 90 for epoch in range(4))
    for key in ("loss", "times"):
        assert np.array_equal(runs[0][key], runs[1][key], equal_nan=True), key
    # Every kept sample is trained, and the repeats that keep the ranks in step are at most one per
    # (rank, worker); stats() reports what was trained, over both ranks.
    for epoch in range(4):
        kept_ids = runs[0][f"kept_ids{epoch}"]
        trained = np.concatenate([r[f"ids{epoch}"] for r in runs])
        assert set(trained.tolist()) == set(kept_ids.tolist()), epoch
        padding = len(trained) - len(kept_ids)
        assert 0 <= padding <= world * 2, (epoch, padding)
        for r in runs:
            assert r[f"stats{epoch}"].tolist() == [len(kept_ids), len(trained), padding], epoch


def test_ranks_out_of_step_fail_clearly_instead_of_mixing(tmp_path):
    world = 2
    torch.multiprocessing.spawn(jobs.ddp_out_of_step_worker, args=(world, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=world, join=True)
    for r in range(world):
        text = (tmp_path / f"outcome{r}.txt").read_text()
        assert "out of step" in text and "rank 0: epoch 0 step 1" in text and "rank 1: epoch 1 step 1" in text


def test_ddp_stream_recipe_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    """2 gloo ranks run the stream recipe with StatefulDataLoader; the job stops mid-epoch 1 after a
    checkpoint and new processes resume it. Every rank's batches and final store equal those of an
    uninterrupted run, bit for bit."""
    world = 2
    _stream_shards(str(tmp_path))
    for phase in ("full", "first", "second"):
        torch.multiprocessing.spawn(jobs.ddp_stream_resume_worker,
                                    args=(world, str(tmp_path / f"init-{phase}"), str(tmp_path), str(tmp_path), phase),
                                    nprocs=world, join=True)
    for r in range(world):
        full = torch.load(tmp_path / f"full-seen{r}.pt")
        resumed = torch.load(tmp_path / f"first-seen{r}.pt") + torch.load(tmp_path / f"second-seen{r}.pt")
        assert resumed == full
        a, b = np.load(tmp_path / f"full-store{r}.npz"), np.load(tmp_path / f"second-store{r}.npz")
        for key in ("loss", "times", "mean"):
            assert np.array_equal(a[key], b[key], equal_nan=True), (r, key)
