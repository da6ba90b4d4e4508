import itertools

import numpy as np
import pytest

import emp_data
from emp_data import sample_without_replacement


def exact_successive_inclusion(w, k):
    """Inclusion probabilities of successive sampling (draw proportional to w, remove, repeat),
    which is what exponential-key sampling realises exactly."""
    n = len(w)
    total = w.sum()
    incl = np.zeros(n)
    for order in itertools.permutations(range(n), k):
        p, left = 1.0, total
        for i in order:
            p *= w[i] / left
            left -= w[i]
        incl[list(order)] += p
    return incl


def test_inclusion_frequencies_match_successive_sampling():
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 6.0])
    k, seeds = 3, 20_000
    counts = np.zeros(len(w))
    for s in range(seeds):
        ids, _ = sample_without_replacement(w, k, seed=s)
        assert len(ids) == k and len(set(ids.tolist())) == k
        counts[ids] += 1
    expected = exact_successive_inclusion(w, k)
    se = np.sqrt(expected * (1 - expected) / seeds)
    z = np.abs(counts / seeds - expected) / se
    assert z.max() < 5, (counts / seeds, expected)


def test_single_draw_is_exactly_proportional():
    w = np.arange(1, 11, dtype=np.float64)
    seeds = 20_000
    counts = np.bincount(np.concatenate([sample_without_replacement(w, 1, seed=s)[0] for s in range(seeds)]),
                         minlength=10)
    p = w / w.sum()
    chi2 = ((counts - seeds * p) ** 2 / (seeds * p)).sum()
    assert chi2 < 35  # 9 dof: P(chi2 > 35) < 1e-4


def test_horvitz_thompson_estimate_is_unbiased(rng):
    n, k, seeds = 2000, 200, 400
    w = rng.gamma(2.0, 1.0, n)
    x = w * rng.uniform(0.5, 1.5, n)  # values correlated with weights, as losses are with scores
    estimates = []
    for s in range(seeds):
        ids, inv_prob = sample_without_replacement(w, k, seed=s)
        estimates.append(float((x[ids] * inv_prob).sum()))
    estimates = np.array(estimates)
    se = estimates.std(ddof=1) / np.sqrt(seeds)
    assert abs(estimates.mean() - x.sum()) < 5 * se
    assert estimates.std() < 0.2 * x.sum()  # the sample really estimates something


def test_zero_weights_never_drawn_and_small_populations():
    w = np.array([0.0, 1.0, 0.0, 2.0])
    ids, inv = sample_without_replacement(w, 3, seed=1)
    assert sorted(ids.tolist()) == [1, 3] and (inv == 1).all()
    ids, inv = sample_without_replacement(w, 0, seed=1)
    assert len(ids) == 0


def test_large_n_and_determinism():
    w = np.random.default_rng(0).random(2_000_000)
    a = sample_without_replacement(w, 500_000, seed=3)
    emp_data.set_num_threads(1)
    try:
        b = sample_without_replacement(w, 500_000, seed=3)
    finally:
        emp_data.set_num_threads(2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert len(np.unique(a[0])) == 500_000
    assert not np.array_equal(a[0], sample_without_replacement(w, 500_000, seed=4)[0])


@pytest.mark.parametrize("weights,k,err,match", [
    (np.array([1.0, np.nan]), 1, ValueError, "weights must be finite; first bad index 1"),
    (np.array([1.0, -1.0]), 1, ValueError, "weights must be >= 0; first negative index 1"),
    (np.ones((2, 2)), 1, ValueError, "weights must be 1-D"),
    (np.ones(3), 4, ValueError, "k must be >= 0 and <= 3"),
    (np.array(["a"]), 1, TypeError, "weights must be numeric"),
])
def test_bad_input(weights, k, err, match):
    with pytest.raises(err, match=match):
        sample_without_replacement(weights, k)
