"""An independent reference for what a selection keeps, in plain numpy.

Written from the README's policy table and the papers' definitions, not from the C++: it never
draws a random number. For a store's state and a policy it says what every draw must keep (the
deterministic part) and how the rest is drawn (the random part), so a differential test can compare
one draw of emp_data exactly on the first and many draws in law on the second.

The definitions, as the README states them (k = round((1 - r) N), half away from zero):
- scores are float32, computed as the store holds its fields: loss, ``loss_weight * loss + beta *
  memory`` (the memory term left out where none was recorded), the running mean, or ``mean + c *
  sqrt(var)``; NaN marks a never-seen sample (its loss is NaN);
- the soft rules' mean is the exact sum of the seen scores, correctly rounded to float64 (as
  ``math.fsum``), over their count; a score is "hard" when it is NaN or ``>= mean``;
- top-k ranks NaN above every score, equal scores (0.0 and -0.0 included) are tied and the tie is
  broken uniformly at random;
- ``max_gap=m``: samples with ``idle >= m`` are forced in at weight 1, inside the budget; when
  they alone fill k, the k idle longest are kept (ties uniform); ``max_gap="pass"`` is
  m = ceil(1 / (1 - r)), one pass of RS2;
- annealing epochs (``epoch >= anneal * epochs``) keep everything at weight 1 (seta: a uniform k).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from reference_kmeans import possible_clusters

F32 = np.float32

# The README's defaults for each policy's options.
DEFAULTS = {
    "full": {},
    "random": {"max_gap": 0},
    "infobatch": {"exact_budget": False, "max_gap": 0},
    "epsilon_greedy": {"epsilon": 0.1, "max_gap": 0},
    "ucb": {"c": 1.0, "max_gap": 0},
    "emp": {"beta": 1.0, "mode": "soft", "epsilon": 0.0, "exact_budget": True, "normalize_entropy": True, "max_gap": "pass",
            "loss_weight": 0.0, "memory": "entropy"},
    "weighted": {"alpha": 1.0, "score": "loss", "beta": 0.0, "c": 1.0, "normalize": True, "max_gap": 0,
                 "loss_weight": 1.0},
    "sweep": {},
    "seta": {"groups": 10, "window": 0.5, "exact_budget": False, "max_gap": 0},
}
SETA_BINS = 1 << 14


@dataclass
class State:
    """A store's per-sample fields, as the store keeps them (float32, uint16)."""
    loss: np.ndarray
    memory: np.ndarray
    loss_mean: np.ndarray
    loss_var: np.ndarray
    idle: np.ndarray
    times_selected: np.ndarray

    @classmethod
    def of(cls, store) -> "State":
        return cls(*(np.array(getattr(store, f)) for f in ("loss", "memory", "loss_mean", "loss_var", "idle",
                                                          "times_selected")))

    @property
    def n(self) -> int:
        return len(self.loss)


@dataclass
class Expected:
    """What one draw keeps. Kept = must + exactly ``tie_draws`` of ``tied`` + a random part:
    ``rest_draws`` of ``rest`` uniformly without replacement, or (``rest_draws is None``) each of
    ``rest`` independently with probability ``rest_prob``. ``weight``: the weight a sample carries
    when kept (NaN: set by the draw, the weighted rule). ``prob``: each sample's inclusion
    probability where it has a closed form (NaN elsewhere)."""
    must: np.ndarray
    tied: np.ndarray
    tie_draws: int
    rest: np.ndarray
    rest_draws: int | None
    rest_prob: float
    weight: np.ndarray
    prob: np.ndarray
    count: int | None
    info: dict = field(default_factory=dict)
    rule: str = ""
    sampling_weight: np.ndarray | None = None   # weighted: the draw's w_i (0: never drawn)


def budget(prune_ratio: float, n: int) -> int:
    x = (1.0 - prune_ratio) * n
    f = math.floor(x)
    return int(f) + (1 if x - f >= 0.5 else 0)


def score(state: State, kind: str, beta: float = 0.0, loss_weight: float = 1.0, c: float = 1.0) -> np.ndarray:
    """Each sample's float32 score (NaN: never seen)."""
    with np.errstate(all="ignore"):
        if kind == "loss":
            return state.loss.astype(F32)
        if kind == "emp":
            base = F32(loss_weight) * state.loss
            return np.where(np.isnan(state.memory), base, base + F32(beta) * state.memory).astype(F32)
        if kind == "mean":
            return state.loss_mean.astype(F32)
        if kind == "ucb":
            return (state.loss_mean + F32(c) * np.sqrt(np.maximum(state.loss_var, F32(0)))).astype(F32)
    raise ValueError(kind)


