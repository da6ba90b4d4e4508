"""The random part of every rule against the reference, in law, over many draws (fixed seeds).

- Inclusion: each sample's keep count over T draws against Binomial(T, p), p from the reference
  (exact successive-sampling probabilities for `weighted`), within 5 standard deviations; samples
  with p = 0 or 1 exactly.
- Unbiasedness, for every rule that promises it (the soft rules with and without an exact budget
  and max_gap, `weighted` with plain Horvitz-Thompson weights): the mean over T draws of
  sum_i w_i x_i, for x of both signs, is within 5 standard errors of sum_i x_i, the standard error
  from the rule's variance (closed form for the soft rules, the draws' own for `weighted`).
"""
import math

import numpy as np
import pytest

import reference_selection as ref
from emp_data import Pruner

Z = 5.0


def store_state(n, seed, *, unseen=0.1, ties=False, negative=False, idle_max=0):
    rng = np.random.default_rng(seed)
    loss = rng.gamma(2.0, 0.5, n).astype(np.float32)
    if ties:
        loss = rng.choice(np.float32([0.0, -0.0, 1.0, 2.0]), n)
    if negative:
        loss = (loss - np.float32(1.0)).astype(np.float32)
    memory = rng.random(n).astype(np.float32)
    seen = rng.random(n) >= unseen
    nan = np.float32(np.nan)
    return ref.State(np.where(seen, loss, nan), np.where(seen, memory, nan), np.where(seen, loss, nan),
                     np.where(seen, np.float32(0.1) * loss * loss, nan),
                     rng.integers(0, idle_max + 1, n).astype(np.uint16), np.zeros(n, np.uint16))


def draws(state, policy, options, ratio, T, seed=0):
    """(keep counts, weights per draw as an (T, n) array) over T epochs on a store that each select
    finds in `state` (the counters a select moves are put back)."""
    pruner = Pruner(state.n, policy=policy, prune_ratio=ratio, seed=seed, **options)
    for name in ("loss", "memory", "loss_mean", "loss_var", "times_selected"):
        getattr(pruner.store, name)[:] = getattr(state, name)
    weights = np.zeros((T, state.n))
    for t in range(T):
        pruner.store.idle[:] = state.idle
        ids, w = pruner.select(t + 1)          # epochs >= 1: seta's window slides from epoch 1
        weights[t, ids] = w
    return (weights > 0).sum(axis=0), weights


def assert_binomial(counts, prob, T, where):
    exact = (prob == 0) | (prob == 1)
    assert np.array_equal(counts[exact], T * prob[exact]), f"{where}: a sure sample missed or an excluded one kept"
    p = prob[~exact & ~np.isnan(prob)]
    c = counts[~exact & ~np.isnan(prob)]
    if len(p):
        z = (c - T * p) / np.sqrt(T * p * (1 - p))
        assert np.abs(z).max() < Z, f"{where}: inclusion off by {np.abs(z).max():.1f} sd (sample {np.argmax(np.abs(z))})"


INCLUSION = [
    ("random", {}, 0.7, {}),
    ("random", {"max_gap": 2}, 0.7, {"idle_max": 3}),
    ("infobatch", {}, 0.5, {}),
    ("infobatch", {"max_gap": 1}, 0.5, {"idle_max": 2}),
    ("infobatch", {"exact_budget": True}, 0.5, {}),
    ("emp", {"beta": -1.0, "exact_budget": False, "max_gap": 0}, 0.7, {}),
    ("emp", {"beta": -2.0, "loss_weight": 1.0, "exact_budget": True}, 0.6, {"negative": True}),
    ("emp", {"mode": "topk", "epsilon": 0.3}, 0.6, {}),
    ("epsilon_greedy", {"epsilon": 0.25}, 0.5, {"ties": True}),
    ("ucb", {"c": 0.0}, 0.5, {"ties": True}),
    ("ucb", {"max_gap": 2}, 0.8, {"ties": True, "idle_max": 3}),
    ("infobatch", {"exact_budget": True}, 0.9, {"ties": True}),       # above-mean set over budget: ties
    ("weighted", {"alpha": 1.0}, 0.6, {"unseen": 0.2}),
    ("weighted", {"alpha": 2.0, "score": "emp", "beta": 1.0, "max_gap": 2}, 0.5, {"idle_max": 3}),
    ("sweep", {}, 0.7, {}),
]


@pytest.mark.parametrize("policy,options,ratio,kind", INCLUSION,
                         ids=[f"{p}-{'-'.join(f'{k}={v}' for k, v in o.items())}-{r}" for p, o, r, _ in INCLUSION])
