"""The quality benchmarks behind `emp-data demo` and `benchmarks/quality*.py`: small models trained
on data a package generates (no downloads), under every pruning policy at an equal sample budget,
against the cheap ways to spend the same compute (fewer full epochs, RS2 sweeps).

  tasks       data sets (MNIST-1D, with flipped labels, sklearn's make_classification) and models
  arms        the rows of a table: a policy with its options, or full data for fewer epochs
  harness     the training loop every run shares, parallel runs with progress, validation tuning
  report      tables, the accuracy-vs-passes frontier plot and times-selected histograms
  supervised  classification (`benchmarks/quality.py`, `emp-data demo`)
  ssl         SimCLR pretraining with a linear probe (`benchmarks/quality_ssl.py`)
"""
