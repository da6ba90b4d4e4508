"""Self-supervised quality benchmark: SimCLR pretraining of a 1-D CNN on MNIST-1D (shift / scale /
noise views) under full, random, infobatch and emp pruning; linear-probe accuracy on frozen
features, sample-passes saved, and the times-selected histogram.

    python benchmarks/quality_ssl.py --quick    # 15 epochs, 3 seeds, beta swept at r=0.9: under 10 min on 2 cores
    python benchmarks/quality_ssl.py            # 30 epochs, 3 seeds, beta swept at r=0.7 and 0.9

Needs the demo extra: pip install "emp_data[demo]" (mnist1d, matplotlib).
The implementation lives in emp_data/quality_ssl.py.
"""
from emp_data.quality_ssl import main

if __name__ == "__main__":
    main()
