"""The quality harness (emp_data/demo) on a tiny task: runs learn, count their sample passes and
budgets, tune on the validation split only, and report tables and plots; `emp-data inspect`."""
import math

import numpy as np
import pytest

from emp_data import Pruner, cli
from emp_data_quality import arms
from emp_data_quality.harness import Progress, budget_epochs, make_config, run_all, tune
from emp_data_quality.report import best_rows, format_table, summarise
from emp_data_quality.supervised import train_once
from emp_data_quality.tasks import Task, flip_labels


def tiny_task(flip=0.0):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    flipped = None
    y_train = y[:480]
    if flip:
        y_train, flipped = flip_labels(y_train, 4, flip, seed=1)
    return Task("tiny", x[:480], y_train, x[480:], y[480:], 4, "mlp", flipped)


ARM = {a.label: a for a in arms.SUPERVISED}


@pytest.mark.parametrize("label", ["full", "infobatch", "emp", "ucb", "seta", "sweep", "full-short"])
def test_train_once_learns_and_counts_sample_passes(label):
    task = tiny_task()
    cfg = make_config(ARM[label], 0.7, 0, 6, tuned={"beta": 1.0} if ARM[label].tune == "beta" else None,
                      batch_size=32)
    res = train_once(cfg, task)
    assert res.full_passes == 480 * 6
    assert res.sample_passes == res.times_selected.sum()
    if label == "full":
        assert res.sample_passes == res.full_passes
    else:
        assert res.sample_passes < res.full_passes
    assert res.accuracy > 0.6    # 4 linearly separable classes; chance is 0.25


def test_every_pruned_arm_runs_at_the_same_budget_and_full_short_matches_it():
    task = tiny_task()
    n, epochs, r = 480, 8, 0.7
    k = round((1 - r) * n)
    pruned = sum(1 for e in range(epochs) if e < 0.875 * epochs)
    budget = pruned * k + (epochs - pruned) * n      # exact k per pruned epoch, n per annealing epoch
    for label in ("random", "sweep", "infobatch", "emp", "epsilon_greedy", "ucb", "emp+gap"):
        tuned = {"beta": 2.0, "gap": 1} if label == "emp+gap" else ({"beta": 2.0} if label == "emp" else None)
        res = train_once(make_config(ARM[label], r, 0, epochs, tuned=tuned, batch_size=64), task)
        assert res.sample_passes == budget, label
    # SeTa's partial annealing trains its annealing epochs on a uniform k too.
    assert train_once(make_config(ARM["seta"], r, 0, epochs, batch_size=64), task).sample_passes == epochs * k
    short = make_config(ARM["full-short"], r, 0, epochs)
    assert short.epochs == budget_epochs(epochs, r) == math.floor(budget / n + 0.5)
    assert train_once(short, task).sample_passes == short.epochs * n


def test_noisy_passes_count_the_flipped_labels_trained():
    task = tiny_task(flip=0.2)
    assert 0.1 < task.flipped.mean() < 0.3 and (task.y[task.flipped] != tiny_task().y[task.flipped]).all()
    res = train_once(make_config(ARM["full"], 0.0, 0, 2), task)
    assert res.noisy_passes == 2 * task.flipped.sum()


def test_tuning_uses_the_validation_split_and_emp_gap_takes_emps_beta():
    task = tiny_task()
    calls = []

    def fake(cfg):
        calls.append(cfg)
        # A score that prefers beta = 8 and gap factor 2, to check the choice is read back right.
        target = {"beta": 8.0, "gap": 2}
        acc = 0.5 - sum(abs(math.log1p(abs(cfg.tuned.get(k, 0))) - math.log1p(v)) for k, v in target.items()
                        if k in cfg.tuned) * 0.01
        from emp_data_quality.harness import RunResult
        return RunResult(cfg, acc, 1, 1, 0.0)

    chosen = tune(task, [ARM["emp"], ARM["emp+gap"]], {}, epochs=3, ratios=(0.7, 0.9), workers=1, fn=fake,
                  label="tiny", log=lambda *_: None)
    assert chosen == {"emp": {"beta": 8.0}, "emp+gap": {"beta": 8.0, "gap": 2}}
    assert calls and all(c.validation for c in calls)
    assert {c.options.get("max_gap") for c in calls if c.arm == "emp+gap"} == {
        arms.max_gap(f, r) for f in arms.GAP_FACTORS for r in (0.7, 0.9)}
    mem_only = make_config(ARM["emp"], 0.7, 0, 3, tuned={"beta": arms.MEMORY_ONLY})
    assert mem_only.options == {"exact_budget": True, "beta": 1.0, "loss_weight": 0.0}
    neg = make_config(ARM["emp-mi"], 0.7, 0, 3, tuned={"beta": -arms.MEMORY_ONLY})
    assert neg.options == {"exact_budget": True, "memory": "mi", "beta": -1.0, "loss_weight": 0.0}
    paper = make_config(ARM["emp"], 0.7, 0, 3, tuned={"beta": 8.0})       # the paper's form: loss + beta * memory
    assert paper.options == {"exact_budget": True, "beta": 8.0, "loss_weight": 1.0}
    assert make_config(ARM["emp-default"], 0.7, 0, 3).options == {"exact_budget": True}


