"""Training-quality benchmark: every pruning rule at an equal sample budget against full data,
full data for fewer epochs (full-short) and RS2 sweeps, on MNIST-1D, MNIST-1D with 20% flipped
labels and a generated task; accuracy vs sample passes and the times-selected histogram.

    python benchmarks/quality.py --quick    # MNIST-1D, 15 epochs, 3 seeds: a few minutes on 2 cores
    python benchmarks/quality.py            # all three tasks, 30 epochs, 3 seeds, every arm

Needs the demo extra: pip install "emp_data[demo]" (mnist1d, scikit-learn, matplotlib).
The harness lives in benchmarks/quality/ (installed as `emp_data_quality`) so that `emp-data demo` can run it too.
"""
from emp_data_quality.supervised import main

if __name__ == "__main__":
    main()
