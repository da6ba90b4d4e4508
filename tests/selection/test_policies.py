"""Per-policy statistics, with tolerances derived from the sampling math (fixed seeds)."""
import numpy as np
import pytest

import emp_data
from emp_data import Pruner

N = 20_000
SOFT = {"exact_budget": False, "max_gap": 0}    # emp with InfoBatch's own soft rule (not its defaults)


def scored_pruner(policy, prune_ratio=0.7, seed=0, n=N, memory=True, **options):
    rng = np.random.default_rng(7)
    pruner = Pruner(n, policy=policy, prune_ratio=prune_ratio, seed=seed, **options)
    loss = rng.gamma(2.0, 0.5, n).astype(np.float32)   # right-skewed, like real losses
    mem = rng.uniform(0, 1, n).astype(np.float32) if memory else None
    pruner.store.update(np.arange(n), loss, mem)
    return pruner, loss, mem


@pytest.mark.parametrize("policy", ["infobatch", "emp"])
def test_soft_kept_fraction_within_binomial_bounds(policy):
    r = 0.7
    pruner, loss, mem = (scored_pruner(policy, r, beta=0.5, loss_weight=1.0, **SOFT) if policy == "emp"
                         else scored_pruner(policy, r))
    score = loss + 0.5 * mem if policy == "emp" else loss
    ids, weights = pruner.select(0)
    hard = score >= score.astype(np.float64).mean()
    n_soft = int((~hard).sum())
    expected = hard.sum() + n_soft * (1 - r)
    sd = np.sqrt(n_soft * r * (1 - r))
    assert abs(len(ids) - expected) < 5 * sd
    assert np.isin(np.flatnonzero(hard), ids).all()                      # every hard sample kept
    assert np.unique(weights).tolist() == [1.0, np.float32(1 / (1 - r))]
    assert (weights[np.isin(ids, np.flatnonzero(~hard))] == np.float32(1 / (1 - r))).all()


@pytest.mark.parametrize("policy,options", [("infobatch", {}), ("emp", {"beta": 0.5, **SOFT}),
                                            ("infobatch", {"exact_budget": True})])
