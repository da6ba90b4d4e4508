"""ShardedPruner on real torch.distributed processes (gloo): the partitioned selection equals the
single-process one for every policy, training records the same per-sample state, checkpoints
re-partition, and ranks stay in step."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _sharded_jobs as jobs  # noqa: E402
import reference_selection  # noqa: E402

from emp_data import Pruner  # noqa: E402
from emp_data import Ownership  # noqa: E402
from emp_data import ShardedPruner  # noqa: E402

WORLD = 4


def spawn(fn, tmp_path, *args, world=WORLD):
    init = tmp_path / f"init{fn.__name__}{world}"
    torch.multiprocessing.spawn(fn, args=(world, str(init), str(tmp_path), *args), nprocs=world, join=True)


def union(tmp_path, prefix, world=WORLD):
    parts = [np.load(tmp_path / f"{prefix}_rank{r}.npz") for r in range(world)]
    return parts


def test_sharded_selection_equals_single_process_for_every_policy(tmp_path):
    spawn(jobs.selection_worker, tmp_path)
    for p, (policy, options) in enumerate(jobs.POLICIES):
        single = Pruner(jobs.SELECTION_N, policy=policy, prune_ratio=0.7, seed=5, **options)
        states = {}
        expected = jobs.record_selections(single, lambda e: jobs.realistic_updates(jobs.SELECTION_N, e), epochs=3,
                                          states=states)
        parts = union(tmp_path, f"sel{p}")
        for epoch, (ids, weights) in expected.items():
            got_ids = np.concatenate([part[f"ids{epoch}"] for part in parts])
            got_w = np.concatenate([part[f"w{epoch}"] for part in parts])
            if not (policy == "seta" and options.get("exact_budget")):  # its exhaustive k-means is for small N
                # The ranks' union against the independent reference, not only against one process.
                exp = reference_selection.expected(states[epoch], policy, 0.7, epoch, **options)
                reference_selection.assert_matches(exp, got_ids, got_w, jobs.SELECTION_N, f"{policy} {options} {epoch}")
            order, want = np.argsort(got_ids), np.argsort(ids)
            assert np.array_equal(got_ids[order], ids[want]), (policy, options, epoch)
            assert np.array_equal(got_w[order], weights[want]), (policy, options, epoch)
    # Selection traffic per rank: a few small reductions and histograms, not a function of N.
    traffic = np.load(tmp_path / "traffic_rank0.npy")
    assert traffic.max() < 1_000_000


@pytest.mark.parametrize("policy,options", [("emp", {"beta": 0.5}), ("emp", {"mode": "topk", "epsilon": 0.1})])
def test_sharded_training_records_equal_unsharded_and_resume_on_other_world_sizes(tmp_path, capsys, policy, options):
    spawn(jobs.training_worker, tmp_path, policy, options)
    single = jobs.single_process_training(policy, options, jobs.EPOCHS)
    want = jobs.records(single)
    parts = union(tmp_path, "train")
    ids = np.concatenate([p["ids"] for p in parts])
    assert np.array_equal(np.sort(ids), np.arange(jobs.N))          # every sample owned once
    for field in ("loss", "memory", "times", "weight"):
        got = np.empty_like(want[field])
        got[ids] = np.concatenate([p[field] for p in parts])
        assert np.array_equal(got, want[field], equal_nan=True), field
    # Equal steps on every rank each epoch; padding counted; global stats equal the single process's.
    steps = np.stack([p["steps"] for p in parts])
    assert (steps == steps[0]).all()
    stats = single.stats()
    assert int(parts[0]["kept"]) == stats["kept"]
    assert int(parts[0]["passes"]) == stats["sample_passes"]
    assert np.array_equal(parts[0]["hist"], stats["times_selected_histogram"])
    assert int(parts[0]["padding"]) == WORLD * int(parts[0]["share"]) - stats["kept"]
    assert len({int(p["share"]) for p in parts}) == 1
    # `emp-data inspect` on the manifest summarises the whole checkpoint.
    from emp_data import cli
    assert cli.main(["inspect", str(tmp_path / "checkpoints" / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "ShardedPruner checkpoint saved by 4 ranks" in out and f"{jobs.N} samples" in out
    assert f"epoch {jobs.EPOCHS - 1}: {stats['kept']} " in out and "'policy': 'emp'" in out
    # Save on 4 ranks, load on 2 and on 1, train two more epochs: the same as the single process.
    jobs.single_process_training(policy, options, 2, first_epoch=jobs.EPOCHS, pruner=single)
    want = jobs.records(single)
    for world in (2, 1):
        spawn(jobs.resume_worker, tmp_path, policy, options, world=world)
        parts = union(tmp_path, f"resumed{world}", world)
        ids = np.concatenate([p["ids"] for p in parts])
        for field in ("loss", "times", "weight"):
            got = np.empty_like(want[field])
            got[ids] = np.concatenate([p[field] for p in parts])
            assert np.array_equal(got, want[field], equal_nan=True), (world, field)


def test_a_rank_that_keeps_nothing_runs_the_same_steps_at_weight_zero(tmp_path):
    spawn(jobs.zero_kept_worker, tmp_path)
    parts = union(tmp_path, "zero")
    assert int(parts[1]["own_kept"]) == 0
    assert len({len(p["ids"]) for p in parts}) == 1                     # equal batches everywhere
    assert (parts[1]["weights"] == 0).all() and parts[1]["loss"] == 0.0  # no gradient from rank 1
    assert all(p["loss"] > 0 for r, p in enumerate(parts) if r != 1)
    kept = sum(int(p["own_kept"]) for p in parts)
    assert kept == 4                                                    # round(0.1 * 40)
    assert int(parts[0]["padding"]) == WORLD * len(parts[0]["ids"]) - kept


def test_loss_on_an_id_another_rank_owns_is_a_clear_error(tmp_path):
    spawn(jobs.foreign_id_worker, tmp_path, world=2)
    message = (tmp_path / "foreign_rank0.txt").read_text()
    assert "belongs to rank 1, not to this rank 0" in message


def test_one_process_sharded_pruner_is_a_pruner(tmp_path):
    """Without torch.distributed a ShardedPruner is a one-rank partition: the same as a Pruner, and
    its checkpoint round-trips."""
    sharded = ShardedPruner(5000, policy="infobatch", prune_ratio=0.6, seed=2)
    single = Pruner(5000, policy="infobatch", prune_ratio=0.6, seed=2)
    for epoch in range(3):
        a, wa = sharded.select(epoch)
        b, wb = single.select(epoch)
        assert np.array_equal(np.sort(a), np.sort(b))
        ids, loss, mem = jobs.realistic_updates(5000, epoch)
        sharded.store.update(ids, loss, mem)
        single.store.update(ids, loss, mem)
    sharded.save(tmp_path / "ck")
    again = ShardedPruner.load(tmp_path / "ck")
    assert np.array_equal(again.store.loss, sharded.store.loss, equal_nan=True)
    assert again.select(2)[0].tolist() == sharded.select(2)[0].tolist()
    assert sharded.store.nbytes == 24 * 5000
    mapped = ShardedPruner.load(tmp_path / "ck", store_path=tmp_path / "live.emp")   # for stream workers
    assert mapped.store_path == str(tmp_path / "live.emp")
    assert np.array_equal(mapped.store.weight, sharded.store.weight)
    assert mapped.select(2)[0].tolist() == sharded.select(2)[0].tolist()
    (part,) = tmp_path.glob("ck.*.rank0-of-1")
    with pytest.raises(ValueError, match="not a ShardedPruner checkpoint"):
        ShardedPruner.load(part)


def test_a_save_cut_before_its_manifest_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import emp_data.pruner.checkpoint as checkpoint_module

    pruner = ShardedPruner(1000, policy="infobatch", prune_ratio=0.5)
    pruner.select(0)
    pruner.save(tmp_path / "ck")
    first = pruner.store.loss.copy()
    pruner.store.update(np.arange(1000), np.ones(1000, np.float32))
    pruner.select(1)

    def cut(*args):
        raise OSError("killed before the manifest")

    monkeypatch.setattr(checkpoint_module, "write_atomically", cut)
    with pytest.raises(OSError, match="killed"):
        pruner.save(tmp_path / "ck")
    back = ShardedPruner.load(tmp_path / "ck")
    assert np.array_equal(back.store.loss, first, equal_nan=True) and back.epoch == 0
    monkeypatch.undo()
    pruner.save(tmp_path / "ck")                                  # a whole save replaces it, parts cleaned
    assert len(list(tmp_path.glob("ck.*.rank0-of-1"))) == 1
    assert ShardedPruner.load(tmp_path / "ck").epoch == 1


def test_ownership_layouts():
    own = Ownership.strided(10, 1, 4)
    assert own.global_ids().tolist() == [1, 5, 9]
    assert own.find_slots(np.array([5, 4, 9, 13, -1])).tolist() == [1, -1, 2, -1, -1]
    with pytest.raises(ValueError, match="belongs to rank 0"):
        own.slots_of([4])
    with pytest.raises(ValueError, match="outside"):
        own.slots_of([10])
    with pytest.raises(ValueError, match="cannot be spread"):
        Ownership.strided(3, 0, 4)
    # Shards: largest first to the least-loaded rank; every shard owned once; uneven counts allowed.
    ranges = [(0, 10), (10, 40), (40, 45), (45, 60), (60, 61)]
    owners = [Ownership.for_shards(ranges, r, 2) for r in range(2)]
    assert sorted(owners[0].shards + owners[1].shards) == list(range(5))
    assert owners[0].shards == [1, 4] and owners[1].shards == [0, 2, 3]
    assert owners[1].global_ids().tolist() == list(range(0, 10)) + list(range(40, 60))
    assert owners[1].find_slots(np.array([0, 41, 59, 10, 60])).tolist() == [0, 11, 29, -1, -1]
    with pytest.raises(ValueError, match="every rank needs a shard"):
        Ownership.for_shards(ranges[:1], 0, 2)


def test_soft_rule_mean_is_exact_whatever_the_order():
    """The mean the soft rules compare against is an exact sum: +-1e20 at the two ends of the store
    cancel and the small scores between them still count (a running double sum loses them), so a
    rank layout, a thread count or a summation order cannot move a sample across the mean."""
    n = 1000
    pruner = Pruner(n, policy="infobatch", prune_ratio=0.5)
    loss = np.full(n, 0.1, dtype=np.float32)
    loss[0], loss[-1] = 1e20, -1e20
    pruner.store.update(np.arange(n), loss)
    pruner.select(0)
    exact = float(np.float32(0.1)) * (n - 2) / n
    assert pruner._last_info["threshold"] == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("world,num_workers", [(4, 0), (2, 2)])
def test_sharded_stream_owns_shards_and_records_what_one_process_records(tmp_path, world, num_workers):
    """The ranks build the index together, then each reads only its own shards (uneven counts), runs
    as many batches as every other rank each epoch, and the union of the ranks' per-sample records
    equals a single-process run."""
    jobs.write_stream_shards(str(tmp_path))
    spawn(jobs.stream_worker, tmp_path, num_workers, world=world)
    single = Pruner(sum(jobs.STREAM_COUNTS), policy="emp", prune_ratio=0.7, epochs=5, seed=3, beta=0.5,
                    exact_budget=False, max_gap=0)
    jobs.train_stream(single, str(tmp_path), 4)
    want = jobs.records(single)
    parts = union(tmp_path, f"stream{num_workers}", world)
    shards = np.concatenate([p["shards"] for p in parts])
    assert sorted(shards.tolist()) == list(range(len(jobs.STREAM_COUNTS)))     # every shard owned once
    batches = np.stack([p["batches"] for p in parts])
    assert (batches == batches[0]).all() and batches[0, 1] < batches[0, 0]      # in step, and pruning
    assert all(int(p["steps"]) == batches[0, -1] for p in parts)                # steps_per_epoch is exact
    ids = np.concatenate([p["ids"] for p in parts])
    for field in ("loss", "memory", "times", "weight"):
        got = np.empty_like(want[field])
        got[ids] = np.concatenate([p[field] for p in parts])
        assert np.array_equal(got, want[field], equal_nan=True), field


def test_ranks_numbering_samples_in_separate_key_tables_are_refused(tmp_path):
    jobs.write_stream_shards(str(tmp_path))
    spawn(jobs.separate_key_tables_worker, tmp_path, world=2)
    for rank in range(2):
        message = (tmp_path / f"tables_rank{rank}.txt").read_text()
        assert "different key tables" in message and "ShardedPruner" in message


def test_sharded_stream_misuse_is_a_clear_error(tmp_path):
    from emp_data.webdataset import PrunedIterableDataset, shard_ownership

    jobs.write_stream_shards(str(tmp_path))
    index = str(tmp_path / "reference.empidx")
    n = sum(jobs.STREAM_COUNTS)
    with pytest.raises(ValueError, match="ownership was not made for this index"):
        PrunedIterableDataset(jobs.stream_urls(str(tmp_path)), ShardedPruner(n), index=index)
    with pytest.raises(ValueError, match="needs an index"):
        PrunedIterableDataset(jobs.stream_urls(str(tmp_path)), ShardedPruner(n, ownership=shard_ownership(index)))
    stream = PrunedIterableDataset(None, ShardedPruner(n, ownership=shard_ownership(index), policy="infobatch"),
                                   index=index)
    stream.set_epoch(0)
    assert sum(1 for _ in stream) == n        # one rank: every shard, every sample (soft rule: epoch 0 keeps all)
