"""Differential tests: every rule's selection against the numpy reference (reference_selection.py).

hypothesis draws stores with never-seen samples, negative, zero (both signs), tied, all-equal and
very large scores, idle counts for max_gap, N from 1 to 1e5 and prune ratios of 0, tiny, 0.5 and
near 1; a failure shrinks to a minimal store. One draw must agree exactly with the reference's
deterministic part: the kept-for-sure set, the count among ties, budgets, forced samples, every
kept sample's weight, the reported counts, and the counters the selection moves.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import reference_selection as ref
from emp_data import Pruner

SETTINGS = settings(max_examples=70, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RATIOS = st.sampled_from([0.0, 1e-9, 0.001, 0.3, 0.5, 0.7, 0.9, 0.999, 1.0 - 1e-9])
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e30, -1e30, 3.0e38, -3.0e38, 1e-40]
VALUE = st.one_of(st.sampled_from(SPECIAL), st.floats(-10, 10, width=32),
                  st.floats(width=32, allow_nan=False, allow_infinity=False))


GAP = st.sampled_from([0, 0, 1, 2, 3, "pass"])
POLICIES = {
    "full": st.just({}),
    "random": st.fixed_dictionaries({"max_gap": GAP}),
    "infobatch": st.fixed_dictionaries({"exact_budget": st.booleans(), "max_gap": GAP}),
    "epsilon_greedy": st.fixed_dictionaries({"epsilon": st.sampled_from([0.0, 0.1, 0.5, 1.0]), "max_gap": GAP}),
    "ucb": st.fixed_dictionaries({"c": st.sampled_from([0.0, 1.0, 2.5]), "max_gap": GAP}),
    "emp": st.fixed_dictionaries({
        "beta": st.sampled_from([1.0, -1.0, 0.5, -3.0, 0.0]), "loss_weight": st.sampled_from([0.0, 1.0, 0.25]),
        "mode": st.sampled_from(["soft", "topk"]), "epsilon": st.sampled_from([0.0, 0.2]),
        "exact_budget": st.booleans(), "max_gap": GAP}),
    "weighted": st.fixed_dictionaries({
        "alpha": st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), "score": st.sampled_from(["loss", "emp", "mean", "ucb"]),
        "beta": st.sampled_from([0.0, 1.0]), "normalize": st.booleans(), "max_gap": GAP,
        "loss_weight": st.sampled_from([1.0, 0.0, 0.5])}),
    "sweep": st.just({}),
    "seta": st.fixed_dictionaries({
        "groups": st.sampled_from([2, 3, 10]), "window": st.sampled_from([0.5, 1.0, 0.34]),
        "exact_budget": st.booleans(), "max_gap": GAP}),
}


def policies():
    return st.one_of(*(st.tuples(st.just(name), options) for name, options in POLICIES.items()))


@st.composite
def small_stores(draw):
    """Element by element (shrinks to a minimal store)."""
    n = draw(st.integers(1, 40))
    seen = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    tied = draw(st.booleans())
    values = st.sampled_from([0.0, 1.0, -1.0, 2.0]) if tied else VALUE
    loss = np.array(draw(st.lists(values, min_size=n, max_size=n)), np.float32)
    memory = np.array(draw(st.lists(st.one_of(st.just(math.nan), values), min_size=n, max_size=n)), np.float32)
    mean = np.array(draw(st.lists(values, min_size=n, max_size=n)), np.float32)
    var = np.abs(np.array(draw(st.lists(values, min_size=n, max_size=n)), np.float32))
    idle = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.uint16)
    times = np.array(draw(st.lists(st.sampled_from([0, 1, 7, 0xFFFF]), min_size=n, max_size=n)), np.uint16)
    return _state(seen, loss, memory, mean, var, idle, times)


@st.composite
def large_stores(draw):
    """N up to 1e5 from a numpy generator whose seed and value kinds hypothesis draws."""
    n = draw(st.sampled_from([100, 1000, 20_000, 100_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["gamma", "signed", "ties", "equal", "huge"]))
    unseen_share = draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))

    def values():
        if kind == "gamma":
            return rng.gamma(2.0, 0.5, n).astype(np.float32)
        if kind == "signed":
            return rng.normal(0, 3, n).astype(np.float32)
        if kind == "ties":
            return rng.choice(np.float32([-1, 0, -0.0, 0.5, 2]), n)
        if kind == "equal":
            return np.full(n, 0.75, np.float32)
        return (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-30, 38, n)).astype(np.float32)

    seen = rng.random(n) >= unseen_share
    memory = np.where(rng.random(n) < 0.1, np.nan, values()).astype(np.float32)
    idle = rng.integers(0, 5, n).astype(np.uint16)
    times = rng.integers(0, 3, n).astype(np.uint16)
    return _state(seen, values(), memory, values(), np.abs(values()), idle, times)


def _state(seen, loss, memory, mean, var, idle, times):
    nan = np.float32(np.nan)
    return ref.State(np.where(seen, loss, nan), np.where(seen, memory, nan), np.where(seen, mean, nan),
                     np.where(seen, var, nan), idle, times)


def pruner_on(state, policy, options, prune_ratio, seed, epochs=None, anneal=0.875):
    pruner = Pruner(state.n, policy=policy, prune_ratio=prune_ratio, epochs=epochs, anneal=anneal, seed=seed, **options)
    for name in ("loss", "memory", "loss_mean", "loss_var", "idle", "times_selected"):
        getattr(pruner.store, name)[:] = getattr(state, name)
    return pruner


def check_one_draw(state, policy, options, prune_ratio, epoch=0, seed=0, epochs=None, anneal=0.875):
    """One selection of emp_data against the reference's deterministic part."""
    exp = ref.expected(state, policy, prune_ratio, epoch, epochs, anneal, **options)
    pruner = pruner_on(state, policy, options, prune_ratio, seed, epochs, anneal)
    ids, weights = pruner.select(epoch)
    n = state.n
    where = f"{policy} {options} r={prune_ratio} n={n} epoch={epoch}"
    kept, w = ref.assert_matches(exp, ids, weights, n, where)
    stats = pruner.stats()
    for key in ("forced", "above_threshold", "budget_exceeded"):
        if key in exp.info:
            assert stats[key] == exp.info[key], f"{where}: stats[{key!r}] = {stats[key]}, expected {exp.info[key]}"
    if "threshold" in exp.info and not math.isnan(exp.info["threshold"]) and exp.info.get("forced", 0) < (exp.count or n):
        # The mean: the exact sum correctly rounded, so equal to the last bit.
        assert pruner._last_info["threshold"] == exp.info["threshold"], f"{where}: mean {pruner._last_info['threshold']!r}"
    times, idle = ref.counts_after(state, kept)
    assert np.array_equal(pruner.store.times_selected, times), f"{where}: times_selected"
    assert np.array_equal(pruner.store.idle, idle), f"{where}: idle"
    if exp.rule == "weighted" and exp.rest_draws:
        check_weighted_draw(exp, kept, w, options, n, where)
    return exp, kept, w


