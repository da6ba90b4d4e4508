"""Jobs for tests/distributed/test_sharded.py, run by torch.multiprocessing.spawn on gloo (importable by spawn)."""
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import reference_selection
from _training_jobs import WORKER_START, _floats, write_xcls_shards
from emp_data import Pruner, PrunedSampler
from emp_data import prediction_entropy
from emp_data import ShardedPruner

# Every policy and mode whose selection must be the same sharded and in one process.
POLICIES = [
    ("full", {}), ("random", {}), ("infobatch", {}), ("infobatch", {"exact_budget": True}),
    ("emp", {"beta": 0.7}), ("emp", {"beta": 0.7, "exact_budget": True}), ("emp", {"mode": "topk", "epsilon": 0.2}),
    ("emp", {"mode": "topk"}), ("ucb", {"c": 0.5}), ("epsilon_greedy", {"epsilon": 0.3}),
    ("weighted", {"alpha": 1.0}), ("weighted", {"alpha": 2.0, "score": "emp", "beta": 0.5, "normalize": False}),
    ("sweep", {}), ("seta", {}), ("seta", {"exact_budget": True, "max_gap": 2}),
    ("infobatch", {"exact_budget": True, "max_gap": 2}), ("emp", {"beta": 0.7, "max_gap": 2}),
    ("ucb", {"max_gap": 2}), ("weighted", {"max_gap": 2}), ("emp", {"loss_weight": 0.0, "exact_budget": True}),
]
SELECTION_N = 100_000


def realistic_updates(n, epoch, seed=0):
    """(ids, loss, memory) for one epoch of training: lognormal losses that fall with the epoch, a
    memory term in [0, 1], heavy ties (a tenth of losses rounded to 0.1) and a share left unseen."""
    rng = np.random.default_rng([seed, epoch])
    ids = rng.permutation(n)[: int(0.8 * n)]
    loss = (rng.lognormal(0.0, 1.0, ids.size) / (1 + epoch)).astype(np.float32)
    ties = rng.random(ids.size) < 0.1
    loss[ties] = np.round(loss[ties], 1)
    memory = rng.random(ids.size).astype(np.float32)
    return ids.astype(np.int64), loss, memory