def exact_mean(values: np.ndarray) -> float:
    """The exact sum of float32 values, correctly rounded to float64, over their count (0 if none)."""
    if len(values) == 0:
        return 0.0
    v = values.astype(np.float64)
    pos, neg = np.isposinf(v).any(), np.isneginf(v).any()
    if pos and neg:
        return math.nan
    if pos or neg:
        return math.inf if pos else -math.inf
    return math.fsum(v) / len(v)


def top(values: np.ndarray, eligible: np.ndarray, k: int):
    """(must, tied, draws) for the k highest of `values` among `eligible` (NaN highest; equal
    values tied): the strictly higher ones are in, and `draws` of the tied ones."""
    n = len(values)
    must, tied = np.zeros(n, bool), np.zeros(n, bool)
    cand = np.flatnonzero(eligible)
    if k <= 0 or len(cand) == 0:
        return must, tied, 0
    if k >= len(cand):
        must[cand] = True
        return must, tied, 0
    v = values[cand].astype(np.float64)
    key = np.where(np.isnan(v), np.inf, v)          # NaN above every score, inf included (next line)
    nan = np.isnan(v)
    order = np.lexsort((-key, ~nan))                 # NaN first, then descending; stable otherwise
    kth = order[k - 1]
    if nan[kth]:
        above, same = np.zeros(len(cand), bool), nan
    else:
        above = nan | (key > key[kth])
        same = ~nan & (key == key[kth])             # 0.0 == -0.0: tied
    must[cand[above]] = True
    tied[cand[same]] = True
    return must, tied, k - int(above.sum())


def most_idle(idle: np.ndarray, forced: np.ndarray, k: int):
    return top(idle.astype(np.float64), forced, k)


def expected(state: State, policy: str = "emp", prune_ratio: float = 0.5, epoch: int = 0, epochs: int | None = None,
             anneal: float = 0.875, **options) -> Expected:
    """What `Pruner(N, policy, prune_ratio, epochs, anneal, **options).select(epoch)` keeps on a store
    in `state`."""
    opts = dict(DEFAULTS[policy])
    unknown = set(options) - set(opts)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    opts.update(options)
    if opts.get("max_gap") == "pass":     # one RS2 pass: the fewest epochs m with m (1 - r) >= 1 (to 1e-9)
        # (capped where idle counts saturate, 0xFFFF)
        opts["max_gap"] = next((m for m in range(1, 0xFFFF) if m * (1.0 - prune_ratio) >= 1.0 - 1e-9), 0xFFFF)
    n = state.n
    pruned = epochs is None or epoch < anneal * epochs
    if prune_ratio == 0.0 or policy == "full" or (not pruned and policy != "seta"):
        return _full(n)
    if not pruned:                                   # seta's partial annealing: a uniform k
        return _topk(state, np.full(n, np.nan, F32), prune_ratio, explore=1.0, max_gap=0, rule="random")
    if policy == "random":
        return _topk(state, np.full(n, np.nan, F32), prune_ratio, explore=1.0, max_gap=opts["max_gap"], rule="random")
    if policy == "epsilon_greedy":
        return _topk(state, score(state, "mean"), prune_ratio, opts["epsilon"], opts["max_gap"], "epsilon_greedy")
    if policy == "ucb":
        return _topk(state, score(state, "ucb", c=opts["c"]), prune_ratio, 0.0, opts["max_gap"], "ucb")
    if policy == "infobatch":
        return _soft(state, score(state, "loss"), prune_ratio, opts["exact_budget"], opts["max_gap"])
    if policy == "emp":
        s = score(state, "emp", beta=opts["beta"], loss_weight=opts["loss_weight"])
        if opts["mode"] == "soft":
            return _soft(state, s, prune_ratio, opts["exact_budget"], opts["max_gap"])
        return _topk(state, s, prune_ratio, opts["epsilon"], opts["max_gap"], "emp-topk")
    if policy == "weighted":
        s = score(state, opts["score"], beta=opts["beta"], loss_weight=opts["loss_weight"], c=opts["c"])
        return _weighted(state, s, prune_ratio, opts["alpha"], opts["normalize"], opts["max_gap"])
    if policy == "sweep":
        return _sweep(n, prune_ratio, epoch)
    if policy == "seta":
        return _seta(state, score(state, "loss"), prune_ratio, epoch, opts)
    raise ValueError(policy)


