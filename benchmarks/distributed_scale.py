"""ShardedPruner against the replicated store, on 1, 2, 4 and 8 gloo processes of this machine.

    python benchmarks/distributed_scale.py                     # N = 2e6, policy emp (exact budget)
    python benchmarks/distributed_scale.py --samples 8000000 --worlds 1 2 4

For each world size, in the same run, every rank:
- sharded: a ShardedPruner (strided ownership) whose local samples all have realistic scores;
- replicated: a Pruner with the full store on every rank, loss() all-gathering each batch (the
  design before ShardedPruner).
Measured per design: per-epoch select time (median of 3 epochs, the slowest rank), collectives and
bytes per epoch and per training step (loss() on a batch of 256 per rank), and the store bytes per
rank. Bytes are counted at the torch.distributed call on one rank: an all_reduce counts its tensor,
an all_gather the gathered output (gloo's own algorithm moves a small multiple of that). Then a model
of one select's collectives, call by call, from which the README models N = 1e10 samples on 1024 ranks.

The processes share this machine's cores: select times at 8 ranks on a 2-core VM measure
oversubscription, not a cluster; the traffic and memory figures do not depend on that.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401  before init_process_group: docs/distributed.md#an-abort-at-exit

BATCH = 256


class Traffic:
    """Counts torch.distributed collectives and their bytes in this process (see the module doc)."""

    def __init__(self):
        self.calls = self.bytes = 0
        self.log = []          # (collective, bytes) of every call, in order
        self._all_reduce, self._all_gather = dist.all_reduce, dist.all_gather

        def all_reduce(tensor, *args, **kwargs):
            self.calls += 1
            self.bytes += tensor.numel() * tensor.element_size()
            self.log.append(("all_reduce", tensor.numel() * tensor.element_size()))
            return self._all_reduce(tensor, *args, **kwargs)

        def all_gather(outputs, tensor, *args, **kwargs):
            self.calls += 1
            self.bytes += sum(t.numel() * t.element_size() for t in outputs)
            self.log.append(("all_gather", sum(t.numel() * t.element_size() for t in outputs)))
            return self._all_gather(outputs, tensor, *args, **kwargs)

        dist.all_reduce, dist.all_gather = all_reduce, all_gather

    def snapshot(self):
        return self.calls, self.bytes


def fill_scores(pruner, sharded: bool, n: int, seed: int = 0):
    """Lognormal losses and [0, 1] memory terms for every sample (a sample's values depend on its id
    only, so both designs hold the same scores)."""
    ids = pruner.ownership.global_ids() if sharded else np.arange(n)
    rng = np.random.default_rng(seed)
    loss_all = rng.lognormal(0.0, 1.0, n).astype(np.float32)
    mem_all = rng.random(n).astype(np.float32)
    pruner.store.update(np.arange(len(ids)), loss_all[ids], mem_all[ids])


def measure(pruner, sharded: bool, n: int, traffic: Traffic) -> dict:
    fill_scores(pruner, sharded, n)
    select_times, epoch_calls, epoch_bytes = [], [], []
    for epoch in range(1, 4):
        dist.barrier()
        first_call = len(traffic.log)
        c0, b0 = traffic.snapshot()
        t0 = time.perf_counter()
        ids, _ = pruner.select(epoch)
        select_times.append(time.perf_counter() - t0)
        c1, b1 = traffic.snapshot()
        epoch_calls.append(c1 - c0)
        epoch_bytes.append(b1 - b0)
        if epoch == 1:
            calls = traffic.log[first_call:]
    # One training step: loss() on a batch of this rank's kept ids.
    batch = torch.as_tensor(np.asarray(ids[:BATCH]))
    losses = torch.rand(len(batch))
    memory = torch.rand(len(batch))
    dist.barrier()
    c0, b0 = traffic.snapshot()
    pruner.loss(losses, batch, memory=memory)
    c1, b1 = traffic.snapshot()
    return {"select_s": statistics.median(select_times), "epoch_collectives": statistics.median(epoch_calls),
            "epoch_bytes": statistics.median(epoch_bytes), "step_collectives": c1 - c0, "step_bytes": b1 - b0,
            "store_bytes": pruner.store.nbytes, "kept": int(len(ids)), "calls": calls}


def worker(rank, world, init_file, out_dir, n, policy, options):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    traffic = Traffic()
    from emp_data import Pruner
    from emp_data import ShardedPruner

    results = {}
    sharded = ShardedPruner(n, policy=policy, prune_ratio=0.7, seed=1, **options)
    results["sharded"] = measure(sharded, True, n, traffic)
    del sharded
    replicated = Pruner(n, policy=policy, prune_ratio=0.7, seed=1, distributed=True, **options)
    results["replicated"] = measure(replicated, False, n, traffic)
    del replicated
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def run_world(world, n, policy, options):
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(worker, args=(world, os.path.join(tmp, "init"), tmp, n, policy, options),
                                    nprocs=world, join=True)
        ranks = [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(world)]
    out = {}
    for design in ("sharded", "replicated"):
        rows = [r[design] for r in ranks]
        out[design] = {"select_s": max(r["select_s"] for r in rows),
                       "epoch_collectives": rows[0]["epoch_collectives"], "epoch_bytes": rows[0]["epoch_bytes"],
                       "step_collectives": rows[0]["step_collectives"], "step_bytes": rows[0]["step_bytes"],
                       "store_bytes": max(r["store_bytes"] for r in rows),
                       "kept_per_rank": rows[0]["kept"], "calls": rows[0]["calls"]}
    return out


def fmt_bytes(b):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(b) < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=float, default=2e6)
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--policy", default="emp")
    args = ap.parse_args(argv)
    n = int(args.samples)
    options = {"beta": 0.5, "exact_budget": True} if args.policy == "emp" else {}
    print(f"# distributed_scale: N = {n:,}, policy {args.policy} {options}, r = 0.7, batch {BATCH} per rank")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, gloo")
    print("| ranks | design | select s/epoch | collectives/epoch | bytes/epoch | collectives/step | bytes/step "
          "| store bytes/rank | vs 24N/world |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    measured = {}
    for world in args.worlds:
        out = run_world(world, n, args.policy, options)
        measured[world] = out
        for design in ("sharded", "replicated"):
            r = out[design]
            ideal = 24 * n / world
            print(f"| {world} | {design} | {r['select_s']:.3f} | {r['epoch_collectives']} | "
                  f"{fmt_bytes(r['epoch_bytes'])} | {r['step_collectives']} | {fmt_bytes(r['step_bytes'])} | "
                  f"{fmt_bytes(r['store_bytes'])} | {r['store_bytes'] / ideal:.3f} |", flush=True)
    # The calls behind one epoch's selection traffic at the largest world: the README's model of
    # larger runs is built from these (which of them grow with N, with the world, or neither).
    top_world = max(measured)
    print()
    print(f"# one sharded select at {top_world} ranks, call by call (bytes on rank 0):")
    print("  " + ", ".join(f"{kind} {nbytes} B" for kind, nbytes in measured[top_world]["sharded"]["calls"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
