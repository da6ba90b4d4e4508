"""The radix-selection driver behind every top-k (CPU and GPU): its threshold must be exactly the
k-th best (key, id) pair of a full sort, whatever digit width and gather limit force it through."""
import numpy as np
import pytest

from emp_data import _C


def reference(keys, k):
    ids = np.flatnonzero(keys != 0)
    eligible = len(ids)
    if k == 0:
        return {"none": True, "all": False, "eligible": eligible}
    if eligible < k:
        return {"none": False, "all": True, "eligible": eligible}
    order = ids[np.lexsort((ids, ~keys[ids]))]   # larger key first (~ reverses uint64 order), then smaller id
    kth = int(order[k - 1])
    return {"none": False, "all": False, "eligible": eligible, "key": int(keys[kth]), "id": kth}


def check(keys, k, **plan):
    got = _C.topk_threshold(np.ascontiguousarray(keys, dtype=np.uint64), k, **plan)
    want = reference(keys, k)
    for field, value in want.items():
        assert got[field] == value, (field, got, want, k, plan)


def key_sets():
    rng = np.random.default_rng(7)
    n = 3000
    full = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    # Few distinct values (heavy ties, resolved by id) spread over every digit, plus ineligible zeros.
    tied = rng.choice(np.array([0, 1, 2**63, 2**64 - 1, 0xFFFF0000FFFF0000, 5 << 40, 5 << 40 | 1], dtype=np.uint64), n)
    # Equal top 48 bits, differing in the low bits only: every digit pass before the last is one bin.
    low = np.uint64(0xABCDEF012345 << 16) | rng.integers(0, 50, n, dtype=np.uint64)
    same = np.full(n, 0x8000000000000001, dtype=np.uint64)
    return {"full": full, "tied": tied, "low": low, "same": same}


@pytest.mark.parametrize("name", ["full", "tied", "low", "same"])
@pytest.mark.parametrize("plan", [{}, {"digit_bits": 1, "gather_limit": 1}, {"digit_bits": 3, "gather_limit": 7},
                                  {"digit_bits": 12, "gather_limit": 64}, {"digit_bits": 20, "gather_limit": 10**9}])
def test_threshold_is_the_kth_of_a_full_sort(name, plan):
    keys = key_sets()[name]
    eligible = int((keys != 0).sum())
    for k in sorted({0, 1, 2, 17, eligible // 2, eligible - 1, eligible, eligible + 1, len(keys)}):
        if k >= 0:
            check(keys, k, **plan)


def test_empty_and_single():
    check(np.zeros(0, np.uint64), 0)
    check(np.zeros(0, np.uint64), 1)
    check(np.array([0], np.uint64), 1)
    check(np.array([9], np.uint64), 1, digit_bits=1, gather_limit=1)


def test_bad_plan_is_named():
    with pytest.raises(ValueError, match="digit_bits"):
        _C.topk_threshold(np.arange(5, dtype=np.uint64), 2, digit_bits=21)


def within(keys, t):
    """Membership under a reference threshold: eligible and (larger key, or equal key and smaller id)."""
    ids = np.arange(len(keys))
    if t["none"]:
        return np.zeros(len(keys), bool)
    if t["all"]:
        return keys != 0
    return (keys != 0) & ((keys > np.uint64(t["key"])) | ((keys == np.uint64(t["key"])) & (ids <= t["id"])))


@pytest.mark.parametrize("name", ["full", "tied", "low", "same"])
@pytest.mark.parametrize("plan", [{}, {"digit_bits": 1, "gather_limit": 1}, {"digit_bits": 3, "gather_limit": 7},
                                  {"digit_bits": 12, "gather_limit": 64}])
def test_thresholds_settled_in_the_writing_pass_match_a_full_sort(name, plan):
    """Two boundaries share one histogram and are settled in the pass that writes: each item's
    membership is written from a provisional threshold and rewritten once the bins are settled."""
    keys = key_sets()[name]
    eligible = int((keys != 0).sum())
    ranks = [0, 1, 17, eligible // 3, eligible - 1, eligible, eligible + 5]
    for k0, k1 in [(a, b) for a in ranks for b in ranks if a <= b][::3]:
        thresholds, inside = _C.topk_settled(keys, k0, k1, **plan)
        for j, k in enumerate((k0, k1)):
            want = reference(keys, k)
            for field, value in want.items():
                assert thresholds[j][field] == value, (field, j, thresholds[j], want, plan)
            np.testing.assert_array_equal((inside >> j) & 1, within(keys, want).astype(np.uint8))


@pytest.mark.parametrize("name", ["full", "tied", "low", "same", "top"])
def test_a_window_predicted_for_uniform_keys_is_exact_hit_or_miss(name):
    """Coins and permutation keys get a threshold window from their law instead of a histogram pass;
    keys that are not uniform (or a window that missed) fall back to the radix passes. Either way the
    threshold and every membership match a full sort."""
    sets = key_sets()
    # Uniform keys crowded into the top 1/1024 of the range: the predicted window misses them.
    sets["top"] = np.uint64(2**64 - 2**54) | (sets["full"] >> np.uint64(10)) | np.uint64(1)
    keys = sets[name]
    eligible = int((keys != 0).sum())
    for k in sorted({0, 1, 2, 17, eligible // 3, eligible // 2, eligible - 1, eligible, eligible + 5}):
        got, inside = _C.topk_settled_uniform(keys, k, eligible)
        want = reference(keys, k)
        if 0 < k < eligible:  # k = eligible keeps every key: "all", the same membership as its k-th
            assert (got["key"], got["id"]) == (want["key"], want["id"]), (got, want, k)
        np.testing.assert_array_equal(inside, within(keys, want).astype(np.uint8))


def test_uniform_keys_take_the_window():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True) | np.uint64(1)
    got, inside = _C.topk_settled_uniform(keys, 60_000, len(keys))
    assert got["predicted"]
    assert int(inside.sum()) == 60_000
