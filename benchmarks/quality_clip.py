"""Image-text (CLIP-style) quality benchmark: MNIST-1D signals paired with generated captions,
20% of them mismatched; image-to-text recall@1 and zero-shot accuracy of every arm at an equal
sample budget (full, full-short, random, sweep, InfoBatch, EMP with beta chosen on validation).

    python benchmarks/quality_clip.py --quick   # 15 epochs, beta swept at r = 0.9 only
    python benchmarks/quality_clip.py           # 30 epochs, 3 seeds, r = 0.5 0.7 0.9

Needs the demo extra: pip install "emp_data[demo]".
"""
from emp_data_quality.clip import main

if __name__ == "__main__":
    main()