def _empty(n):
    return np.zeros(n, bool)


def _full(n) -> Expected:
    return Expected(np.ones(n, bool), _empty(n), 0, _empty(n), 0, 0.0, np.ones(n, F32), np.ones(n), n,
                    {"forced": 0}, "full")


def _forced(state: State, max_gap: int) -> np.ndarray:
    return state.idle >= max_gap if max_gap > 0 else _empty(state.n)


def _when_forced_fill_k(state, forced, k, rule) -> Expected | None:
    """The k idle longest, when the forced samples alone reach k."""
    if not forced.any() or forced.sum() < k:
        return None
    n = state.n
    must, tied, draws = most_idle(state.idle, forced, k)
    prob = np.where(must, 1.0, np.where(tied, draws / max(tied.sum(), 1), 0.0))
    return Expected(must, tied, draws, _empty(n), 0, 0.0, np.ones(n, F32), prob, k, {"forced": k}, rule)


def _soft(state: State, s: np.ndarray, r: float, exact_budget: bool, max_gap: int) -> Expected:
    """InfoBatch's rule on score s (infobatch, emp soft)."""
    n = state.n
    seen = ~np.isnan(s)
    mean = exact_mean(s[seen])
    forced = _forced(state, max_gap)
    with np.errstate(invalid="ignore"):
        hard = (~seen | (s.astype(np.float64) >= mean)) & ~forced
    info = {"threshold": mean, "unseen": int((~seen).sum())}
    if not exact_budget:
        soft = ~hard & ~forced
        # The coin: a 32-bit draw below floor((1 - r) 2^32).
        keep_prob = math.floor(math.ldexp(1.0 - r, 32)) / 2.0 ** 32
        weight = np.where(soft, F32(1.0 / (1.0 - r)), F32(1.0)).astype(F32)
        prob = np.where(soft, keep_prob, 1.0)
        info.update(above_threshold=int(hard.sum()), forced=int(forced.sum()), budget_exceeded=False)
        return Expected(hard | forced, _empty(n), 0, soft, None, keep_prob, weight, prob, None, info, "soft")
    k = budget(r, n)
    filled = _when_forced_fill_k(state, forced, k, "soft-exact")
    if filled is not None:
        filled.info.update(info)
        return filled
    room = k - int(forced.sum())
    info.update(above_threshold=int(hard.sum()), forced=int(forced.sum()))
    if hard.sum() > room:
        must, tied, draws = top(s, hard, room)
        prob = np.where(must | forced, 1.0, np.where(tied, draws / max(tied.sum(), 1), 0.0))
        info["budget_exceeded"] = True
        return Expected(must | forced, tied, draws, _empty(n), 0, 0.0, np.ones(n, F32), prob, k, info, "soft-exact")
    soft = ~hard & ~forced
    m = room - int(hard.sum())
    soft_count = int(soft.sum())
    weight = np.where(soft, F32(soft_count / m) if m > 0 else F32(0), F32(1)).astype(F32)
    prob = np.where(soft, m / soft_count if soft_count else 0.0, 1.0)
    info["budget_exceeded"] = False
    return Expected(hard | forced, _empty(n), 0, soft, m, 0.0, weight, prob, k, info, "soft-exact")


def _topk(state: State, s: np.ndarray, r: float, explore: float, max_gap: int, rule: str) -> Expected:
    """(1 - explore) of the room by score, the rest uniformly among the others (random: explore=1)."""
    n = state.n
    k = budget(r, n)
    forced = _forced(state, max_gap)
    info = {"unseen": int(np.isnan(state.loss).sum())}
    filled = _when_forced_fill_k(state, forced, k, rule)
    if filled is not None:
        filled.info.update(info)
        return filled
    room = k - int(forced.sum())
    greedy_k = budget(explore, room)               # round((1 - explore) * room), half away from zero
    must, tied, draws = top(s, ~forced, greedy_k)
    explore_k = room - greedy_k
    rest = ~forced & ~must                          # the tied ones not taken by rank are eligible too
    rest_pool = int(rest.sum()) - draws
    prob = np.where(must | forced, 1.0, 0.0)
    explore_p = explore_k / rest_pool if rest_pool > 0 else 0.0
    tie_p = draws / max(int(tied.sum()), 1)
    prob = np.where(tied, tie_p + (1 - tie_p) * explore_p, np.where(rest & ~tied, explore_p, prob))
    info["forced"] = int(forced.sum())
    return Expected(must | forced, tied, draws, rest if explore_k else _empty(n), explore_k, 0.0, np.ones(n, F32), prob,
                    k, info, rule)