def check_weighted_draw(exp, kept, w, options, n, where):
    """Horvitz-Thompson weights of one draw: 1 / (1 - exp(-w_i tau)) for one tau (times one
    normalising factor), so a larger draw weight never carries a larger loss weight; normalised,
    they sum to the samples they stand for."""
    drawn = kept & exp.rest
    forced = int(exp.must.sum())
    assert drawn.sum() == exp.rest_draws
    s, lw = exp.sampling_weight[drawn], w[drawn].astype(np.float64)
    order = np.argsort(s, kind="stable")
    # float32 weights: monotone up to rounding
    assert (np.diff(lw[order]) <= 1e-5 * lw[order][1:] + 1e-30).all(), f"{where}: HT weights not monotone in w"
    if options.get("normalize", True):
        total = float(w[kept].astype(np.float64).sum()) - forced
        assert total == pytest.approx(n - forced, rel=1e-5), f"{where}: normalised weights sum to {total}"
    else:
        assert (lw >= 1.0 - 1e-6).all(), f"{where}: an inverse probability below 1"
        # Where float32 still holds the digits tau is read from: not 1 + e^-x for large x, nor 1/x
        # for tiny x.
        usable = (lw > 1.001) & (lw < 1e6)
        taus = -np.log1p(-1.0 / lw[usable]) / s[usable]
        if len(taus) > 1:
            assert taus.max() == pytest.approx(taus.min(), rel=1e-3), f"{where}: no common tau: {taus.min()}..{taus.max()}"


