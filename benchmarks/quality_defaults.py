"""Defaults that generalise: candidate default rules on five task/model pairs (MNIST-1D with a CNN
and with an MLP, a tabular task, a bag-of-words text task, jittered 8x8 digits with a CNN), label
noise 0/20/40%, prune ratios 0.5/0.7/0.9, 5 seeds, an equal sample budget; the default chosen
leave-one-task-out by its worst-case regret against the best of random, full-short and sweep.

    python benchmarks/quality_defaults.py                   # the whole study (about an hour on 2 cores)
    python benchmarks/quality_defaults.py --report-only     # tables from benchmarks/out/defaults_study.jsonl

Needs the demo extra: pip install "emp_data[demo]".
"""
from emp_data_quality.defaults import main

if __name__ == "__main__":
    main()