def _weighted(state: State, s: np.ndarray, r: float, alpha: float, normalize: bool, max_gap: int) -> Expected:
    """k without replacement, P ~ s^alpha (successive sampling), Horvitz-Thompson weights."""
    n = state.n
    k = budget(r, n)
    forced = _forced(state, max_gap)
    seen = ~np.isnan(s)
    top_seen = float(s[seen].max()) if seen.any() else 1.0
    filled = _when_forced_fill_k(state, forced, k, "weighted")
    if filled is not None:
        return filled
    v = np.where(seen, s, top_seen).astype(np.float64)   # never seen: as likely as the top seen score
    w = np.where((v > 0) & ~forced, v, 0.0)
    w = w if alpha == 1.0 else (w * w if alpha == 2.0 else np.where(w > 0, np.power(w, alpha), 0.0))
    room = k - int(forced.sum())
    eligible = w > 0
    info = {"forced": int(forced.sum()), "unseen": int((~seen).sum())}
    if eligible.sum() <= room:                     # all of them, at weight 1 (normalised as the rest)
        weight = np.ones(n, F32)
        if normalize and eligible.any():
            weight = np.where(eligible, F32((n - forced.sum()) / eligible.sum()), F32(1))
        prob = np.where(eligible | forced, 1.0, 0.0)
        return Expected(eligible | forced, _empty(n), 0, _empty(n), 0, 0.0, weight.astype(F32), prob,
                        int(eligible.sum() + forced.sum()), info, "weighted", w)
    prob = successive_sampling_probabilities(w, room) if n <= 10 else np.full(n, np.nan)
    prob = np.where(forced, 1.0, prob)
    weight = np.where(forced, F32(1), F32(np.nan)).astype(F32)
    return Expected(forced.copy(), _empty(n), 0, eligible, room, 0.0, weight, prob, k, info, "weighted", w)


def successive_sampling_probabilities(w: np.ndarray, k: int) -> np.ndarray:
    """P(i among k draws without replacement, each draw ~ w among those left), exactly, by
    recursion over the ordered draws (small n only)."""
    n = len(w)
    layer = {0: 1.0}                               # the set drawn so far (a bit mask) -> its probability
    for _ in range(k):
        nxt: dict[int, float] = {}
        for taken, p in layer.items():
            left = [i for i in range(n) if not taken >> i & 1 and w[i] > 0]
            total = sum(w[i] for i in left)
            for i in left:
                t = taken | (1 << i)
                nxt[t] = nxt.get(t, 0.0) + p * w[i] / total
        layer = nxt
    probs = np.zeros(n)
    for taken, p in layer.items():
        for i in range(n):
            if taken >> i & 1:
                probs[i] += p
    return probs


def _sweep(n: int, r: float, epoch: int) -> Expected:
    """RS2: the next k of a seeded permutation (a chunk; the pass's last one tops up from its head)."""
    k = budget(r, n)
    return Expected(_empty(n), _empty(n), 0, np.ones(n, bool) if k else _empty(n), k, 0.0, np.ones(n, F32),
                    np.full(n, k / n), k, {"forced": 0}, "sweep")


