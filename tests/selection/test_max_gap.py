"""max_gap: a sample not kept in the last m pruned epochs is forced in, inside the budget, at
weight 1; the rest of the rule runs on the other samples and keeps its promises (exact budgets,
unbiased weights)."""
import numpy as np
import pytest

from emp_data import Pruner

N = 6000
RULES = [
    ("infobatch", {}), ("infobatch", {"exact_budget": True}), ("emp", {"beta": 0.5}),
    ("emp", {"mode": "topk"}), ("emp", {"exact_budget": True, "loss_weight": 0.0}), ("ucb", {}),
    ("epsilon_greedy", {"epsilon": 0.2}), ("weighted", {}), ("random", {}), ("seta", {"exact_budget": True}),
    ("seta", {}),
]
EXACT = {"infobatch": False, "emp": False, "ucb": True, "epsilon_greedy": True, "weighted": True, "random": True,
         "seta": False}


def trained(policy, options, gap, ratio=0.7, epochs=12, seed=0):
    """Runs `epochs` pruned epochs with losses that favour a fixed hard tenth of the samples, so a
    loss rule without max_gap would leave others untrained for long; yields (epoch, idle before
    the select, ids, weights, pruner)."""
    rng = np.random.default_rng(seed)
    hard = rng.random(N) < 0.1
    pruner = Pruner(N, policy=policy, prune_ratio=ratio, seed=seed, max_gap=gap, **options)
    for epoch in range(epochs):
        idle = pruner.store.idle.astype(np.int64).copy()
        ids, weights = pruner.select(epoch)
        yield epoch, idle, ids, weights, pruner
        loss = np.where(hard[ids], 3.0, 0.2).astype(np.float32) * rng.uniform(0.8, 1.2, len(ids)).astype(np.float32)
        pruner.store.update(ids, loss, rng.random(len(ids)).astype(np.float32))


@pytest.mark.parametrize("policy,options", RULES)
def test_every_sample_idle_for_max_gap_epochs_is_forced_in_at_weight_one(policy, options):
    gap, ratio = 5, 0.7
    k = round((1 - ratio) * N)
    forced_total = 0
    for epoch, idle, ids, weights, pruner in trained(policy, options, gap, ratio):
        due = np.flatnonzero(idle >= gap)
        stats = pruner.stats()
        assert stats["forced"] == min(len(due), k), (policy, epoch)
        if len(due) <= k:
            assert np.isin(due, ids).all(), (policy, epoch)
            assert (weights[np.isin(ids, due)] == 1.0).all()
        if options.get("exact_budget") or EXACT[policy]:
            assert len(ids) == k, (policy, epoch)
        forced_total += stats["forced"]
    assert forced_total > 0                            # the gap binds in this run
    # No sample waited longer than the gap allows (the budget holds every due sample here).
    assert pruner.store.idle.max() <= gap


def test_forced_samples_beyond_the_budget_are_the_most_idle():
    pruner = Pruner(1000, policy="ucb", prune_ratio=0.9, seed=2, max_gap=1)
    pruner.store.update(np.arange(1000), np.linspace(0, 1, 1000, dtype=np.float32))
    pruner.store.idle[:] = np.arange(1000) % 7 + 1     # every sample due; 100 slots
    ids, weights = pruner.select(0)
    assert len(ids) == 100 and (weights == 1).all() and pruner.stats()["forced"] == 100
    idle_kept = (np.arange(1000) % 7 + 1)[ids]
    # The 100 most idle: 142 samples have idle 7; the kept are drawn from them alone.
    assert (idle_kept == 7).all()


@pytest.mark.parametrize("options,r", [({}, 0.5), ({"exact_budget": True}, 0.3)])
def test_soft_rules_stay_unbiased_with_forced_samples(options, r):
    """With some samples due, E[sum over kept of weight * x] is still sum of x over every sample:
    forced samples are in with probability 1 at weight 1, the others keep the rule's weights (the
    exact budget at r = 0.3 has room for the forced and the above-mean samples, so soft ones are drawn)."""
    n = 4000
    rng = np.random.default_rng(3)
    loss = rng.gamma(2.0, 0.5, n).astype(np.float32)
    x = rng.normal(1.0, 1.0, n)
    full = x.sum()
    estimates = []
    for epoch in range(300):
        pruner = Pruner(n, policy="infobatch", prune_ratio=r, seed=epoch, max_gap=2, **options)
        pruner.store.update(np.arange(n), loss)
        pruner.store.idle[:] = np.where(np.arange(n) % 5 == 0, 2, 0)   # a fifth of them due
        ids, weights = pruner.select(0)
        assert np.isin(np.flatnonzero(np.arange(n) % 5 == 0), ids).all()
        assert not pruner.stats()["budget_exceeded"]
        estimates.append(float((x[ids] * weights).sum()))
    estimates = np.array(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert se > 0 and abs(estimates.mean() - full) < 5 * se


def test_weighted_rule_keeps_horvitz_thompson_weights_for_the_drawn_part():
    n = 3000
    pruner = Pruner(n, policy="weighted", prune_ratio=0.8, seed=1, max_gap=3)
    pruner.store.update(np.arange(n), np.linspace(0.1, 2.0, n, dtype=np.float32))
    pruner.store.idle[:300] = 3
    ids, weights = pruner.select(0)
    forced = ids < 300
    assert forced.sum() == 300 and (weights[forced] == 1).all()
    assert len(ids) == 600
    assert weights[~forced].sum() == pytest.approx(n - 300, rel=1e-5)   # normalised to what they stand for


def test_max_gap_is_validated_and_refused_where_it_means_nothing():
    with pytest.raises(TypeError, match=r"has no option\(s\) \['max_gap'\]"):
        Pruner(10, policy="sweep", max_gap=2)
    with pytest.raises(TypeError, match=r"has no option\(s\) \['max_gap'\]"):
        Pruner(10, policy="full", max_gap=2)
    with pytest.raises(ValueError, match="max_gap must be"):
        Pruner(10, policy="infobatch", max_gap=-1)
    with pytest.raises(ValueError, match="max_gap must be"):
        Pruner(10, policy="infobatch", max_gap=70000)


def test_a_resumed_run_forces_the_same_samples(tmp_path):
    runs = []
    for resume in (False, True):
        out = []
        gen = trained("emp", {"exact_budget": True}, 3, epochs=8, seed=4)
        for epoch, idle, ids, weights, pruner in gen:
            out.append(np.sort(ids))
            if resume and epoch == 3:
                pruner.save(tmp_path / "ckpt.emp")
                restored = Pruner.load(tmp_path / "ckpt.emp")
                assert np.array_equal(restored.store.idle, pruner.store.idle)
        runs.append(out)
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_max_gap_pass_is_one_rs2_pass_at_the_ratio():
    from emp_data.selection.policies import gap_epochs

    assert [gap_epochs("pass", r) for r in (0.0, 0.5, 0.7, 0.75, 0.9, 1 - 1e-9)] == [1, 2, 4, 4, 10, 0xFFFF]
    assert gap_epochs(3, 0.9) == 3
    assert Pruner(10, policy="emp", prune_ratio=0.9, max_gap="pass")._config(0).max_gap == 10
    with pytest.raises(ValueError, match="'pass'"):
        Pruner(10, policy="emp", max_gap="passes")
