"""The `emp-data` command.

    emp-data demo                 quick quality benchmark on MNIST-1D (README: "Set-up: two commands")
    emp-data inspect FILE         summary of a store, a Pruner checkpoint or a ShardedPruner manifest
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _demo(args) -> int:
    try:
        import matplotlib  # noqa: F401
        import mnist1d  # noqa: F401
    except ImportError as exc:
        print(f"emp-data demo needs the demo extra ({exc.name} is missing): pip install 'emp_data[demo]'",
              file=sys.stderr)
        return 2
    from emp_data_quality import arms
    from emp_data_quality.supervised import benchmark

    benchmark("mnist1d", epochs=args.epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers,
              out_dir=args.out, arm_labels=list(arms.QUICK), sweep_ratios=(max(args.ratios),), suffix="_quick")
    return 0


def _inspect(args) -> int:
    from .store.host import ScoreStore

    try:
        stores, meta = [ScoreStore.open(args.path, readonly=True)], None
    except (ValueError, OSError) as exc:    # an index, a key table, a missing path: one clear line
        try:
            stores, meta = _open_sharded(args.path)
        except (ValueError, OSError):
            print(f"emp-data inspect: cannot read '{args.path}' as a score store: {exc}", file=sys.stderr)
            return 2
    _summarise(args.path, stores, meta)
    return 0


def _open_sharded(path):
    """The parts of a ShardedPruner checkpoint (its manifest at `path`) and the pruner state."""
    from .pruner.checkpoint import read_manifest as _read_manifest
    from .store.host import ScoreStore

    manifest = _read_manifest(path)
    folder = os.path.dirname(path)
    stores = [ScoreStore.open(os.path.join(folder, name), readonly=True) for name in manifest["parts"]]
    print(f"{path}: ShardedPruner checkpoint saved by {manifest['world']} ranks, {len(stores)} parts")
    return stores, json.loads(stores[0].metadata.decode())


def _summarise(path, stores, meta) -> None:
    """What a store (or a sharded checkpoint's parts, together) holds."""
    import numpy as np

    n = sum(s.num_samples for s in stores)
    loss = np.concatenate([s.loss for s in stores])
    seen = ~np.isnan(loss)
    kept = sum(int(s.keep.sum()) for s in stores)
    print(f"{path}: {n} samples, {sum(s.nbytes for s in stores)} bytes of state, {int(seen.sum())} seen, "
          f"{kept} kept in the stored epoch")
    try:
        epochs = {s.epoch_stamp(timeout=1.0) for s in stores}
        epoch = epochs.pop() if len(epochs) == 1 else f"parts differ: {sorted(epochs, key=str)}"
        print("stored epoch:", "none selected" if epoch is None else epoch)
    except ValueError as exc:               # a select in another process has not finished
        print("stored epoch: unknown,", exc)
    if seen.any():
        values = loss[seen]
        print(f"loss: mean {values.mean():.4f} std {values.std():.4f} min {values.min():.4f} max {values.max():.4f}")
    hist = np.bincount(np.concatenate([s.times_selected for s in stores]))
    print("times selected histogram:", hist.tolist() if len(hist) <= 40 else f"{len(hist)} bins")
    if meta is None and stores[0].metadata:
        try:
            meta = json.loads(stores[0].metadata.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            print(f"metadata: {len(stores[0].metadata)} bytes")
    if meta is None:
        return
    print("pruner:", {k: meta[k] for k in ("policy", "policy_options", "prune_ratio", "epochs", "seed", "epoch")
                      if k in meta})
    per_epoch = {int(e): int(k) for e, k in meta.get("global_kept", meta.get("kept", {})).items()}
    if per_epoch:
        n_all = meta.get("num_samples", n)
        print("kept per epoch:", ", ".join(f"epoch {e}: {k} ({k / n_all:.1%})" for e, k in sorted(per_epoch.items())))
        print(f"effective prune ratio: {1 - sum(per_epoch.values()) / (n_all * len(per_epoch)):.3f} "
              f"(nominal {meta.get('prune_ratio')})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="emp-data", description="emp_data: dynamic data pruning")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="quick quality benchmark on MNIST-1D: accuracy per rule and ratio at an "
                                       "equal budget, against full data for fewer epochs and RS2 sweeps")
    demo.add_argument("--epochs", type=int, default=15, help="training epochs per run (default 15)")
    demo.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    demo.add_argument("--ratios", type=float, nargs="*", default=[0.5, 0.7, 0.9],
                      help="pruning ratios to run (default 0.5 0.7 0.9)")
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    demo.add_argument("--out", default=".", help="folder for the plot (quality_mnist1d_quick.png)")
    demo.set_defaults(run=_demo)
    inspect = sub.add_parser("inspect", help="summarise a store file, a Pruner checkpoint or a ShardedPruner one")
    inspect.add_argument("path", help="a store file (Pruner(store_path=...)), a Pruner.save checkpoint, or the "
                                      "manifest a ShardedPruner.save wrote")
    inspect.set_defaults(run=_inspect)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
