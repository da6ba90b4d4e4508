"""Small training jobs run in fresh processes by the integration tests (importable by spawn)."""
import os

import numpy as np
import torch
import torch.distributed.nn  # noqa: F401  before init_process_group: docs/distributed.md#an-abort-at-exit
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from emp_data import DistributedPrunedSampler, IndexedDataset, Pruner, PrunedSampler

from _worker_start import WORKER_START_OVERRIDE

N, EPOCHS, BATCH = 600, 3, 32

# DataLoader workers of ranks started by torch.multiprocessing.spawn start by spawn as well (the
# start method is inherited), and each then imports torch again, every epoch: seconds per epoch on a
# small machine. Ranks that torchrun starts fork their workers (Linux), as the jobs that pass this do.
# ddp_stream_worker keeps the inherited spawn, so a stream pickled into its workers stays covered.
# EMP_DATA_TEST_WORKER_START overrides it (_worker_start.py).
WORKER_START = WORKER_START_OVERRIDE or "fork"


def make_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def train_step(model, opt, pruner, ids, x, y):
    """One optimizer step on a batch through pruner.loss (which records its scores)."""
    logits = model(x)
    loss = pruner.loss(F.cross_entropy(logits, y, reduction="none"), ids, logits=logits)
    opt.zero_grad()
    loss.backward()
    opt.step()


def make_model():
    torch.manual_seed(1)
    return torch.nn.Linear(8, 2)


def train_with_stateful_loader(phase, ckpt_dir, stop_after_batches=None):
    """phase 'full': uninterrupted; 'first': stop after `stop_after_batches` and checkpoint;
    'second': resume from the checkpoint in this (new) process. Returns the ids seen, in order."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    torch.set_num_threads(1)
    data = IndexedDataset(make_data())
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if phase == "second":
        pruner = Pruner.load(os.path.join(ckpt_dir, "pruner.emp"))
    else:
        pruner = Pruner(N, policy="emp", prune_ratio=0.5, epochs=EPOCHS, seed=3, beta=1.0)
    sampler = PrunedSampler(pruner)
    loader = StatefulDataLoader(data, batch_size=BATCH, sampler=sampler, num_workers=2,
                                multiprocessing_context=WORKER_START)
    start_epoch = 0
    if phase == "second":
        state = torch.load(os.path.join(ckpt_dir, "train.pt"), weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        loader.load_state_dict(state["loader"])
        start_epoch = state["epoch"]
    seen, batches = [], 0
    for epoch in range(start_epoch, EPOCHS):
        for ids, (x, y) in loader:
            train_step(model, opt, pruner, ids, x, y)
            seen.extend(ids.tolist())
            batches += 1
            if phase == "first" and batches == stop_after_batches:
                pruner.save(os.path.join(ckpt_dir, "pruner.emp"))
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "loader": loader.state_dict(),
                            "epoch": epoch}, os.path.join(ckpt_dir, "train.pt"))
                return seen, None
    return seen, pruner.store.loss.copy()


def ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = IndexedDataset(make_data())
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        pruner = Pruner(N, policy="infobatch", prune_ratio=0.5, epochs=EPOCHS, seed=5)
        sampler = DistributedPrunedSampler(pruner)
        loader = torch.utils.data.DataLoader(data, batch_size=25, sampler=sampler)
        per_epoch = []
        for epoch in range(EPOCHS):
            ids_epoch = []
            # unequal batch counts per rank are possible; the gather handles different sizes
            for ids, (x, y) in loader:
                logits = model(x)
                loss = pruner.loss(F.cross_entropy(logits, y, reduction="none"), ids)
                opt.zero_grad()
                loss.backward()
                opt.step()
                ids_epoch.extend(ids.tolist())
            full_ids, _ = pruner.select(epoch)
            per_epoch.append((ids_epoch, full_ids.tolist()))
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), loss=pruner.store.loss, mean=pruner.store.loss_mean,
                 times=pruner.store.times_selected)
        torch.save(per_epoch, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def stream_key_table_inserts(path, keys, out_queue):
    """Insert `keys` (url, key) into a shared KeyTable file; report the ids this process saw."""
    from emp_data.webdataset import KeyTable

    table = KeyTable(50_000, path)
    out_queue.put([table.id_of(u, k) for u, k in keys])


def stream_resume_without_index(phase, folder, urls, stop_after=33):
    """A no-index stream through StatefulDataLoader(num_workers=2). 'first': read `stop_after`
    samples, checkpoint the pruner and the loader, then read on; 'second': a new process resumes
    from the checkpoint. Returns [(id, key), ...] after the checkpoint (and before it, for 'first')."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from emp_data.webdataset import PrunedIterableDataset

    ckpt = os.path.join(folder, "stream_ckpt")
    if phase == "second":     # the README's restore step: the checkpoint into the live file workers read
        pruner = Pruner.load(ckpt + ".emp", store_path=os.path.join(folder, "scores.emp"))
    else:
        pruner = Pruner(200, policy="random", prune_ratio=0.4, seed=6, store_path=os.path.join(folder, "scores.emp"))
    ds = PrunedIterableDataset(urls, pruner, key_table=os.path.join(folder, "stream.keys"))
    ds.set_epoch(0)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=2)
    if phase == "second":
        loader.load_state_dict(torch.load(ckpt + ".pt", weights_only=False))
        return [], [(int(s["__id__"]), s["__key__"]) for s in loader]
    it = iter(loader)
    head = [(int(s["__id__"]), s["__key__"]) for s in (next(it) for _ in range(stop_after))]
    pruner.save(ckpt + ".emp")
    torch.save(loader.state_dict(), ckpt + ".pt")
    return head, [(int(s["__id__"]), s["__key__"]) for s in it]


