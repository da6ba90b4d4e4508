"""The `emp-data` command.

    emp-data demo                 quick quality benchmark on MNIST-1D (README: "Set-up: two commands")
    emp-data inspect FILE         summary of a store / Pruner checkpoint file
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
    from .demo import arms
    from .demo.supervised import benchmark

    benchmark("mnist1d", epochs=args.epochs, seeds=args.seeds, ratios=args.ratios, workers=args.workers,
              out_dir=args.out, arm_labels=list(arms.QUICK), sweep_ratios=(max(args.ratios),), suffix="_quick")
    return 0


def _inspect(args) -> int:
    import numpy as np

    from .store import ScoreStore

    try:
        store = ScoreStore.open(args.path, readonly=True)
    except (ValueError, OSError) as exc:    # an index, a key table, a missing path: one clear line
        print(f"emp-data inspect: cannot read '{args.path}' as a score store: {exc}", file=sys.stderr)
        return 2
    seen = ~np.isnan(store.loss)
    print(f"{args.path}: {store.num_samples} samples, {store.nbytes} bytes of state, "
          f"{int(seen.sum())} seen, {int(store.keep.sum())} kept in the stored epoch")
    try:
        epoch = store.epoch_stamp(timeout=1.0)
        print("stored epoch:", "none selected" if epoch is None else epoch)
    except ValueError as exc:               # a select in another process has not finished
        print("stored epoch: unknown,", exc)
    if seen.any():
        loss = store.loss[seen]
        print(f"loss: mean {loss.mean():.4f} std {loss.std():.4f} min {loss.min():.4f} max {loss.max():.4f}")
    hist = np.bincount(store.times_selected)
    print("times selected histogram:", hist.tolist() if len(hist) <= 40 else f"{len(hist)} bins")
    if store.metadata:
        try:
            meta = json.loads(store.metadata.decode())
            print("pruner:", {k: meta[k] for k in ("policy", "policy_options", "prune_ratio", "epochs", "seed", "epoch")
                              if k in meta})
            kept = {int(e): int(k) for e, k in meta.get("kept", {}).items()}
            if kept:
                n = store.num_samples
                print("kept per epoch:", ", ".join(f"epoch {e}: {k} ({k / n:.1%})" for e, k in sorted(kept.items())))
                print(f"effective prune ratio: {1 - sum(kept.values()) / (n * len(kept)):.3f} "
                      f"(nominal {meta.get('prune_ratio')})")
        except (UnicodeDecodeError, json.JSONDecodeError):
            print(f"metadata: {len(store.metadata)} bytes")
    return 0


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
    inspect = sub.add_parser("inspect", help="summarise a store file or Pruner checkpoint")
    inspect.add_argument("path", help="a store file (Pruner(store_path=...)) or a Pruner.save checkpoint")
    inspect.set_defaults(run=_inspect)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
