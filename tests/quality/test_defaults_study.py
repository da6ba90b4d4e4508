"""The defaults study's parts: the generated tasks, worst-case regret and the leave-one-task-out
choice on records whose answer is known, the keep-spread measure and the relative memory term."""
import math

import numpy as np
import pytest
import torch

from emp_data_quality import regret
from emp_data_quality.harness import keep_spread
from emp_data_quality.signals import ForgettingEvents, RelativeMemory, batch_ranks, make_signal
from emp_data_quality.tasks import STUDY_TASKS, load_study_task, make_model


def records(table):
    """{(task, noise, ratio, arm): [accuracy per seed]} -> run records."""
    return [{"task": t, "noise": z, "ratio": r, "arm": a, "seed": s, "accuracy": acc}
            for (t, z, r, a), accs in table.items() for s, acc in enumerate(accs)]


def test_cell_stats_give_mean_std_and_a_t_interval_and_file_full_under_every_ratio():
    recs = records({("t", 0.0, 0.5, "random"): [0.80, 0.82, 0.84], ("t", 0.0, 0.7, "random"): [0.7, 0.7, 0.7],
                    ("t", 0.0, 0.0, "full"): [0.9, 0.9, 0.9]})
    stats = regret.cell_stats(recs)
    cell = stats[("t", 0.0, 0.5, "random")]
    assert cell["mean"] == pytest.approx(82.0) and cell["std"] == pytest.approx(2.0)
    assert cell["ci"] == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert ("t", 0.0, 0.5, "full") in stats and ("t", 0.0, 0.7, "full") in stats


def test_regret_is_against_the_best_cheap_baseline_of_the_cell():
    recs = records({("t", 0.0, 0.7, "random"): [0.80], ("t", 0.0, 0.7, "sweep"): [0.85],
                    ("t", 0.0, 0.7, "full-short"): [0.75], ("t", 0.0, 0.7, "full"): [0.99],
                    ("t", 0.0, 0.7, "cand"): [0.83]})
    stats = regret.cell_stats(recs)
    assert regret.best_cheap(stats, ("t", 0.0, 0.7)) == ("sweep", pytest.approx(85.0))
    assert regret.regret(stats, "cand", ("t", 0.0, 0.7)) == pytest.approx(2.0)    # full is not cheap


def test_leave_one_task_out_chooses_without_the_held_out_task():
    # "sharp" is best on a and b but fails on c; "steady" loses a little everywhere.
    table = {}
    for task, sharp in (("a", 0.90), ("b", 0.90), ("c", 0.60)):
        table[(task, 0.0, 0.7, "random")] = [0.85, 0.85]
        table[(task, 0.0, 0.7, "sharp")] = [sharp, sharp]
        table[(task, 0.0, 0.7, "steady")] = [0.84, 0.84]
    stats = regret.cell_stats(records(table))
    assert regret.choose(stats, ["sharp", "steady"], ["a", "b", "c"]) == "steady"
    folds = {f["held_out"]: f for f in regret.leave_one_task_out(stats, ["sharp", "steady"])}
    assert folds["c"]["chosen"] == "sharp" and folds["c"]["worst_regret"] == pytest.approx(25.0)
    assert folds["a"]["chosen"] == "steady" and folds["a"]["worst_regret"] == pytest.approx(1.0)


def test_collapses_and_targets():
    table = {("t", 0.0, 0.7, "random"): [0.80, 0.81, 0.79, 0.80], ("t", 0.0, 0.7, "cand"): [0.80, 0.81, 0.60, 0.80],
             ("t", 0.0, 0.7, "sweep"): [0.70] * 4, ("t", 0.0, 0.7, "full-short"): [0.75] * 4}
    stats = regret.cell_stats(records(table))
    collapsed = regret.collapses(stats, "cand")
    assert [(c[1], round(c[2])) for c in collapsed] == [(2, 60)]
    t = regret.targets(stats, "cand")
    assert t["worst_below_random"] == pytest.approx(80.0 - 75.25)
    assert t["clean_0.7_wins"] == 1 and t["clean_0.7_margin"]["t"] == pytest.approx(75.25 - 75.0)


