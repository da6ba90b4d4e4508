"""The one-thread-or-all choice (core/parallel.h PathClock) on given costs: it settles on the faster
way, counts a heavy tail in full, gets over a single slow call, follows a change of load, and the
tries of the slower way cost a bounded share of the time."""
import numpy as np
import pytest

from emp_data import _C


def trace(one, all_, **kw):
    ways, _ = _C._path_clock_trace(np.asarray(one, float).tolist(), np.asarray(all_, float).tolist(), **kw)
    return np.array(ways)


def spent(ways, one, all_):
    return float(np.where(ways == 1, all_, one).sum())


def test_it_settles_on_the_faster_way_and_trying_the_other_costs_little():
    n = 20_000
    for one, all_ in ((1.0, 0.4), (1.0, 5.0)):        # idle: threads pay; loaded: they wait for a core
        a, b = np.full(n, one), np.full(n, all_)
        ways = trace(a, b)
        best = min(one, all_) * n
        # The first calls measure both ways; afterwards a try of the slower way comes once the
        # faster has spent at least 32 times what the try costs, and each confirmed try doubles that.
        assert spent(ways, a, b) <= best * (1 + 1 / 32) + 2 * max(one, all_)


def test_all_threads_must_win_by_a_margin():
    n = 5000
    ways = trace(np.full(n, 1.0), np.full(n, 0.9))    # 10% faster: inside the 15% margin
    assert ways[10:].mean() < 0.05
    ways = trace(np.full(n, 1.0), np.full(n, 0.7))
    assert ways[10:].mean() > 0.95


def test_a_heavy_tail_counts_in_full():
    # Under load the threaded way is usually fast but every 30th call waits a scheduler slice: its
    # mean (3.8) is what it costs, not its usual 0.5.
    n = 20_000
    one = np.full(n, 1.0)
    all_ = np.where(np.arange(n) % 30 == 7, 100.0, 0.5)
    ways = trace(one, all_)
    assert ways[100:].mean() < 0.02
    assert spent(ways, one, all_) <= 1.05 * n


def test_a_slow_call_of_one_thread_does_not_hand_the_calls_to_threads():
    n = 20_000
    one, all_ = np.full(n, 1.0), np.full(n, 3.0)
    one[1000] = 200.0                                 # the process lost its core for a long stretch
    ways = trace(one, all_)
    assert ways[900:].mean() < 0.01                   # only the periodic tries of all threads
    assert spent(ways, one, all_) <= one.sum() * (1 + 2 / 32)


def test_one_thread_losing_its_core_now_and_then_keeps_the_calls():
    # Beside busy DataLoader workers the process loses its core every so often, whichever way it
    # runs: those stalls say nothing about which way is faster.
    n = 20_000
    stalled = np.arange(n) % 40 == 13
    one = np.where(stalled, 60.0, 1.0)
    all_ = np.where(stalled, 60.0, 2.5)
    ways = trace(one, all_)
    assert ways[100:].mean() < 0.02
    assert spent(ways, one, all_) <= one.sum() * 1.05


def test_a_change_of_load_is_followed():
    n = 20_000
    one = np.full(n, 1.0)
    all_ = np.where(np.arange(n) < 10_000, 0.4, 6.0)  # other processes take the cores at call 10000
    ways = trace(one, all_)
    assert ways[9000:10_000].mean() > 0.95
    assert ways[10_000:10_010].sum() <= 3             # a few slow calls, then one thread
    assert ways[10_010:].mean() < 0.01
    all_back = np.where(np.arange(n) < 10_000, 6.0, 0.4)   # and when they leave, threads come back
    ways = trace(one, all_back)
    assert ways[:10_000].mean() < 0.05
    # The next try of all threads comes once one thread has spent up to 256 times a try's cost.
    back = 10_000 + int(np.argmax(ways[10_000:] == 1))
    assert back - 10_000 <= 256 * 6.0 + 1
    assert ways[15_000:].mean() > 0.95                # each faster try halves the weight of the old cost


def test_the_update_keeps_a_clock_per_call_size_and_measures_both_ways():
    from emp_data.store.host import ScoreStore

    # 2^16 ids are applied at once (smaller calls wait in the log). Clocks live for the process: on a
    # store of 3 samples no other test makes calls of this size, so this clock starts fresh.
    n, size = 3, 1 << 16
    store = ScoreStore(n)
    ids = np.random.default_rng(0).integers(0, n, size)
    before = _C._update_clock_state(size, n)
    # One thread, then all threads, twice each (a way's first call is counted, not measured), then
    # they alternate until each way has three measured calls.
    for _ in range(8):
        store.update(ids, np.ones(size, np.float32))
    state = _C._update_clock_state(size, n)
    ran = {way: state[f"calls_{way}"] - before[f"calls_{way}"] for way in ("one", "all")}
    if _C.get_num_threads() > 1:
        assert state["cost_one"] > 0 and state["cost_all"] > 0 and 32 <= state["explore_ratio"] <= 256
        assert ran["one"] == 4 and ran["all"] == 4   # every call counted, on the way it ran
        assert state["seconds_one"] > 0 and state["seconds_all"] > 0
    else:
        assert state["cost_all"] == 0 and state["calls_all"] == 0