def test_validation_split_is_the_tail_of_the_training_set_and_never_the_test_set():
    task = tiny_task(flip=0.2)
    x, y, xe, ye, flipped = task.split(validation=True)
    assert len(x) == 408 and np.array_equal(xe, task.x[408:]) and np.array_equal(ye, task.y[408:])
    assert len(flipped) == 408


def test_summary_table_reports_mean_std_saved_and_the_best_rows():
    task = tiny_task(flip=0.2)
    results = run_all(task, [make_config(ARM[label], 0.5, s, 3, batch_size=64) for label in ("full", "random", "sweep")
                             for s in (0, 1)], 1, train_once, "tiny")
    summary = summarise(results)
    s = summary[("random", 0.5)]
    assert s["n"] == 2 and s["std"] >= 0 and s["saved"] == 0.5 and 0.0 < s["noisy"] < 0.4   # 3 epochs: all pruned
    table = format_table("tiny", summary, [0.5], [ARM["full"], ARM["random"], ARM["sweep"]], {}, noisy="flipped")
    assert "| full |" in table and "| random |" in table and "% saved" in table and "% flipped" in table
    assert best_rows(summary, [0.5], [ARM["full"], ARM["random"], ARM["sweep"]])[0].startswith("r = 0.5: best ")


def test_progress_prints_done_total_elapsed_and_eta():
    import io

    out = io.StringIO()
    p = Progress("x", 20, stream=out)
    for _ in range(20):
        p.tick()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11 and lines[-1].startswith("[x] 20/20 runs,") and "ETA" in lines[-1]


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


@pytest.mark.parametrize("label", ["full", "emp", "emp-mi"])
def test_ssl_pretrain_once_records_contrastive_scores(label):
    from emp_data_quality.ssl import ARMS, TRAINING, pretrain_once

    arm = {a.label: a for a in ARMS}[label]
    task = tiny_task()
    cfg = make_config(arm, 0.7, 0, 3, tuned={"beta": 2.0} if arm.tune else None, **dict(TRAINING, batch_size=64))
    res = pretrain_once(cfg, task)
    assert res.full_passes == 480 * 3
    assert res.sample_passes == res.times_selected.sum()
    assert (res.sample_passes < res.full_passes) == (label != "full")
    assert res.accuracy > 0.4    # linear probe on 4 classes; chance is 0.25


def test_untrained_probe_is_a_floor_below_pretraining_runs():
    from emp_data_quality.ssl import untrained_probe

    accuracies = untrained_probe(tiny_task(), seeds=2)
    assert len(accuracies) == 2 and all(0.25 < a <= 1.0 for a in accuracies)


def test_the_plot_and_the_saved_results_are_written(tmp_path):
    import pickle

    from emp_data_quality.report import plot, save_results

    task = tiny_task()
    chosen = [ARM[label] for label in ("full", "full-short", "random", "emp-default")]
    results = run_all(task, [make_config(a, r, 0, 2, batch_size=64) for a in chosen for r in ([0.0] if a.label == "full"
                                                                                              else (0.5, 0.9))],
                      1, train_once, "tiny")
    plot(str(tmp_path / "q.png"), "tiny", summarise(results), [0.5, 0.9], results, chosen, {})
    save_results(str(tmp_path / "q.pkl"), results, {})
    assert (tmp_path / "q.png").stat().st_size > 10_000
    saved = pickle.loads((tmp_path / "q.pkl").read_bytes())
    assert len(saved["results"]) == len(results) and saved["results"][0].accuracy == results[0].accuracy
