"""Samples trained against samples kept, under torch.distributed with DataLoader workers.

    python benchmarks/ddp_padding.py                        # 2 gloo ranks x 2 workers, 24 shards
    python benchmarks/ddp_padding.py --ranks 2 --workers 4 --shards 48

Every rank must run the same number of batches, so a (rank, worker) that reads fewer kept samples
repeats some of its own. The scores are skewed as an untrained model's are: samples read early in
epoch 0 score high, so shards keep from about 90% down to about 30% of their samples at r = 0.7. For
a Pruner (full store on every rank) and a ShardedPruner (shard ownership), the ranks stream epoch 1 and
the samples each rank really yields are counted. The baseline, computed in the same run from the same
kept counts, is the whole-shard split (each (rank, worker) reads whole shards, padded to the largest
share). Target: trained / kept <= 1.01.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401  before init_process_group: docs/distributed.md#an-abort-at-exit


def write_shards(folder: str, counts: list[int]) -> str:
    for s, count in enumerate(counts):
        with tarfile.open(os.path.join(folder, f"p-{s:03d}.tar"), "w") as tar:
            for i in range(count):
                data = np.full(4, s * 10000 + i, dtype=np.float32).tobytes()
                info = tarfile.TarInfo(f"p{s:03d}_{i:05d}.x")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return os.path.join(folder, "p-{%03d..%03d}.tar" % (0, len(counts) - 1))


def skewed_scores(n: int, seed: int = 0) -> np.ndarray:
    """Losses that fall with the position in the epoch-0 pass (ids in shard order), plus noise."""
    rng = np.random.default_rng(seed)
    return (np.linspace(3.0, 0.5, n) * rng.lognormal(0.0, 0.3, n)).astype(np.float32)


def rank_job(rank, world, init_file, folder, urls, n, workers, sharded, out_dir):
    from emp_data import Pruner
    from emp_data import ShardedPruner
    from emp_data.webdataset import PrunedIterableDataset, ShardIndex, shard_ownership

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    index_path = os.path.join(folder, "index.empidx")
    store = os.path.join(out_dir, f"scores{rank}.emp")
    options = dict(policy="emp", loss_weight=1.0, exact_budget=True, prune_ratio=0.7, epochs=10, seed=0,
                   store_path=store, overwrite=True)
    if sharded:
        ownership = shard_ownership(ShardIndex.load(index_path))
        pruner = ShardedPruner(n, ownership=ownership, **options)
        ids = ownership.global_ids()
        pruner.store.update(pruner.ownership.find_slots(ids), skewed_scores(n)[ids], np.full(len(ids), 0.5, np.float32))
    else:
        pruner = Pruner(n, **options)
        pruner.store.update(np.arange(n), skewed_scores(n), np.full(n, 0.5, np.float32))
    stream = PrunedIterableDataset(urls, pruner, index=index_path)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    stream.set_epoch(1)
    yielded = sum(1 for _ in loader)
    kept = int((pruner.store.weight > 0).sum())      # this rank's (sharded) or every sample's kept flags
    np.save(os.path.join(out_dir, f"rank{rank}.npy"), np.array([yielded, kept]))
    dist.destroy_process_group()


def whole_shard_trained(kept_per_shard: np.ndarray, order: np.ndarray, world: int, workers: int) -> int:
    """What the whole-shard split trains: every (rank, worker) padded to the largest share."""
    shares = [int(kept_per_shard[order[r::world][w::workers]].sum()) for r in range(world) for w in range(workers)]
    return max(shares) * world * workers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=24)
    args = ap.parse_args(argv)
    from emp_data.webdataset import PrunedIterableDataset, build_index
    from emp_data import Pruner

    rng = np.random.default_rng(1)
    counts = rng.integers(200, 800, args.shards).tolist()
    n = int(sum(counts))
    print(f"{args.ranks} gloo ranks x {args.workers} DataLoader workers, {args.shards} shards, {n} samples, r = 0.7 "
          "(emp, exact budget), scores skewed by read order", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        urls = write_shards(folder, counts)
        build_index(urls, out=os.path.join(folder, "index.empidx"))
        # The baseline from the same kept counts: one process's view of epoch 1's selection.
        probe = Pruner(n, policy="emp", loss_weight=1.0, exact_budget=True, prune_ratio=0.7, epochs=10, seed=0)
        probe.store.update(np.arange(n), skewed_scores(n), np.full(n, 0.5, np.float32))
        probe.select(1)
        stream = PrunedIterableDataset(urls, probe, index=os.path.join(folder, "index.empidx"))
        stream.epoch = 1
        edges = np.concatenate([[0], np.cumsum(counts)])
        kept_per_shard = np.array([int((probe.store.weight[a:b] > 0).sum()) for a, b in zip(edges[:-1], edges[1:])])
        share = kept_per_shard / np.array(counts)
        print(f"kept per shard: {share.min():.0%} .. {share.max():.0%} of its samples", flush=True)
        print("| store | kept | trained | trained / kept | whole-shard split trains | its trained / kept |")
        print("|---|---|---|---|---|---|")
        for sharded in (False, True):
            out_dir = os.path.join(folder, f"out{int(sharded)}")
            os.makedirs(out_dir)
            init = os.path.join(folder, f"init{int(sharded)}")
            torch.multiprocessing.spawn(rank_job, args=(args.ranks, init, folder, urls, n, args.workers, sharded,
                                                         out_dir), nprocs=args.ranks, join=True)
            results = np.array([np.load(os.path.join(out_dir, f"rank{r}.npy")) for r in range(args.ranks)])
            trained = int(results[:, 0].sum())
            kept = int(results[:, 1].sum()) if sharded else int(results[0, 1])
            if sharded:
                from emp_data.webdataset import ShardIndex, shard_ownership
                index = ShardIndex.load(os.path.join(folder, "index.empidx"))
                shares = []
                for r in range(args.ranks):
                    own = np.array(shard_ownership(index, r, args.ranks).shards)
                    own = np.random.default_rng([0, 1, r]).permutation(own)
                    shares += [int(kept_per_shard[own[w::args.workers]].sum()) for w in range(args.workers)]
                baseline = max(shares) * args.ranks * args.workers
            else:
                baseline = whole_shard_trained(kept_per_shard, stream.shares.order(stream.epoch), args.ranks, args.workers)
            name = "ShardedPruner (shard ownership)" if sharded else "Pruner (replicated)"
            print(f"| {name} | {kept} | {trained} | {trained / kept:.4f} | {baseline} | {baseline / kept:.4f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
