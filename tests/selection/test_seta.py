"""SeTa (CVPR 2025) as its reference code (github.com/mrazhou/SeTa, seta.py) selects: a uniform
subset of k, 1-D k-means of the subset's losses into 10 groups ordered easy -> hard, a window of 5
groups sliding one group per pruned epoch (epoch 0: every group), partial annealing."""
import numpy as np
import pytest

from emp_data import Pruner, _C

N = 20_000
LEVELS = 10


def levelled(policy_options=None, ratio=0.7, seed=0):
    """A pruner whose samples fall into LEVELS well-separated loss levels of equal size."""
    rng = np.random.default_rng(1)
    level = rng.permutation(np.arange(N) % LEVELS)
    loss = (level + rng.uniform(-0.05, 0.05, N)).astype(np.float32)
    pruner = Pruner(N, policy="seta", prune_ratio=ratio, epochs=40, seed=seed, **(policy_options or {}))
    pruner.store.update(np.arange(N), loss)
    return pruner, level


def window(epoch, groups=10, width=5):
    start = epoch % (groups - width + 1)
    return set(range(start, start + width)) if epoch > 0 else set(range(groups))


def test_epoch_zero_keeps_the_whole_random_subset():
    pruner, _ = levelled()
    ids, weights = pruner.select(0)
    assert len(ids) == round(0.3 * N) and (weights == 1).all()


@pytest.mark.parametrize("epoch", [1, 2, 5, 6, 7, 13])
def test_the_window_slides_over_the_groups_easy_to_hard(epoch):
    pruner, level = levelled()
    k = round(0.3 * N)
    ids, weights = pruner.select(epoch)
    assert set(np.unique(level[ids]).tolist()) == window(epoch)
    # The subset is a uniform k, so the window's members in it are hypergeometric: mean k/2.
    sd = np.sqrt(k * 0.5 * 0.5 * (N - k) / (N - 1))
    assert abs(len(ids) - k / 2) < 5 * sd and (weights == 1).all()


def test_exact_budget_keeps_k_from_the_window():
    pruner, level = levelled({"exact_budget": True})
    k = round(0.3 * N)
    for epoch in (1, 3, 6):
        ids, _ = pruner.select(epoch)
        assert len(ids) == k and set(np.unique(level[ids]).tolist()) <= window(epoch)
    # A window smaller than k: all of it, topped up uniformly from the rest.
    pruner, level = levelled({"exact_budget": True}, ratio=0.2)
    ids, _ = pruner.select(1)
    assert len(ids) == round(0.8 * N) and np.isin(np.flatnonzero(np.isin(level, list(window(1)))), ids).all()


def test_annealing_is_partial_a_uniform_k():
    pruner, level = levelled()
    ids, weights = pruner.select(39)                 # 39 >= 0.875 * 40
    k = round(0.3 * N)
    assert len(ids) == k and (weights == 1).all() and set(np.unique(level[ids]).tolist()) == set(range(LEVELS))


def test_equal_scores_chunk_the_subset_as_the_reference_does():
    pruner = Pruner(1000, policy="seta", prune_ratio=0.5, seed=2)
    pruner.store.update(np.arange(1000), np.ones(1000, np.float32))
    k = 500
    for epoch in (1, 4):
        start = epoch % 6
        assert len(pruner.select(epoch)[0]) == k * (start + 5) // 10 - k * start // 10


def test_never_seen_samples_fall_in_the_hardest_group():
    pruner, level = levelled()
    fresh = Pruner(N, policy="seta", prune_ratio=0.7, seed=0)
    seen = np.arange(N) % 4 != 0
    fresh.store.update(np.flatnonzero(seen), pruner.store.loss[seen])
    ids, _ = fresh.select(1)                         # window: the 5 easiest groups after the first
    assert not np.isin(np.flatnonzero(~seen), ids).any()
    ids, _ = fresh.select(5)                         # window: the 5 hardest
    assert np.isin(ids, np.flatnonzero(~seen)).any()


def test_histogram_kmeans_matches_sklearn_on_separated_clusters():
    sklearn = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(0)
    centres = np.array([0.1, 0.5, 0.9, 1.6, 2.2, 3.5, 4.0, 5.5, 7.0, 9.0])
    spread = np.array([0.02, 0.05, 0.03, 0.1, 0.05, 0.1, 0.05, 0.2, 0.1, 0.3])
    sizes = rng.integers(500, 3000, len(centres))
    x = np.concatenate([rng.normal(c, s, n) for c, s, n in zip(centres, spread, sizes)])
    lo, hi, bins = x.min(), x.max(), 1 << 14
    counts = np.bincount(np.minimum(((x - lo) / (hi - lo) * bins).astype(int), bins - 1), minlength=bins)
    cluster = _C.histogram_kmeans(counts.astype(np.uint64), float(lo), float(hi), 10)
    ours = cluster[np.minimum(((x - lo) / (hi - lo) * bins).astype(int), bins - 1)]
    km = sklearn.KMeans(n_clusters=10, random_state=0, n_init=10).fit(x[:, None])
    order = np.argsort(km.cluster_centers_[:, 0])
    theirs = np.argsort(order)[km.labels_]
    assert np.mean(ours == theirs) > 0.999
    assert (np.diff(cluster.astype(int)) >= 0).all()   # 1-D: clusters are intervals in score order


def test_options_are_validated():
    for bad, match in (({"groups": 0}, "groups must be"), ({"window": 0.0}, "window must be in"),
                       ({"window": 1.5}, "window must be"), ({"groups": 1, "window": 0.4}, "round to at least 1")):
        with pytest.raises(ValueError, match=match):
            Pruner(10, policy="seta", **bad)
