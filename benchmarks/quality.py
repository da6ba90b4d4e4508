"""Training-quality benchmark: accuracy vs pruning ratio per policy, saved sample-passes, and the
times-selected histogram (EMP paper Fig. 1), on MNIST-1D and a generated task.

    python benchmarks/quality.py --quick    # MNIST-1D, 12 epochs, 3 seeds: under 10 min on 2 cores
    python benchmarks/quality.py            # MNIST-1D and synthetic, 30 epochs, 3 seeds

Needs the demo extra: pip install "emp_data[demo]" (mnist1d, scikit-learn, matplotlib).
The implementation lives in emp_data/quality.py so that `emp-data demo` can run it too.
"""
from emp_data.quality import main

if __name__ == "__main__":
    main()