def varlen_gather_worker(rank, world, init_file, out_dir):
    """Rank r sends r + 2 rows (ids near 2^62, so a float cast would show) and (rows, 2) values."""
    import torch.distributed as dist

    from emp_data.distributed import all_gather_varlen

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = rank + 2
        ids = torch.arange(rows, dtype=torch.int64) + (2**62 + 1000 * rank)
        values = torch.full((rows, 2), float(rank)) + torch.arange(rows, dtype=torch.float32)[:, None]
        ids_all, values_all = all_gather_varlen(ids, values)
        torch.save((ids_all, values_all), os.path.join(out_dir, f"gather{rank}.pt"))
    finally:
        dist.destroy_process_group()


def write_xcls_shards(folder, prefix, counts):
    """Tar shards <prefix>-00.tar, ... of (x: 4 float32, cls: argmax of x[:3]) samples, `counts[s]`
    in shard s, from one seeded generator: the data of the stream tests."""
    import io
    import tarfile

    rng = np.random.default_rng(0)
    for s, count in enumerate(counts):
        with tarfile.open(os.path.join(folder, f"{prefix}-{s:02d}.tar"), "w") as tar:
            for i in range(count):
                x = rng.standard_normal(4).astype(np.float32)
                for ext, data in (("x", x.tobytes()), ("cls", str(int(np.argmax(x[:3]))).encode())):
                    info = tarfile.TarInfo(f"{prefix}{s:02d}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _floats(raw):
    return torch.from_numpy(np.frombuffer(raw, np.float32).copy())


def ddp_stream_worker(rank, world, init_file, folder, out_dir):
    """The README's WebDataset recipe under torch.distributed (gloo): 2 DataLoader workers per rank,
    each rank its own store file. Records the batches run per epoch and the final store."""
    import torch.distributed as dist
    import webdataset as wds

    from emp_data.webdataset import PrunedIterableDataset

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        pruner = Pruner(300, policy="emp", prune_ratio=0.7, epochs=4, seed=3,
                        store_path=os.path.join(out_dir, f"scores{rank}.emp"))
        stream = PrunedIterableDataset(os.path.join(folder, "d-{00..09}.tar"), pruner,
                                       index=os.path.join(folder, "d.empidx"))
        pipeline = wds.DataPipeline(stream, wds.to_tuple("__id__", "x", "cls"), wds.map_tuple(None, _floats, int))
        loader = torch.utils.data.DataLoader(pipeline, batch_size=8, num_workers=2)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        batches, first_epoch_ids, per_epoch = [], [], {}
        for epoch in range(4):
            stream.set_epoch(epoch)
            count, seen = 0, []
            for ids, x, y in loader:
                if epoch == 0:
                    first_epoch_ids += ids.tolist()
                seen += ids.tolist()
                train_step(model, opt, pruner, ids, x, y)
                count += 1
            batches.append(count)
            stats = pruner.stats()
            per_epoch[f"ids{epoch}"] = np.array(seen)
            per_epoch[f"kept_ids{epoch}"] = np.sort(pruner.select(epoch)[0])      # the current selection
            per_epoch[f"stats{epoch}"] = np.array([stats["kept"], stats["trained"], stats["padding"]])
        np.savez(os.path.join(out_dir, f"stream{rank}.npz"), batches=np.array(batches), loss=pruner.store.loss,
                 first_epoch_ids=np.array(first_epoch_ids),
                 times=pruner.store.times_selected, **per_epoch)
    finally:
        dist.destroy_process_group()


def ddp_out_of_step_worker(rank, world, init_file, out_dir):
    """Rank 1 is an epoch ahead of rank 0: the gather in pruner.loss must fail on both, clearly."""
    import torch.distributed as dist

    from emp_data.distributed import RanksOutOfStep

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pruner = Pruner(50, policy="random", prune_ratio=0.5)
        pruner.select(rank)
        try:
            pruner.loss(torch.ones(4), torch.arange(4))
            outcome = "no error"
        except RanksOutOfStep as exc:
            outcome = str(exc)
        with open(os.path.join(out_dir, f"outcome{rank}.txt"), "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def ddp_stream_resume_worker(rank, world, init_file, folder, out_dir, phase, stop_batch=5):
    """The stream recipe under torch.distributed with StatefulDataLoader, in three phases: 'full'
    runs 4 epochs; 'first' stops in epoch 1 after `stop_batch` batches and checkpoints (pruner,
    loader, model, optimizer), as a job killed after a checkpoint; 'second' (new processes) restores
    it and finishes. Records every batch's ids and the final store."""
    import torch.distributed as dist
    import webdataset as wds
    from torchdata.stateful_dataloader import StatefulDataLoader

    from emp_data.webdataset import PrunedIterableDataset

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        live = os.path.join(out_dir, f"{phase}-scores{rank}.emp")
        ckpt = os.path.join(out_dir, f"ckpt{rank}")
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if phase == "second":
            pruner = Pruner.load(ckpt + ".emp", store_path=live)
        else:
            pruner = Pruner(300, policy="emp", prune_ratio=0.7, epochs=4, seed=3, store_path=live)
        stream = PrunedIterableDataset(os.path.join(folder, "d-{00..09}.tar"), pruner,
                                       index=os.path.join(folder, "d.empidx"))
        pipeline = wds.DataPipeline(stream, wds.to_tuple("__id__", "x", "cls"), wds.map_tuple(None, _floats, int))
        loader = StatefulDataLoader(pipeline, batch_size=8, num_workers=2, multiprocessing_context=WORKER_START)
        first_epoch = 0
        if phase == "second":
            state = torch.load(ckpt + ".pt", weights_only=False)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            loader.load_state_dict(state["loader"])
            first_epoch = state["epoch"]
        seen = []
        for epoch in range(first_epoch, 4):
            stream.set_epoch(epoch)
            for step, (ids, x, y) in enumerate(loader):
                train_step(model, opt, pruner, ids, x, y)
                seen.append(ids.tolist())
                if phase == "first" and epoch == 1 and step + 1 == stop_batch:
                    pruner.save(ckpt + ".emp")
                    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                                "loader": loader.state_dict(), "epoch": epoch}, ckpt + ".pt")
                    torch.save(seen, os.path.join(out_dir, f"{phase}-seen{rank}.pt"))
                    return
        torch.save(seen, os.path.join(out_dir, f"{phase}-seen{rank}.pt"))
        np.savez(os.path.join(out_dir, f"{phase}-store{rank}.npz"), loss=pruner.store.loss,
                 times=pruner.store.times_selected, mean=pruner.store.loss_mean)
    finally:
        dist.destroy_process_group()