def _seta(state: State, s: np.ndarray, r: float, epoch: int, opts: dict) -> Expected:
    """SeTa: a uniform subset, k-means of its scores on 2^14 equal-width bins, a sliding window.
    Deterministic only with exact_budget (every sample is clustered); the window is then given as
    `must`/`rest` unless the optimal clustering is ambiguous (info["ambiguous"])."""
    n = state.n
    k = budget(r, n)
    forced = _forced(state, opts["max_gap"])
    filled = _when_forced_fill_k(state, forced, k, "seta")
    if filled is not None:
        return filled
    room = k - int(forced.sum())
    groups = int(opts["groups"])
    window = max(1, round(groups * opts["window"]))   # half to even, as the README's round()
    start = epoch % (groups - window + 1)
    every_group = epoch == 0 or window >= groups
    seen = ~np.isnan(s)
    value = np.where(seen, s, F32(s[seen].max()) if seen.any() else F32(0)).astype(np.float64)
    info = {"forced": int(forced.sum()), "window": (start, window), "every_group": every_group}
    ones = np.ones(n, F32)
    if not opts["exact_budget"]:
        # The subset is random: only epoch 0 (every cluster) is a closed form.
        if every_group:
            return Expected(forced.copy(), _empty(n), 0, ~forced, room, 0.0, ones,
                            np.where(forced, 1.0, room / max(n - forced.sum(), 1)), k, info, "seta")
        return Expected(forced.copy(), _empty(n), 0, ~forced, None, math.nan, ones, np.full(n, np.nan), None, info,
                        "seta")
    pool = ~forced
    lo, hi = value[pool].min(), value[pool].max()
    if every_group or not hi > lo:
        in_window = pool.copy()
        info["ambiguous"] = False
    else:
        width = (hi - lo) / SETA_BINS
        bins = np.clip(((value - lo) / width), 0, SETA_BINS - 1).astype(np.int64)
        possible = possible_clusters(bins[pool], groups)
        inside = {b: all(start <= c < start + window for c in cs) for b, cs in possible.items()}
        outside = {b: all(not (start <= c < start + window) for c in cs) for b, cs in possible.items()}
        info["ambiguous"] = any(not (inside[b] or outside[b]) for b in possible)
        in_window = np.zeros(n, bool)
        in_window[pool] = np.array([inside[b] for b in bins[pool]])
    w = int(in_window.sum())
    if w >= room:
        return Expected(forced.copy(), _empty(n), 0, in_window, room, 0.0, ones,
                        np.where(forced, 1.0, np.where(in_window, room / max(w, 1), 0.0)), k, info, "seta")
    others = pool & ~in_window
    return Expected(forced | in_window, _empty(n), 0, others, room - w, 0.0, ones,
                    np.where(forced | in_window, 1.0, (room - w) / max(others.sum(), 1)), k, info, "seta")


def assert_matches(exp: Expected, ids: np.ndarray, weights: np.ndarray, n: int, where: str = ""):
    """Asserts that one draw (kept ids and their weights) is one the reference allows: every sure
    sample kept, exactly the ranked number of tied ones, nothing the rule excludes, the budget, and
    each kept sample's weight to the bit. Returns (kept mask, weight per sample)."""
    assert len(np.unique(ids)) == len(ids), f"{where}: an id kept twice"
    kept = np.zeros(n, bool)
    kept[ids] = True
    w = np.zeros(n, np.float32)
    w[ids] = weights
    dropped = exp.must & ~kept
    assert not dropped.any(), f"{where}: samples the rule must keep were dropped: {np.flatnonzero(dropped)[:10]}"
    in_ties = int((kept & exp.tied).sum())
    assert in_ties >= exp.tie_draws, f"{where}: {in_ties} of the tied samples kept, the rule ranks {exp.tie_draws}"
    outside = kept & ~(exp.must | exp.tied | exp.rest)
    assert not outside.any(), f"{where}: kept samples the rule excludes: {np.flatnonzero(outside)[:10]}"
    if not exp.rest_draws:
        assert in_ties == exp.tie_draws, f"{where}: {in_ties} tied kept, expected {exp.tie_draws}"
    if exp.count is not None:
        assert len(ids) == exp.count, f"{where}: kept {len(ids)}, the budget is {exp.count}"
    known = ~np.isnan(exp.weight) & kept
    assert np.array_equal(w[known], exp.weight[known]), f"{where}: weights {w[known][:8]} != {exp.weight[known][:8]}"
    return kept, w


def counts_after(state: State, kept: np.ndarray):
    """times_selected and idle after a counted selection keeping `kept` (both saturate at 65535)."""
    times = np.minimum(state.times_selected.astype(np.int64) + kept, 0xFFFF).astype(np.uint16)
    idle = np.where(kept, 0, np.minimum(state.idle.astype(np.int64) + 1, 0xFFFF)).astype(np.uint16)
    return times, idle
