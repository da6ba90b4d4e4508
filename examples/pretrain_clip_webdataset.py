"""Image-text (CLIP-style) pretraining over WebDataset shards with EMP pruning, shaped like
open_clip's data path.

    python examples/pretrain_clip_webdataset.py                    # writes shards to a temp dir, trains
    python examples/pretrain_clip_webdataset.py --epochs 10 --prune-ratio 0.9

1. writes (npy "image", txt caption) pairs with wds.ShardWriter: MNIST-1D signals with generated
   captions ("a tall seven on the left"), 20% of them mismatched, as alt-text on the web often is;
2. builds the shard index (pruned pairs are then never read);
3. trains an image encoder and a tokenizer-free text encoder (hashed bag of words) with the CLIP
   loss and a learned temperature through PrunedIterableDataset -> shuffle -> decode -> rename ->
   map_dict(text=tokenize) -> to_tuple -> batched, on a DataLoader with num_workers=2, as open_clip
   does; each batch goes through emp_data.clip_scores and pruner.loss(out.loss, ids,
   memory=out.memory);
4. prints, per epoch, the kept fraction, samples/s and the loss; at the end the share of trained
   passes spent on mismatched pairs, image-to-text recall@1 and zero-shot accuracy on clean pairs.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time

import numpy as np
import torch
import webdataset as wds

from emp_data import Pruner
from emp_data_quality.clip import evaluate, load_pairs, make_image_encoder, make_text_encoder, word_ids
from emp_data import clip_scores
from emp_data.webdataset import PrunedIterableDataset, build_index


def write_shards(folder: str, x: np.ndarray, captions: list, per_shard: int) -> list[str]:
    """One sample per pair, keyed by its position (so index ids are positions): image.npy + caption.txt."""
    pattern = os.path.join(folder, "pairs-%05d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for i, (signal, caption) in enumerate(zip(x, captions)):
            buf = io.BytesIO()
            np.save(buf, signal.astype(np.float32))
            sink.write({"__key__": f"pair{i:08d}", "npy": buf.getvalue(), "txt": caption})
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("pairs-"))


def tokenize(text: str) -> torch.Tensor:
    """Hashed bag of words, padded to 6 ids by repeating the last (a mean over the bag is unchanged)."""
    ids = word_ids(text)[:6]
    return torch.tensor(ids + [ids[-1]] * (6 - len(ids)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=12000)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--prune-ratio", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where to write shards (default: a temp dir)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    task = load_pairs()
    x, captions, mismatched = task.x[:args.samples], task.captions[:args.samples], task.mismatched[:args.samples]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        os.makedirs(folder, exist_ok=True)
        urls = write_shards(folder, x, captions, args.per_shard)
        index = build_index(urls, out=os.path.join(folder, "index.empidx"))
        print(f"{len(urls)} shards, {index.num_samples} pairs ({mismatched.mean():.0%} with a mismatched caption)")

        pruner = Pruner(index.num_samples, policy="emp", prune_ratio=args.prune_ratio, epochs=args.epochs, seed=0,
                        store_path=os.path.join(folder, "scores.emp"), overwrite=True)
        stream = PrunedIterableDataset(urls, pruner, index=os.path.join(folder, "index.empidx"))
        pipeline = wds.DataPipeline(
            stream, wds.shuffle(1000, seed=0), wds.decode(), wds.rename(image="npy", text="txt"),
            wds.map_dict(text=tokenize), wds.to_tuple("__id__", "image", "text"), wds.batched(args.batch_size))
        loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=args.workers)
        image_encoder, text_encoder = make_image_encoder(x.shape[1]), make_text_encoder()
        log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))          # CLIP's learned temperature
        params = list(image_encoder.parameters()) + list(text_encoder.parameters()) + [log_scale]
        opt = torch.optim.Adam(params, lr=2e-3)
        for epoch in range(args.epochs):
            stream.set_epoch(epoch)        # selects the epoch in the pruner; workers read the store
            t0, seen, total = time.perf_counter(), 0, 0.0
            for ids, images, texts in loader:
                if len(ids) < 2:
                    continue               # a contrastive batch needs negatives
                out = clip_scores(image_encoder(torch.as_tensor(images)), text_encoder(texts),
                                  log_scale.clamp(max=math.log(100)).exp())
                loss = pruner.loss(out.loss, ids, memory=out.memory)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(ids)
                total += out.loss.detach().sum().item()
            dt = time.perf_counter() - t0
            stats = pruner.stats()
            print(f"epoch {epoch}: kept {stats['kept_fraction']:.2f} of pairs ({stats['kept']}), "
                  f"{seen / dt:,.0f} samples/s, mean loss {total / max(seen, 1):.3f}")
        times = pruner.store.times_selected.astype(np.int64)      # index ids are the pairs' positions
        stats = pruner.stats()
        print(f"effective pruning {stats['effective_prune_ratio']:.2f} (nominal {args.prune_ratio}); "
              f"{times[mismatched].sum() / times.sum():.0%} of trained passes on mismatched pairs")
        image_encoder.eval()
        text_encoder.eval()
        metrics = evaluate(image_encoder, text_encoder, task.x_test, task.captions_test, task.labels_test)
        print(f"held-out pairs: image-to-text recall@1 {100 * metrics['recall@1']:.1f}%, zero-shot accuracy "
              f"{100 * metrics['zero-shot']:.1f}%")


if __name__ == "__main__":
    main()