def test_inclusion_probabilities_follow_the_reference(policy, options, ratio, kind):
    n = 10 if policy == "weighted" else 60
    T = 3000 if policy == "sweep" else 1500
    state = store_state(n, 3, **kind)
    exp = ref.expected(state, policy, ratio, 1, **options)
    counts, _ = draws(state, policy, options, ratio, T)
    assert_binomial(counts, exp.prob, T, f"{policy} {options}")


def test_ties_at_the_boundary_are_broken_uniformly_whatever_the_sign_of_zero():
    # Scores 0.0 and -0.0 straddle the boundary: they are one tie, drawn uniformly.
    n = 40
    loss = np.where(np.arange(n) % 2 == 0, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    loss[:10] = 1.0
    state = ref.State(loss, np.full(n, np.nan, np.float32), loss, np.zeros(n, np.float32), np.zeros(n, np.uint16),
                      np.zeros(n, np.uint16))
    exp = ref.expected(state, "ucb", 0.5, 1, c=0.0)
    assert exp.tie_draws == 10 and exp.tied.sum() == 30
    counts, _ = draws(state, "ucb", {"c": 0.0}, 0.5, 1500)
    assert_binomial(counts, exp.prob, 1500, "ucb ties")


UNBIASED = [
    ("infobatch", {}, 0.5, {}),
    ("infobatch", {"max_gap": 1}, 0.7, {"idle_max": 2}),
    ("infobatch", {"exact_budget": True}, 0.5, {}),
    ("infobatch", {"exact_budget": True, "max_gap": 3}, 0.3, {"idle_max": 3}),
    ("emp", {"beta": -1.0, "exact_budget": False, "max_gap": 0}, 0.7, {}),
    ("emp", {"beta": -2.0, "loss_weight": 1.0, "exact_budget": True}, 0.3, {"negative": True}),
    ("emp", {"beta": 1.0, "loss_weight": 1.0, "max_gap": 1, "exact_budget": False}, 0.8, {"idle_max": 2}),
    ("weighted", {"alpha": 1.0, "normalize": False}, 0.5, {"unseen": 0.0}),
    ("weighted", {"alpha": 0.5, "normalize": False, "max_gap": 3}, 0.5, {"idle_max": 3, "unseen": 0.0}),
]


@pytest.mark.parametrize("policy,options,ratio,kind", UNBIASED,
                         ids=[f"{p}-{'-'.join(f'{k}={v}' for k, v in o.items())}-{r}" for p, o, r, _ in UNBIASED])
def test_weighted_sums_are_unbiased(policy, options, ratio, kind):
    n, T = 400, 600
    state = store_state(n, 5, **kind)
    exp = ref.expected(state, policy, ratio, 1, **options)
    assert not exp.info.get("budget_exceeded") and exp.rest.any()     # a random part to test
    x = np.random.default_rng(11).normal(0.5, 2.0, n)          # any x, both signs
    _, weights = draws(state, policy, options, ratio, T)
    estimates = weights @ x
    truth = x.sum()
    if policy == "weighted":
        se = estimates.std(ddof=1) / math.sqrt(T)
    elif exp.rest_draws is None:                                # independent coins, weight 1/p
        p = exp.rest_prob
        se = math.sqrt((x[exp.rest] ** 2).sum() * (1 - p) / p / T)
    else:                                                       # m of M uniformly, weight M/m
        m, pool = exp.rest_draws, x[exp.rest]
        M = len(pool)
        se = math.sqrt(M * M * (1 - m / M) * pool.var(ddof=1) / m / T)
    assert se > 0
    assert abs(estimates.mean() - truth) < Z * se, f"{policy} {options}: mean {estimates.mean():.3f} vs {truth:.3f}"


def test_a_sweep_pass_visits_every_sample_once_and_tops_up_from_its_head():
    n, ratio = 50, 0.7
    k = ref.budget(ratio, n)
    per_pass = math.ceil(n / k)
    pruner = Pruner(n, policy="sweep", prune_ratio=ratio, seed=4)
    passes = []
    for p in range(3):
        chunks = [pruner.select(p * per_pass + e)[0] for e in range(per_pass)]
        assert all(len(c) == k and len(np.unique(c)) == k for c in chunks)
        seen = np.concatenate(chunks)
        assert set(seen.tolist()) == set(range(n))                      # every sample in the pass
        repeated = np.flatnonzero(np.bincount(seen, minlength=n) == 2)
        assert len(repeated) == per_pass * k - n and set(repeated) <= set(chunks[0].tolist())
        passes.append([frozenset(c.tolist()) for c in chunks])
    assert passes[0] != passes[1] != passes[2]                           # a new permutation each pass
