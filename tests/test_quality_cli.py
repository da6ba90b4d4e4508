import numpy as np
import pytest

from emp_data import Pruner, cli
from emp_data.quality import RunConfig, Task, format_table, summarise, train_once


def tiny_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    return Task("tiny", x[:480], y[:480], x[480:], y[480:], 4, "mlp")


@pytest.mark.parametrize("policy", ["full", "infobatch", "emp", "ucb"])
def test_train_once_learns_and_counts_sample_passes(policy):
    task = tiny_task()
    res = train_once(RunConfig(policy, 0.7, seed=0, epochs=6, batch_size=32), task)
    assert res.full_passes == 480 * 6
    assert res.sample_passes == res.times_selected.sum()
    if policy == "full":
        assert res.sample_passes == res.full_passes
    else:
        assert res.sample_passes < res.full_passes
    assert res.accuracy > 0.6    # 4 linearly separable classes; chance is 0.25


def test_summary_table_reports_mean_std_and_saved():
    task = tiny_task()
    results = [train_once(RunConfig(p, 0.5, seed=s, epochs=3, batch_size=64), task)
               for p in ("full", "random") for s in (0, 1)]
    summary = summarise(results)
    mean, std, saved, n = summary[("random", 0.5)]
    assert n == 2 and 0 <= std and saved == pytest.approx(1 - sum(r.sample_passes for r in results[2:]) / (2 * 480 * 3))
    table = format_table("tiny", summary, [0.5], beta=1.0)
    assert "| full |" in table and "| random |" in table and "% saved" in table


def test_inspect_command_prints_a_summary(tmp_path, capsys):
    pruner = Pruner(100, policy="emp", prune_ratio=0.5)
    pruner.store.update(np.arange(50), np.ones(50, np.float32), np.zeros(50, np.float32))
    pruner.select(0)
    pruner.save(tmp_path / "ckpt.emp")
    assert cli.main(["inspect", str(tmp_path / "ckpt.emp")]) == 0
    out = capsys.readouterr().out
    assert "100 samples" in out and "50 seen" in out and "'policy': 'emp'" in out
    assert "stored epoch: 0" in out and "kept per epoch: epoch 0:" in out and "effective prune ratio:" in out
    # Not a store (an index, a key table, a missing path): one clear line on stderr, exit 2.
    from emp_data.webdataset import KeyTable

    (tmp_path / "junk").write_bytes(b"\0" * 5000)
    KeyTable(10, tmp_path / "t.keys")
    for path, why in (("junk", "not an emp_data store file"), ("t.keys", "not an emp_data store file"),
                      ("missing.emp", "No such file")):
        assert cli.main(["inspect", str(tmp_path / path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and "cannot read" in err


@pytest.mark.parametrize("policy", ["full", "emp"])
def test_ssl_pretrain_once_records_contrastive_scores(policy):
    from emp_data.quality_ssl import SSLConfig, pretrain_once

    task = tiny_task()
    res = pretrain_once(SSLConfig(policy, 0.7, seed=0, epochs=3, batch_size=64), task)
    assert res.full_passes == 480 * 3
    assert res.sample_passes == res.times_selected.sum()
    assert (res.sample_passes < res.full_passes) == (policy != "full")
    assert res.accuracy > 0.4    # linear probe on 4 classes; chance is 0.25


def test_ssl_report_writes_table_and_plot(tmp_path):
    from emp_data.quality import report
    from emp_data.quality_ssl import POLICIES, SSLConfig, pretrain_once

    task = tiny_task()
    results = [pretrain_once(SSLConfig(p, 0.5, seed=0, epochs=2, batch_size=64), task) for p in POLICIES]
    lines = []
    table = report(results, "tiny ssl", "tiny", [0.5], 1.0, str(tmp_path / "q.png"), lines.append, 0.0,
                   policies=POLICIES, metric="linear-probe test accuracy")
    assert (tmp_path / "q.png").stat().st_size > 0 and lines[0] == table
    assert "linear-probe test accuracy" in table and "| emp (beta=1) |" in table and "| infobatch |" in table


def test_untrained_probe_is_a_floor_below_pretraining_runs():
    from emp_data.quality_ssl import untrained_probe

    accuracies = untrained_probe(tiny_task(), seeds=2)
    assert len(accuracies) == 2 and all(0.25 < a <= 1.0 for a in accuracies)
