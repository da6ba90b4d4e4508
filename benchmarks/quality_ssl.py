"""Self-supervised quality benchmark: SimCLR pretraining on MNIST-1D under every arm at an equal
sample budget, scored by linear-probe accuracy on the frozen encoder.

    python benchmarks/quality_ssl.py --quick    # 15 epochs, fewer arms
    python benchmarks/quality_ssl.py            # 30 epochs, every arm, 3 seeds

Needs the demo extra: pip install "emp_data[demo]".
"""
from emp_data_quality.ssl import main

if __name__ == "__main__":
    main()