@pytest.mark.parametrize("policy", sorted(POLICIES))
@SETTINGS
@given(data=st.data())
def test_small_stores_match_the_reference(policy, data):
    state = data.draw(small_stores())
    options = data.draw(POLICIES[policy])
    ratio, epoch, seed = data.draw(RATIOS), data.draw(st.integers(0, 5)), data.draw(st.integers(0, 3))
    # Several optimal clusterings (seta): the window is not determined, so the draw is not compared.
    assume(not ref.expected(state, policy, ratio, epoch, **options).info.get("ambiguous"))
    check_one_draw(state, policy, options, ratio, epoch, seed)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_large_stores_match_the_reference(policy, data):
    state, options = data.draw(large_stores()), data.draw(POLICIES[policy])
    ratio, epoch = data.draw(RATIOS), data.draw(st.integers(0, 3))
    if policy == "seta" and state.n > 2000 and options.get("exact_budget"):
        options = dict(options, exact_budget=False)   # the exhaustive k-means reference is O(bins^3)
    exp = ref.expected(state, policy, ratio, epoch, **options)
    assume(not exp.info.get("ambiguous"))
    event(f"n={state.n} {exp.rule}")
    check_one_draw(state, policy, options, ratio, epoch)


@SETTINGS
@given(small_stores(), policies(), RATIOS, st.integers(1, 12), st.sampled_from([0.5, 0.875, 1.0]))
def test_annealing_epochs_match_the_reference(state, policy, ratio, epochs, anneal):
    policy, options = policy
    for epoch in (0, epochs - 1, int(anneal * epochs)):
        exp = ref.expected(state, policy, ratio, epoch, epochs, anneal, **options)
        if not exp.info.get("ambiguous"):
            check_one_draw(state, policy, options, ratio, epoch, epochs=epochs, anneal=anneal)


def test_the_reference_defaults_are_the_librarys():
    from emp_data.selection import POLICIES
    for name, defaults in ref.DEFAULTS.items():
        instance = POLICIES[name]()
        assert instance.options() == defaults, name


# The reproduction: a negative beta in soft mode.
@pytest.mark.parametrize("loss_weight", [0.0, 1.0])
@pytest.mark.parametrize("beta", [1.0, -1.0])
def test_a_negative_beta_in_soft_mode_ranks_by_the_signed_score(loss_weight, beta):
    import torch
    import torch.nn.functional as F
    n = 1000
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 10, generator=g) * torch.linspace(0, 6, n)[:, None]
    loss = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long), reduction="none")
    p = Pruner(n, policy="emp", prune_ratio=0.7, epochs=10, beta=beta, loss_weight=loss_weight, seed=0,
               exact_budget=False, max_gap=0)      # InfoBatch's soft rule on the signed score
    p.select(0)
    p.loss(loss, torch.arange(n), logits=logits)
    ids, w = p.select(1)
    s = p.scores().astype(np.float64)
    hard = s >= math.fsum(s) / n
    assert p.stats()["above_threshold"] == hard.sum()
    assert 0.3 * n < hard.sum() < 0.7 * n          # a spread-out score: neither none nor nearly all hard
    kept = np.zeros(n, bool)
    kept[ids] = True
    assert kept[hard].all() and (w[np.isin(ids, np.flatnonzero(hard))] == 1).all()


@pytest.mark.parametrize("policy,options", [("infobatch", {}), ("emp", {"beta": -1.0}),
                                            ("emp", {"beta": -2.0, "loss_weight": 1.0, "exact_budget": True})])
def test_an_all_negative_score_keeps_its_upper_half_as_hard(policy, options):
    n = 2000
    state = _state(np.ones(n, bool), -np.linspace(1, 2, n, dtype=np.float32), np.linspace(0, 1, n, dtype=np.float32),
                   np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.uint16), np.zeros(n, np.uint16))
    exp, kept, _ = check_one_draw(state, policy, options, 0.7)
    assert 0.45 * n < exp.info["above_threshold"] < 0.55 * n


# A budget of zero (k = round(0.3 * 1) = 0) with max_gap set but no sample idle long enough: the
# rule still runs, so the counts report the scores (one unseen, hence hard, sample over no room).
@pytest.mark.parametrize("policy,options", [("infobatch", {"exact_budget": True, "max_gap": 1}),
                                            ("emp", {"exact_budget": True, "max_gap": 1}),
                                            ("epsilon_greedy", {"max_gap": 2}), ("random", {"max_gap": 1})])
def test_a_zero_budget_with_nothing_forced_reports_the_scores(policy, options):
    nan = np.full(1, np.nan, np.float32)
    state = ref.State(nan, nan, nan, nan, np.zeros(1, np.uint16), np.zeros(1, np.uint16))
    exp, kept, _ = check_one_draw(state, policy, options, 0.7)
    assert not kept.any() and pytest.approx(0) == exp.count
    if "above_threshold" in exp.info:
        assert exp.info["above_threshold"] == 1 and exp.info["budget_exceeded"]
