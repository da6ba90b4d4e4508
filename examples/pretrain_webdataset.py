"""Pretraining over WebDataset shards with EMP dynamic pruning, end to end.

    python examples/pretrain_webdataset.py                 # writes shards to a temp dir, trains
    python examples/pretrain_webdataset.py --epochs 8 --prune-ratio 0.9
    python examples/pretrain_webdataset.py --ssl           # contrastive (SimCLR) pretraining, no labels

1. writes a small shard set (1-D signals from 10 class templates, .npy + .cls per sample);
2. builds the shard index (stable ids; pruned samples are then never read);
3. trains a small 1-D CNN through PrunedIterableDataset -> wds.decode -> DataLoader(num_workers=2),
   with an EMP Pruner whose store is a memory-mapped file the workers read;
   with --ssl it pretrains an encoder contrastively instead: two augmented views per sample, NT-Xent
   loss and the contrastive memory term from emp_data.contrastive_scores (labels unused),
   and finally reports a linear probe on the frozen features;
4. prints, per epoch, the kept fraction, samples/s through the loader and the loss.
"""
from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import webdataset as wds

from emp_data import Pruner
from emp_data_quality.ssl import augment, linear_probe, make_encoder, make_projection
from emp_data import contrastive_scores
from emp_data.webdataset import PrunedIterableDataset, PrunedPipeline, build_index

LENGTH, CLASSES = 40, 10


def write_shards(folder: str, samples: int, per_shard: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(CLASSES, LENGTH)).cumsum(axis=1)
    templates /= templates.std(axis=1, keepdims=True)
    urls = []
    for start in range(0, samples, per_shard):
        url = os.path.join(folder, f"train-{start // per_shard:05d}.tar")
        with tarfile.open(url, "w") as tar:
            for i in range(start, min(samples, start + per_shard)):
                label = int(rng.integers(CLASSES))
                shift = int(rng.integers(-6, 7))
                x = np.roll(templates[label], shift) * rng.uniform(0.7, 1.3) + rng.normal(0, 0.6, LENGTH)
                buf = io.BytesIO()
                np.save(buf, x.astype(np.float32))
                for ext, data in (("npy", buf.getvalue()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"sample{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(url)
    return urls


def make_model() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, LENGTH)), nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
                         nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * LENGTH // 2, CLASSES))


def supervised_step(model, pruner, ids, x, y):
    logits = model(x)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    return pruner.loss(per_sample, ids, logits=logits), per_sample


def contrastive_step(model, pruner, ids, x, views):
    encoder, head = model
    scores = contrastive_scores(head(encoder(augment(x, views))), head(encoder(augment(x, views))), temperature=0.2)
    # The SSL memory term (entropy of each anchor's softmax row) feeds the same store as logits would.
    return pruner.loss(scores.loss, ids, memory=scores.memory), scores.loss


def probe(encoder, urls, samples: int) -> float:
    """Linear probe on frozen features: the first 80% of samples train it, the rest test it."""
    loader = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.decode(),
                              wds.to_tuple("npy", "cls"), wds.batched(1024))
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(encoder(torch.as_tensor(np.asarray(x))))
            labels.append(torch.as_tensor(np.asarray(y)))
    feats, labels = torch.cat(feats), torch.cat(labels)
    cut = int(0.8 * samples)
    return linear_probe(feats[:cut], labels[:cut], feats[cut:], labels[cut:], CLASSES)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=16000)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--prune-ratio", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ssl", action="store_true", help="contrastive pretraining (labels only for the final probe)")
    ap.add_argument("--dir", default=None, help="where to write shards (default: a temp dir)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        os.makedirs(folder, exist_ok=True)
        urls = write_shards(folder, args.samples, args.per_shard)
        t0 = time.perf_counter()
        index = build_index(urls, out=os.path.join(folder, "index.empidx"))
        print(f"{len(urls)} shards, {index.num_samples} samples; index built in {time.perf_counter() - t0:.2f} s")

        pruner = Pruner(index.num_samples, policy="emp", prune_ratio=args.prune_ratio, epochs=args.epochs,
                        seed=0, store_path=os.path.join(folder, "scores.emp"), overwrite=True)
        stream = PrunedIterableDataset(urls, pruner, index=os.path.join(folder, "index.empidx"))
        pipeline = PrunedPipeline(stream, wds.decode(), wds.to_tuple("__id__", "npy", "cls"))   # resumes by seeking
        loader = torch.utils.data.DataLoader(pipeline, batch_size=args.batch_size, num_workers=args.workers)
        views = torch.Generator().manual_seed(1)
        model = (make_encoder(LENGTH), make_projection()) if args.ssl else make_model()
        params = [p for m in (model if args.ssl else (model,)) for p in m.parameters()]
        opt = torch.optim.Adam(params, lr=2e-3 if args.ssl else 3e-3)
        for epoch in range(args.epochs):
            stream.set_epoch(epoch)        # selects the epoch in the pruner; workers read the store
            t0, seen, total = time.perf_counter(), 0, 0.0
            for ids, x, y in loader:
                if args.ssl:
                    if len(ids) < 2:
                        continue   # a contrastive batch needs negatives
                    loss, per_sample = contrastive_step(model, pruner, ids, x, views)
                else:
                    loss, per_sample = supervised_step(model, pruner, ids, x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(ids)
                total += per_sample.detach().sum().item()
            dt = time.perf_counter() - t0
            stats = pruner.stats()
            print(f"epoch {epoch}: kept {stats['kept_fraction']:.2f} of samples ({stats['kept']}), "
                  f"{seen / dt:,.0f} samples/s, mean loss {total / max(seen, 1):.3f}")
        stats = pruner.stats()
        print(f"effective pruning {stats['effective_prune_ratio']:.2f} (nominal {args.prune_ratio}); "
              f"{stats['sample_passes_saved']} sample-passes saved of {index.num_samples * args.epochs}")
        if args.ssl:
            torch.manual_seed(0)
            baseline = probe(make_encoder(LENGTH).eval(), urls, index.num_samples)
            print(f"linear probe on frozen features: {100 * probe(model[0].eval(), urls, index.num_samples):.1f}% "
                  f"(randomly initialised encoder: {100 * baseline:.1f}%)")


if __name__ == "__main__":
    main()