def test_soft_weighted_loss_sum_is_unbiased(policy, options):
    r = 0.5
    pruner, loss, _ = scored_pruner(policy, r, n=5000, **options)
    full = float(loss.astype(np.float64).sum())
    estimates = []
    for epoch in range(300):
        ids, weights = pruner.select(epoch)
        estimates.append(float((loss[ids].astype(np.float64) * weights).sum()))
    estimates = np.array(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert se > 0
    assert abs(estimates.mean() - full) < 5 * se
    # one epoch alone is within a few standard errors of the math's variance
    score = pruner.scores()
    soft = score < score.astype(np.float64).mean()
    if not options.get("exact_budget"):
        var = (loss[soft].astype(np.float64) ** 2).sum() * r / (1 - r)
        assert abs(estimates[0] - full) < 5 * np.sqrt(var)
        assert estimates.std() == pytest.approx(np.sqrt(var), rel=0.25)


def test_exact_budget_hits_k_and_reports_overflow():
    pruner, loss, _ = scored_pruner("infobatch", 0.5, exact_budget=True)
    ids, _ = pruner.select(0)
    assert len(ids) == N // 2
    pruner, loss, _ = scored_pruner("infobatch", 0.9, exact_budget=True)  # ~40% above the mean > 10%
    ids, weights = pruner.select(0)
    assert len(ids) == N // 10 and pruner.stats()["budget_exceeded"]
    assert np.array_equal(np.sort(ids), np.sort(np.argsort(-loss, kind="stable")[: N // 10]))


def test_emp_beta_zero_reproduces_infobatch_and_loss_topk():
    a, _, _ = scored_pruner("emp", 0.7, beta=0.0, loss_weight=1.0, **SOFT)
    b, _, _ = scored_pruner("infobatch", 0.7)
    for epoch in range(3):
        ia, wa = a.select(epoch)
        ib, wb = b.select(epoch)
        assert np.array_equal(ia, ib) and np.array_equal(wa, wb)
    topk, loss, _ = scored_pruner("emp", 0.7, beta=0.0, loss_weight=1.0, mode="topk")
    ids, weights = topk.select(0)
    k = round(0.3 * N)
    assert np.array_equal(np.sort(ids), np.sort(np.argsort(-loss, kind="stable")[:k])) and (weights == 1).all()


def test_emp_memory_term_changes_selection():
    pruner, loss, mem = scored_pruner("emp", 0.7, beta=2.0, loss_weight=1.0, mode="topk")
    ids, _ = pruner.select(0)
    k = round(0.3 * N)
    expected = np.argsort(-(loss + np.float32(2.0) * mem), kind="stable")[:k]
    assert len(np.intersect1d(ids, expected)) >= k - 2  # float rounding at the boundary only
    assert len(np.intersect1d(ids, np.argsort(-loss)[:k])) < 0.9 * k
    # The default (loss_weight=0): the memory term alone.
    default, loss, mem = scored_pruner("emp", 0.7, mode="topk")
    assert set(default.select(0)[0].tolist()) == set(np.argsort(-mem, kind="stable")[:k].tolist())


def test_random_keeps_exact_budget_uniformly():
    pruner, _, _ = scored_pruner("random", 0.9, n=1000)
    counts = np.zeros(1000)
    epochs = 2000
    for epoch in range(epochs):
        ids, weights = pruner.select(epoch)
        assert len(ids) == 100 and (weights == 1).all() and len(np.unique(ids)) == 100
        counts[ids] += 1
    p = 0.1
    z = (counts - epochs * p) / np.sqrt(epochs * p * (1 - p))
    assert np.abs(z).max() < 5
    chi2 = (z ** 2).sum()
    assert abs(chi2 - 999) < 5 * np.sqrt(2 * 999)


def test_epsilon_greedy_takes_top_running_mean_plus_uniform_explore():
    eps, r = 0.2, 0.8
    pruner, _, _ = scored_pruner("epsilon_greedy", r, epsilon=eps)
    k = round((1 - r) * N)
    greedy_k = round((1 - eps) * k)
    mean = pruner.store.loss_mean.copy()
    top = np.argsort(-mean, kind="stable")[:greedy_k]
    rest_hits = np.zeros(N)
    epochs = 50
    for epoch in range(epochs):
        ids, w = pruner.select(epoch)
        assert len(ids) == k and (w == 1).all()
        assert np.isin(top, ids).all()
        rest_hits[np.setdiff1d(ids, top)] += 1
    others = np.setdiff1d(np.arange(N), top)
    p = (k - greedy_k) / len(others)
    assert rest_hits[top].sum() == 0
    assert abs(rest_hits[others].mean() - epochs * p) < 5 * np.sqrt(epochs * p * (1 - p) / len(others))


def test_ucb_ranks_by_mean_plus_c_std():
    rng = np.random.default_rng(3)
    pruner = Pruner(5000, policy="ucb", prune_ratio=0.8, c=2.0)
    for _ in range(5):
        pruner.store.update(np.arange(5000), rng.gamma(2.0, 0.5, 5000).astype(np.float32))
    ucb = pruner.store.loss_mean + np.float32(2.0) * np.sqrt(pruner.store.loss_var)
    ids, _ = pruner.select(0)
    expected = np.argsort(-ucb, kind="stable")[:1000]
    assert len(np.intersect1d(ids, expected)) >= 998


def test_weighted_policy_weights():
    pruner, loss, _ = scored_pruner("weighted", 0.7, alpha=1.0)
    ids, weights = pruner.select(0)
    assert len(ids) == round(0.3 * N)
    assert weights.sum() == pytest.approx(N, rel=1e-5)     # normalised (Hajek)
    # higher loss, higher inclusion probability, lower weight
    assert np.corrcoef(loss[ids], weights)[0, 1] < -0.5
    ht, loss, _ = scored_pruner("weighted", 0.7, alpha=1.0, normalize=False)
    est = [float((loss[i] * w).sum()) for i, w in (ht.select(e) for e in range(200))]
    se = np.std(est, ddof=1) / np.sqrt(len(est))
    assert abs(np.mean(est) - loss.astype(np.float64).sum()) < 5 * se


def test_unseen_samples_are_trained_first():
    pruner = Pruner(1000, policy="infobatch", prune_ratio=0.9)
    ids, w = pruner.select(0)
    assert len(ids) == 1000 and (w == 1).all()
    pruner.store.update(np.arange(500), np.ones(500, np.float32))
    ids, _ = pruner.select(1)
    assert np.isin(np.arange(500, 1000), ids).all()
    topk = Pruner(1000, policy="ucb", prune_ratio=0.5)
    topk.store.update(np.arange(600), np.full(600, 9.0, np.float32))
    ids, _ = topk.select(0)
    assert np.isin(np.arange(600, 1000), ids).all()


@pytest.mark.parametrize("policy", ["random", "infobatch", "epsilon_greedy", "ucb", "emp", "weighted", "sweep",
                                    "seta"])
def test_selection_is_pure_and_thread_count_independent(policy):
    from emp_data import _C

    pruner, _, _ = scored_pruner(policy, 0.6, n=300_000)   # several 65536-id blocks
    # A selection runs on one thread or on all, whichever this process measured faster for the rule
    # (AUTO); forced here, both ways and the automatic one must agree.
    def drawn(mode, threads=2):
        _C.set_parallel_mode(mode)
        emp_data.set_num_threads(threads)
        pruner.select(99)           # another epoch first: selecting the current one only rebuilds it
        return pruner.select(4)

    try:
        a = drawn(_C.ParallelMode.THREADED)
        b = drawn(_C.ParallelMode.AUTO)
        c = drawn(_C.ParallelMode.SERIAL)
        d = drawn(_C.ParallelMode.AUTO, threads=1)
        rebuilt = pruner.select(4)
    finally:
        _C.set_parallel_mode(_C.ParallelMode.AUTO)
        emp_data.set_num_threads(2)
    for x in (b, c, d, rebuilt):
        assert np.array_equal(a[0], x[0]) and np.array_equal(a[1], x[1])
    other = pruner.select(5)[0]
    assert not np.array_equal(a[0], other)
    assert not np.array_equal(np.sort(a[0]), a[0])   # shuffled


def test_shuffle_positions_are_uniform():
    # 20k kept ids: the bucketed shuffle path. Normalised positions of fixed ids pooled over
    # epochs must be Uniform(0, 1) (Kolmogorov-Smirnov).
    pruner = Pruner(20_000, policy="full")
    positions = []
    for epoch in range(200):
        ids, _ = pruner.select(epoch)
        where = np.empty(20_000, np.int64)
        where[ids] = np.arange(20_000)
        positions.append(where[::400] / 20_000)
    x = np.sort(np.concatenate(positions))
    ks = np.max(np.abs(np.arange(1, len(x) + 1) / len(x) - x))
    assert ks < 1.95 / np.sqrt(len(x))   # p ~ 0.001


def test_annealing_epochs_are_full():
    pruner, _, _ = scored_pruner("infobatch", 0.7, n=1000)
    pruner.epochs, pruner.anneal = 8, 0.75
    assert [pruner.is_pruned_epoch(e) for e in range(8)] == [True] * 6 + [False] * 2
    assert len(pruner.select(5)[0]) < 1000
    ids, w = pruner.select(6)
    assert len(ids) == 1000 and (w == 1).all()


def test_times_selected_counted_once_per_epoch_and_stats():
    pruner, _, _ = scored_pruner("random", 0.5, n=1000)
    for epoch in range(4):
        pruner.select(epoch)
        pruner.select(epoch)   # re-selecting does not count twice
    stats = pruner.stats()
    assert pruner.store.times_selected.sum() == 4 * 500
    hist = stats["times_selected_histogram"]
    assert hist.sum() == 1000 and (hist * np.arange(len(hist))).sum() == 2000
    assert stats["kept_fraction"] == 0.5 and stats["effective_prune_ratio"] == 0.5
    assert stats["sample_passes_saved"] == 2000


@pytest.mark.parametrize("kwargs,err,match", [
    ({"policy": "nope"}, ValueError, "unknown policy 'nope'"),
    ({"policy": "emp", "gamma": 1}, TypeError, r"has no option\(s\) \['gamma'\]"),
    ({"prune_ratio": 1.0}, ValueError, r"prune_ratio must be in \[0, 1\)"),
    ({"prune_ratio": -0.1}, ValueError, "prune_ratio"),
    ({"policy": "emp", "mode": "hard"}, ValueError, "mode must be 'soft' or 'topk'"),
    ({"policy": "emp", "beta": float("nan")}, ValueError, "beta must be a finite number"),
    ({"policy": "epsilon_greedy", "epsilon": 2}, ValueError, "epsilon must be in"),
    ({"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
])
def test_bad_config(kwargs, err, match):
    with pytest.raises(err, match=match):
        Pruner(10, **kwargs)


@pytest.mark.parametrize("n,ratio", [(1000, 0.75), (1003, 0.7), (5, 0.0)])
def test_sweep_walks_one_permutation_per_pass_in_chunks_of_k(n, ratio):
    """RS2 without replacement: exactly k per epoch, no repeat inside an epoch, every sample once per
    pass of ceil(N/k) epochs (plus the head samples the last chunk tops up with), a new order the
    next pass, and the same selection when an epoch is selected again by a fresh pruner."""
    from emp_data import Pruner

    pruner = Pruner(n, policy="sweep", prune_ratio=ratio, seed=3)
    k = round((1 - ratio) * n)
    per_pass = -(-n // k)
    passes = []
    for p in range(2):
        chunks = [pruner.select(p * per_pass + e)[0] for e in range(per_pass)]
        assert all(len(c) == k and len(np.unique(c)) == k for c in chunks)
        seen = np.concatenate(chunks)
        assert set(seen.tolist()) == set(range(n))                    # every sample this pass
        assert len(seen) - n == per_pass * k - n                      # repeats: only the top-up
        passes.append(chunks)
    if per_pass > 1:
        assert not np.array_equal(np.sort(passes[0][0]), np.sort(passes[1][0]))   # a new permutation
    again, epoch = Pruner(n, policy="sweep", prune_ratio=ratio, seed=3), per_pass + per_pass // 2
    assert np.array_equal(np.sort(again.select(epoch)[0]), np.sort(pruner.select(epoch)[0]))   # no state
    assert (pruner.select(2 * per_pass)[1] == 1).all()