def test_a_cold_first_call_does_not_decide():
    # The first call of a size pays for cold caches and page faults; one thread is the faster way.
    n = 5000
    one, all_ = np.full(n, 1.0), np.full(n, 4.0)
    one[0] = 50.0
    ways = trace(one, all_)
    assert ways[10:].mean() < 0.01
    assert spent(ways, one, all_) <= n * (1 + 3 / 32) + 50.0 + 3 * 4.0


def test_a_selection_clock_runs_its_first_calls_on_every_core():
    # A selection runs once an epoch: until both ways are measured, its clock runs all threads
    # (counted), one thread (measured: the first call warmed the caches), all threads (measured),
    # then keeps the faster: one of its first three calls runs on one thread.
    one, all_ = np.full(40, 2.0), np.full(40, 1.0)
    ways = trace(one, all_, threads_first=True)
    assert list(ways[:3]) == [1, 0, 1]
    assert ways[3:].mean() > 0.9             # all threads, faster here, keep the calls
    assert list(trace(one, all_)[:2]) == [0, 0]  # the update's clock starts with one thread
    # When one thread is the faster way, the selection clock finds it too.
    ways = trace(all_, one, threads_first=True)
    assert list(ways[:3]) == [1, 0, 1]
    assert ways[3:].mean() < 0.1


def test_what_a_threaded_try_leaves_behind_is_charged_to_it():
    # Under load a threaded call (350 us) also slows the one-thread calls of the next 20 ms by 1 ms
    # each (its idle thread spins, the scheduler favours the busy process). Left uncharged, the slow
    # one-thread calls that follow each try make one thread look slower than threads, and the clock
    # stays threaded (4.4x one thread's time). Charged to the threaded way, it makes the tries rare:
    # the calls take at most 2% more than one thread alone would.
    n = 100_000
    one, all_ = np.full(n, 80e-6), np.full(n, 350e-6)
    ways, took = _C._path_clock_trace(one.tolist(), all_.tolist(), aftermath=1e-3, aftermath_window=0.02)
    assert sum(took) <= 1.02 * one.sum()
    assert sum(ways) <= 8
    # Without an aftermath nothing is charged: tries come as often as the explore ratio allows.
    ways, took = _C._path_clock_trace(one.tolist(), all_.tolist())
    assert sum(took) <= one.sum() * (1 + 1 / 32) + 2 * 350e-6


def test_one_call_under_load_does_not_decide_an_update_class():
    # Under load one thread costs 3 and all threads 7, but the first measured one-thread call lost its
    # core (9) and the first measured threaded call found both cores free (2.5). One measurement of
    # each would hand the calls to threads; the update's clocks measure each way three times.
    n = 200
    one, all_ = np.full(n, 3.0), np.full(n, 7.0)
    one[1], all_[3] = 9.0, 2.5
    ways = trace(one, all_, min_measured=3)
    assert list(ways[:8]) == [0, 0, 1, 1, 0, 1, 0, 1]     # alternating until each way has 3 measured
    assert ways[8:40].sum() == 0
    assert trace(one, all_)[4:20].all()                   # what one measurement of each decides


def test_a_stall_in_the_warm_up_does_not_hand_an_update_class_to_threads():
    # At 1e8 samples beside a busy core one thread applies the log in 3 ms and all threads in 6, but
    # the first measured one-thread call stalled for 40. A mean of the three warm-up calls (15) would
    # hand the calls to threads, and a try of one thread would look so dear that it came only after
    # some 80 threaded calls; the median of the three (3) keeps them on one thread.
    n = 200
    one, all_ = np.full(n, 3.0), np.full(n, 6.0)
    one[1] = 40.0
    ways = trace(one, all_, min_measured=3)
    assert list(ways[:8]) == [0, 0, 1, 1, 0, 1, 0, 1]
    assert ways[8:].mean() < 0.02                         # only the periodic tries of all threads
    # A way's warm-up median that is too low is corrected by the calls it then gets: all threads'
    # warm-up missed their tail (every 10th call takes 60), and the calls go back to one thread.
    all_ = np.where(np.arange(n) % 10 == 9, 60.0, 2.0)
    ways = trace(np.full(n, 3.0), all_, min_measured=3)
    assert ways[8] == 1
    assert ways[12:].mean() < 0.05


def test_min_measured_is_bounded_by_the_warm_up_samples_kept():
    with pytest.raises(ValueError, match="min_measured must be 1 to 3"):
        _C._path_clock_trace([1.0], [1.0], min_measured=4)


def test_every_application_of_the_log_runs_on_the_full_logs_clock():
    # A log applied before it is full (a read: once an epoch) costs about the same per entry as a
    # full one, and is too rare to teach a clock of its own.
    from emp_data.store.host import ScoreStore

    n, calls, size = 300_000, 40, 4096
    store = ScoreStore(n)
    rng = np.random.default_rng(1)
    full, partial = _C.UPDATE_LOG_ENTRIES, calls * size            # 163840 entries: a class of its own
    before = {c: _C._update_clock_state(c, n) for c in (full, partial)}
    for _ in range(calls):
        store.update(rng.integers(0, n, size), np.ones(size, np.float32))
    store.settle()
    after = {c: _C._update_clock_state(c, n) for c in (full, partial)}
    ran = {c: sum(after[c][k] - before[c][k] for k in ("calls_one", "calls_all")) for c in (full, partial)}
    if _C.get_num_threads() > 1:
        assert ran == {full: 1, partial: 0}
