"""The examples run end to end as a user runs them (small sizes, DataLoader workers included)."""
import importlib
import os
import sys

import pytest

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples"))


def load(name):
    """Imports examples/<name>.py by its name, so that DataLoader workers started by spawn (`make
    sanitize`) can import the functions it hands them."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


@pytest.mark.parametrize("mode", [[], ["--ssl"]], ids=["supervised", "ssl"])
def test_pretrain_example_runs_end_to_end(tmp_path, capsys, mode):
    load("pretrain_webdataset").main(["--samples", "1200", "--per-shard", "400", "--epochs", "2", "--workers", "2",
                                      "--dir", str(tmp_path)] + mode)
    out = capsys.readouterr().out
    assert "3 shards, 1200 samples" in out and "epoch 1: kept" in out and "effective pruning" in out
    assert ("linear probe on frozen features" in out) == bool(mode)


def test_clip_example_trains_both_encoders_through_the_pruned_stream(tmp_path, capsys):
    pytest.importorskip("mnist1d")
    load("pretrain_clip_webdataset").main(["--samples", "1200", "--per-shard", "400", "--epochs", "2",
                                           "--workers", "2", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "3 shards, 1200 pairs" in out and "epoch 0: kept 0.30" in out and "epoch 1: kept 0.30" in out
    assert "samples/s" in out and "of trained passes on mismatched pairs" in out and "zero-shot accuracy" in out
    assert len([f for f in os.listdir(tmp_path) if f.startswith("pairs-")]) == 3