def init(rank, world, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def record_selections(pruner, updates_for, epochs, slot_ids=None, states=None):
    """Selects `epochs` epochs, recording between them; returns {epoch: (ids, weights)} unpadded.
    `states`: a dict that gets each epoch's store state before its select (single process)."""
    out = {}
    for epoch in range(epochs):
        if states is not None:
            states[epoch] = reference_selection.State.of(pruner.store)
        ids, weights = pruner.select(epoch)
        if isinstance(pruner, ShardedPruner):
            kept = pruner.store.weight > 0     # the unpadded kept set, straight from this rank's store
            ids = pruner.ownership.global_ids()[kept]
            weights = pruner.store.weight[kept]
        out[epoch] = (np.asarray(ids), np.asarray(weights))
        all_ids, loss, memory = updates_for(epoch)
        if isinstance(pruner, ShardedPruner):
            slots = pruner.ownership.find_slots(all_ids)
            mine = slots >= 0
            pruner.store.update(slots[mine], loss[mine], memory[mine])
        else:
            pruner.store.update(all_ids, loss, memory)
    return out


def selection_worker(rank, world, init_file, out_dir):
    init(rank, world, init_file)
    traffic = []
    for p, (policy, options) in enumerate(POLICIES):
        pruner = ShardedPruner(SELECTION_N, policy=policy, prune_ratio=0.7, seed=5, **options)
        sel = record_selections(pruner, lambda e: realistic_updates(SELECTION_N, e), epochs=3)
        np.savez(os.path.join(out_dir, f"sel{p}_rank{rank}.npz"),
                 **{f"ids{e}": ids for e, (ids, _) in sel.items()}, **{f"w{e}": w for e, (_, w) in sel.items()})
        traffic.append(pruner.traffic["bytes"])
        assert pruner.store.nbytes == 24 * pruner.local_samples
    np.save(os.path.join(out_dir, f"traffic_rank{rank}.npy"), np.array(traffic))
    dist.destroy_process_group()


# ------------------------------------------------------------------------------- map-style training
N, EPOCHS, BATCH = 800, 4, 16


def make_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def train_epochs(pruner, epochs, first_epoch=0):
    """Per-sample losses depend only on the sample (a frozen model), so a sharded run and a single
    process must record the same scores, whatever batch each sample lands in."""
    x, y = make_data()
    torch.manual_seed(1)
    loss_all, memory_all = frozen_terms(torch.nn.Linear(8, 2), x, y)
    steps = []
    for epoch in range(first_epoch, first_epoch + epochs):
        sampler = PrunedSampler(pruner, start_epoch=epoch)
        ids = torch.tensor(list(iter(sampler)), dtype=torch.int64)
        steps.append(-(-len(ids) // BATCH))
        for start in range(0, len(ids), BATCH):
            batch = ids[start:start + BATCH]
            pruner.loss(loss_all[batch], batch, memory=memory_all[batch])
    return steps


def frozen_terms(model, x, y):
    """A frozen model's per-sample loss and prediction entropy, one sample at a time. A sharded run
    and a single process batch samples differently, and a batched matmul may round a row differently
    with the batch's shape (MKL's AVX-512 kernels do); one row at a time, a sample's values are the
    same bits in every run."""
    with torch.no_grad():
        logits = [model(x[i:i + 1]) for i in range(len(x))]
        loss = torch.cat([F.cross_entropy(z, y[i:i + 1], reduction="none") for i, z in enumerate(logits)])
        memory = torch.cat([prediction_entropy(z) for z in logits])
    return loss, memory


def records(pruner):
    """Every owned sample's (id, loss, memory, times_selected, weight)."""
    ids = pruner.ownership.global_ids() if isinstance(pruner, ShardedPruner) else np.arange(pruner.num_samples)
    s = pruner.store
    return dict(ids=ids, loss=s.loss.copy(), memory=s.memory.copy(), times=s.times_selected.copy(),
                weight=s.weight.copy())


def training_worker(rank, world, init_file, out_dir, policy, options):
    init(rank, world, init_file)
    pruner = ShardedPruner(N, policy=policy, prune_ratio=0.7, epochs=EPOCHS + 2, seed=3, **options)
    steps = train_epochs(pruner, EPOCHS)
    stats = pruner.stats()
    pruner.save(os.path.join(out_dir, "checkpoints", "ckpt"))     # a folder that does not exist yet
    np.savez(os.path.join(out_dir, f"train_rank{rank}.npz"), steps=np.array(steps), **records(pruner),
             hist=stats["times_selected_histogram"], kept=stats["kept"], padding=stats["padding"],
             passes=stats["sample_passes"], share=stats["rank_batch_samples"])
    dist.destroy_process_group()


def resume_worker(rank, world, init_file, out_dir, policy, options):
    """Loads the 4-rank checkpoint on `world` ranks and trains two more epochs."""
    init(rank, world, init_file)
    pruner = ShardedPruner.load(os.path.join(out_dir, "checkpoints", "ckpt"))
    assert pruner.ownership.world == world
    train_epochs(pruner, 2, first_epoch=EPOCHS)
    np.savez(os.path.join(out_dir, f"resumed{world}_rank{rank}.npz"), **records(pruner))
    dist.destroy_process_group()


def single_process_training(policy, options, epochs, first_epoch=0, pruner=None):
    pruner = pruner or Pruner(N, policy=policy, prune_ratio=0.7, epochs=EPOCHS + 2, seed=3, **options)
    train_epochs(pruner, epochs, first_epoch)
    return pruner


# ------------------------------------------------------------------------------------- edge cases
def zero_kept_worker(rank, world, init_file, out_dir):
    """Rank 1 owns only samples that every other rank's outrank: with top-k at a small budget it keeps
    none, and still runs as many steps as the others, at weight 0."""
    init(rank, world, init_file)
    n = 40
    pruner = ShardedPruner(n, policy="ucb", prune_ratio=0.9, seed=0)
    ids = pruner.ownership.global_ids()
    loss = np.where(ids % world == 1, 0.01, 1.0 + ids / n).astype(np.float32)
    pruner.store.update(np.arange(len(ids)), loss)
    kept_ids, weights = pruner.select(0)
    own_kept = int((pruner.store.weight > 0).sum())
    out = pruner.loss(torch.ones(len(kept_ids), requires_grad=True), kept_ids)
    np.savez(os.path.join(out_dir, f"zero_rank{rank}.npz"), ids=kept_ids, weights=weights, own_kept=own_kept,
             loss=out.item(), padding=pruner.stats()["padding"])
    dist.destroy_process_group()


def foreign_id_worker(rank, world, init_file, out_dir):
    init(rank, world, init_file)
    pruner = ShardedPruner(100, policy="infobatch", prune_ratio=0.5)
    pruner.select(0)
    write_error(os.path.join(out_dir, f"foreign_rank{rank}.txt"), lambda: pruner.loss(torch.ones(1), [(rank + 1) % world]))
    dist.destroy_process_group()


def write_error(path, action):
    """Runs `action` and writes the ValueError it raises to `path` ('' if none)."""
    try:
        action()
        message = ""
    except ValueError as exc:
        message = str(exc)
    with open(path, "w") as f:
        f.write(message)


# ---------------------------------------------------------------------------------------- streams
STREAM_COUNTS = [37, 12, 55, 20, 41, 8, 33, 26, 49, 15, 30]     # uneven shards: uneven ranks


def write_stream_shards(folder):
    """Tar shards of (x: 4 float32, cls) samples with the counts above, and their index."""
    from emp_data.webdataset import build_index

    write_xcls_shards(folder, "u", STREAM_COUNTS)
    return build_index(stream_urls(folder), out=os.path.join(folder, "reference.empidx"))


def stream_urls(folder):
    return os.path.join(folder, "u-{00..%02d}.tar" % (len(STREAM_COUNTS) - 1))


def train_stream(pruner, folder, epochs, num_workers=0):
    """Epochs of a frozen model over the pruned stream (per-sample losses depend on the sample only);
    returns the batches run per epoch."""
    import webdataset as wds

    from emp_data.webdataset import PrunedIterableDataset

    stream = PrunedIterableDataset(stream_urls(folder), pruner, index=os.path.join(folder, "reference.empidx"))
    pipeline = wds.DataPipeline(stream, wds.to_tuple("__id__", "x", "cls"),
                                wds.map_tuple(None, _floats, int))
    loader = torch.utils.data.DataLoader(pipeline, batch_size=8, num_workers=num_workers,
                                         multiprocessing_context=WORKER_START if num_workers else None)
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    batches = []
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        count = 0
        for ids, x, y in loader:
            loss, memory = frozen_terms(model, x, y)
            pruner.loss(loss, ids, memory=memory)
            count += 1
        batches.append(count)
    return batches, stream


def stream_worker(rank, world, init_file, out_dir, num_workers):
    """Without an index of their own, the ranks first build one together (each scans every world-th
    shard); it must be the index one process builds."""
    from emp_data.webdataset import ShardIndex, build_index, shard_ownership

    init(rank, world, init_file)
    built = build_index(stream_urls(out_dir), out=os.path.join(out_dir, "u.empidx"), distributed=True)
    reference = ShardIndex.load(os.path.join(out_dir, "reference.empidx"))
    assert built.shards == reference.shards
    assert all(np.array_equal(built._a[k], reference._a[k]) for k in reference._a)
    ownership = shard_ownership(os.path.join(out_dir, "u.empidx"))
    store_path = os.path.join(out_dir, f"scores{rank}.emp") if num_workers else None
    pruner = ShardedPruner(sum(STREAM_COUNTS), policy="emp", prune_ratio=0.7, epochs=5, seed=3, ownership=ownership,
                           store_path=store_path, beta=0.5, exact_budget=False, max_gap=0)   # InfoBatch's soft rule
    batches, stream = train_stream(pruner, out_dir, 4, num_workers)
    steps = stream.steps_per_epoch(8, num_workers=num_workers, epoch=3)
    np.savez(os.path.join(out_dir, f"stream{num_workers}_rank{rank}.npz"), batches=np.array(batches), steps=steps,
             shards=np.array(ownership.shards), **records(pruner))
    dist.destroy_process_group()


def separate_key_tables_worker(rank, world, init_file, out_dir):
    """Two 'nodes': each rank numbers samples in a key table of its own (as per-machine files would be)
    while sharing one Pruner design: the stream must refuse instead of mixing ids."""
    import webdataset as wds

    from emp_data.webdataset import PrunedIterableDataset

    init(rank, world, init_file)
    pruner = Pruner(sum(STREAM_COUNTS), policy="infobatch", prune_ratio=0.5,
                    store_path=os.path.join(out_dir, f"node{rank}.emp"))
    source = wds.WebDataset(stream_urls(out_dir), shardshuffle=False, nodesplitter=wds.split_by_node)
    stream = PrunedIterableDataset(source, pruner)
    write_error(os.path.join(out_dir, f"tables_rank{rank}.txt"), lambda: stream.set_epoch(0))
    dist.destroy_process_group()