@pytest.mark.parametrize("name", ["tabular", "text-bow", "digits-cnn"])
def test_study_tasks_are_generated_deterministically_with_the_asked_noise(name):
    a = load_study_task(name, noise=0.4, size=3000)
    b = load_study_task(name, noise=0.4, size=3000)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.x.dtype == np.float32 and len(a.x) == len(a.y) and len(a.x_test) == len(a.y_test)
    share = a.flipped.mean()
    assert abs(share - 0.4) < 4 * math.sqrt(0.4 * 0.6 / len(a.y))      # binomial: 4 standard deviations
    clean = load_study_task(name, noise=0.0, size=3000)
    assert clean.flipped is None and np.array_equal(clean.y_test, a.y_test)
    assert (a.y[a.flipped] != clean.y[a.flipped]).all() and (a.y[~a.flipped] == clean.y[~a.flipped]).all()
    model = make_model(a.model, a.x.shape[1], a.classes)
    assert model(torch.from_numpy(a.x[:4])).shape == (4, a.classes)


def test_the_study_names_five_task_model_pairs():
    assert len(STUDY_TASKS) == 5 and len({load_study_task(t, size=2000).model for t in STUDY_TASKS}) >= 4


def test_keep_spread_sees_a_selection_that_depends_on_when_samples_were_read():
    order = np.random.default_rng(0).permutation(10_000)
    by_time = np.zeros(10_000, bool)
    by_time[order[:3000]] = True                                # the early-read samples kept
    assert keep_spread(order, by_time) == pytest.approx(1.0)
    uniform = np.random.default_rng(1).random(10_000) < 0.3
    # a kept share per part of 1000: binomial sd sqrt(.3 * .7 / 1000) ~ 0.0145; 10 parts span < 6 sd
    assert keep_spread(order, uniform) < 6 * math.sqrt(0.3 * 0.7 / 1000)


def test_relative_memory_divides_by_the_mean_recorded_before_the_batch():
    rel = RelativeMemory(decay=0.5)
    first = rel(torch.tensor([1.0, 3.0]))                        # no history: its own mean, 2
    assert torch.allclose(first, torch.tensor([0.5, 1.5]))
    second = rel(torch.tensor([4.0, 4.0]))                       # the mean before it: 2; then 0.5*2 + 0.5*4 = 3
    assert torch.allclose(second, torch.tensor([2.0, 2.0])) and rel.mean == pytest.approx(3.0)


def test_forgetting_events_count_correct_to_wrong_transitions_and_never_learned_samples():
    events = ForgettingEvents(3)
    assert events(np.array([0, 1, 2]), np.array([True, False, True])).tolist() == [0, 1, 0]
    assert events(np.array([0, 1, 2]), np.array([False, False, True])).tolist() == [1, 1, 0]
    assert events(np.array([0, 1]), np.array([True, True])).tolist() == [1, 0]     # learned at last
    assert events(np.array([0]), np.array([False])).tolist() == [2]


def test_rank_mix_is_the_mean_rank_of_loss_and_entropy_within_the_batch():
    assert batch_ranks(torch.tensor([0.3, 0.1, 0.2])).tolist() == [3.0, 1.0, 2.0]
    mix = make_signal("rank-mix", 4)
    logits = torch.tensor([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0]])        # entropy: high, low, middle
    loss = torch.tensor([0.1, 0.3, 0.2])
    out = mix(np.arange(3), logits, loss, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(out, torch.tensor([(1 + 3) / 6, (3 + 1) / 6, (2 + 2) / 6]))
    with pytest.raises(ValueError, match="unknown memory_signal"):
        make_signal("loss", 4)


def test_a_worst_case_lead_inside_the_seed_noise_is_a_tie_decided_by_mean_regret():
    # "lucky" has the smaller worst cell by 0.5 points, inside its cells' seed spread of +-4, but
    # loses 2 points everywhere else; "steady" loses 0.5 points in most cells and 2.5 in one.
    table = {}
    spread = [-0.04, 0.0, 0.04, -0.02, 0.02]
    for i, task in enumerate("abcde"):
        table[(task, 0.0, 0.7, "random")] = [0.80 + d for d in spread]
        table[(task, 0.0, 0.7, "lucky")] = [0.78 + d for d in spread]
        table[(task, 0.0, 0.7, "steady")] = [(0.775 if i == 0 else 0.795) + d for d in spread]
    stats = regret.cell_stats(records(table))
    assert regret.worse_share(stats, ["lucky", "steady"], "lucky", "abcde")["steady"] < 0.9
    assert regret.choose(stats, ["lucky", "steady"], "abcde") == "steady"
    # A lead far outside the noise is not a tie: "steady" now loses 10 points in task a.
    for task_seed, acc in enumerate(table[("a", 0.0, 0.7, "steady")]):
        table[("a", 0.0, 0.7, "steady")][task_seed] = acc - 0.075
    stats = regret.cell_stats(records(table))
    assert regret.worse_share(stats, ["lucky", "steady"], "lucky", "abcde")["steady"] > 0.99
    assert regret.choose(stats, ["lucky", "steady"], "abcde") == "lucky"
