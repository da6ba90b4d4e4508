// PathClock: whether a call runs on one thread or all, measured on this process's own calls; and
// with_measured_threads, which runs a call the way its clock (or the forced ParallelMode) says.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "core/parallel.h"

namespace emp {

// One thread or all: which is faster depends on whether the other threads find a free core
// (DataLoader workers decode on the same cores), and a fork-join whose threads wait for a core costs
// more than it saves. So a kind of call keeps a PathClock: both ways are timed on this process's own
// calls, and the faster is used. Under load the threaded way is usually about as fast as one thread
// but now and then waits a whole scheduler slice at its closing barrier (a few percent of calls at
// 100 times the usual cost), and that tail is most of its cost: so a way's cost is the mean over
// its recent calls (decayed sums of time and of units: a median would miss the tail), and all
// threads must beat one thread by kMargin to be chosen. One thread has no barrier: its slow calls
// are the process losing its core, which would have stalled threads too, so they count at most
// kOneThreadClip times its usual cost, and its history ages while all threads run, so that one try
// stands for it. A way's first call (cold caches, page faults) is counted, not measured. What a
// threaded call costs the one-thread calls right after it is charged to it (kAftermath).
// A decision rests on `min_measured` measured calls of each way (alternated until then), and each
// way's cost starts from the median of them: a single call under load can land on either side of the
// other way's cost, and a cost set too high lasts (the clock stops running that way, and tries it
// rarely because a try looks dear), where one set too low is corrected by the calls it then gets.
// The slower way is tried again once the faster has spent `explore_ratio` times what that try
// costs, so trying costs at most 1 / explore_ratio of the time; each try that confirms it slower
// doubles the ratio (up to kMaxExplore), a change of the faster way resets it, and a try faster than
// the other way halves the weight of the tried way's history, so a change of load is followed
// within a few tries. Every parallel loop here gives the same result for any thread count.
struct PathClock {
  static constexpr float kMinExplore = 32.0f, kMaxExplore = 256.0f, kDecay = 0.95f, kMargin = 0.85f,
                         kOneThreadClip = 4.0f;
  // Under load a threaded call also slows the one-thread calls that follow it (its idle thread
  // spins, and the scheduler then favours the process it kept off a core): what one-thread calls
  // starting within kAftermath seconds of a threaded call take beyond their usual cost is charged
  // to the threaded way.
  static constexpr double kAftermath = 0.02;
  std::atomic<double> threaded_end{-1e300};  // when the last threaded call ended (steady seconds)
  std::atomic<float> seconds[2] = {};  // one thread, all threads: decayed sums of seconds ...
  std::atomic<float> work[2] = {};     // ... and of units of work (0: not measured yet)
  std::atomic<float> spent{0.0f};    // units x cost spent on the faster way since the slower was tried
  std::atomic<float> explore_ratio{kMinExplore};
  std::atomic<bool> threaded_faster{false};  // the way the last choice found faster
  // Which way runs before both are measured. Threads first suits a call made a few times in a job
  // (a selection, once an epoch, seconds each at scale): its calls run threaded, counted; one thread,
  // measured; threaded, measured; then the faster way, so one of its first three calls runs on one
  // thread. The update's clock starts with one thread.
  bool threads_first = false;
  static constexpr int kMaxWarmup = 3;
  int min_measured = 1;  // measured calls of each way before the costs decide (beyond kMaxWarmup: kMaxWarmup)
  std::atomic<uint32_t> measured[2] = {};
  std::atomic<float> warmup_seconds[2][kMaxWarmup] = {};  // each way's measured warm-up calls:
  std::atomic<float> warmup_units[2][kMaxWarmup] = {};    // their seconds and units
  std::atomic<uint64_t> calls[2] = {};  // calls run each way, and their seconds: what happened, for
  std::atomic<double> total[2] = {};    // diagnosis (not decayed; calls also orders a cold start)

  float cost(int way) const {
    const float u = work[way].load(std::memory_order_relaxed);
    return u > 0.0f ? seconds[way].load(std::memory_order_relaxed) / u : 0.0f;
  }
  static bool faster_threaded(float one, float all) { return all < kMargin * one; }

  // The median seconds per unit of a way's warm-up calls (the lower middle of an even count).
  // Calls made at once on one clock (selections of two stores) may leave a sample unwritten: it is
  // left out, and with none the mean stands (-1).
  float warmup_median(int way) const {
    float per_unit[kMaxWarmup];
    int count = 0;
    for (int i = 0; i < warmup_calls(); ++i) {
      const float units = warmup_units[way][i].load(std::memory_order_relaxed);
      if (units > 0.0f) per_unit[count++] = warmup_seconds[way][i].load(std::memory_order_relaxed) / units;
    }
    if (count == 0) return -1.0f;
    std::sort(per_unit, per_unit + count);
    return per_unit[(count - 1) / 2];
  }
  int warmup_calls() const { return min_measured < kMaxWarmup ? min_measured : kMaxWarmup; }

  // Which way to run a call of `units` units; `exploring` says whether it is a try of the slower way.
  bool pick_threaded(double call_units, bool& exploring) {
    exploring = false;
    const float one = cost(0), all = cost(1);
    const uint32_t m_one = measured[0].load(std::memory_order_relaxed), m_all = measured[1].load(std::memory_order_relaxed);
    const uint32_t warmup = static_cast<uint32_t>(warmup_calls());
    if (m_one < warmup || m_all < warmup) {
      // Warming up: the way measured less runs; a tie goes to one thread, except a threads-first
      // clock's very first call.
      if (threads_first && calls[1].load(std::memory_order_relaxed) == 0) return true;
      return m_all < m_one;
    }
    const bool faster = faster_threaded(one, all);
    if (faster != threaded_faster.exchange(faster, std::memory_order_relaxed)) {
      // The faster way changed: the tries confirmed of the old one say nothing of the new.
      explore_ratio.store(kMinExplore, std::memory_order_relaxed);
      spent.store(0.0f, std::memory_order_relaxed);
    }
    const float u = static_cast<float>(call_units);
    const float so_far = spent.load(std::memory_order_relaxed) + u * (faster ? all : one);
    if (so_far >= explore_ratio.load(std::memory_order_relaxed) * u * (faster ? one : all)) {
      spent.store(0.0f, std::memory_order_relaxed);
      exploring = true;
      return !faster;
    }
    spent.store(so_far, std::memory_order_relaxed);
    return faster;
  }

  // `end`: when the call ended, in seconds of a steady clock (any origin).
  void record(bool threaded, double elapsed, double call_units, bool exploring, double end) {
    const int way = threaded ? 1 : 0;
    const bool after_threaded = !threaded && end - elapsed - threaded_end.load(std::memory_order_relaxed) < kAftermath;
    if (threaded) threaded_end.store(end, std::memory_order_relaxed);
    const uint64_t earlier = calls[way].fetch_add(1, std::memory_order_relaxed);
    total[way].store(total[way].load(std::memory_order_relaxed) + elapsed, std::memory_order_relaxed);
    // A way's first call is counted, not measured (see above); but a threads-first clock's try of one
    // thread comes after a threaded call warmed the caches (and started the threads), so it counts.
    if (earlier == 0 && !(threads_first && way == 0)) return;
    const uint32_t index = measured[way].fetch_add(1, std::memory_order_relaxed);
    if (threaded && work[0].load(std::memory_order_relaxed) > static_cast<float>(call_units) / 16.0f) {
      // One thread's history ages while all threads run (down to 1/16 of a call's weight). The
      // threaded history does not age while one thread runs: a single try cannot show its tail.
      seconds[0].store(kDecay * seconds[0].load(std::memory_order_relaxed), std::memory_order_relaxed);
      work[0].store(kDecay * work[0].load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    const float other = cost(1 - way);
    float t = seconds[way].load(std::memory_order_relaxed), u = work[way].load(std::memory_order_relaxed);
    const float n = static_cast<float>(call_units);
    // A slow one-thread call counts at most kOneThreadClip times the usual cost; a threaded one in full.
    const float usual = cost(way);
    float s = static_cast<float>(elapsed);
    if (way == 0 && after_threaded && usual > 0.0f && other > 0.0f && s > usual * n) {
      const float excess = s - usual * n;  // the threaded call's
      seconds[1].store(seconds[1].load(std::memory_order_relaxed) + excess, std::memory_order_relaxed);
      const uint32_t threaded_warmups = measured[1].load(std::memory_order_relaxed);
      if (threaded_warmups >= 1 && threaded_warmups < static_cast<uint32_t>(warmup_calls())) {
        std::atomic<float>& last = warmup_seconds[1][threaded_warmups - 1];  // the median is still to come
        last.store(last.load(std::memory_order_relaxed) + excess, std::memory_order_relaxed);
      }
      s = usual * n;
    }
    if (way == 0 && usual > 0.0f && s > kOneThreadClip * usual * n) s = kOneThreadClip * usual * n;
    if (exploring && other > 0.0f && s < other * n) {
      t *= 0.5f;   // a try that beats the other way: its history weighs half
      u *= 0.5f;
    }
    seconds[way].store(kDecay * t + s, std::memory_order_relaxed);
    work[way].store(kDecay * u + n, std::memory_order_relaxed);
    if (index < static_cast<uint32_t>(warmup_calls())) {
      warmup_seconds[way][index].store(s, std::memory_order_relaxed);
      warmup_units[way][index].store(n, std::memory_order_relaxed);
      if (index + 1 == static_cast<uint32_t>(warmup_calls())) {  // the way's warm-up is done
        const float median = warmup_median(way);
        if (median >= 0.0f)  // its cost starts from the median
          seconds[way].store(median * work[way].load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
    }
    if (exploring && other > 0.0f) {
      const float mine = cost(way);
      const bool still_slower = threaded ? !faster_threaded(other, mine) : faster_threaded(mine, other);
      const float ratio = explore_ratio.load(std::memory_order_relaxed);
      explore_ratio.store(still_slower ? (ratio * 2 < kMaxExplore ? ratio * 2 : kMaxExplore) : kMinExplore,
                          std::memory_order_relaxed);
    }
  }
};

inline int log2_floor(uint64_t x) { return 63 - __builtin_clzll(x | 1); }

// Auto: the PathClocks choose (the default). Serial / Threaded force one way for every timed call
// (update and select), so tests and benchmarks can compare the two.
enum class ParallelMode { Auto = 0, Serial = 1, Threaded = 2 };

inline std::atomic<int>& parallel_mode_flag() {
  static std::atomic<int> mode{0};
  return mode;
}
inline ParallelMode parallel_mode() { return static_cast<ParallelMode>(parallel_mode_flag().load(std::memory_order_relaxed)); }
inline void set_parallel_mode(ParallelMode mode) {
  parallel_mode_flag().store(static_cast<int>(mode), std::memory_order_relaxed);
}

// A steady-clock time in seconds (any origin): what PathClock::record and threaded_end compare.
inline double steady_seconds(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// Runs fn() with one thread or all (team_size() inside it), as `clock` says or the forced mode,
// and records its time per unit of work (`units`: ids for an update, 1 for a selection).
template <class Fn>
auto with_measured_threads(PathClock& clock, double units, Fn fn) {
  const ParallelMode mode = parallel_mode();
  if (mode != ParallelMode::Auto) {
    CallThreads scope(mode == ParallelMode::Threaded ? 0 : 1);
    if (mode == ParallelMode::Serial) return fn();
    auto out = fn();
    // A forced threaded call leaves the same aftermath on the one-thread calls after it.
    clock.threaded_end.store(steady_seconds(std::chrono::steady_clock::now()), std::memory_order_relaxed);
    return out;
  }
  bool exploring = false;
  const bool threaded = max_threads() > 1 && clock.pick_threaded(units, exploring);
  CallThreads scope(threaded ? 0 : 1);
  const auto start = std::chrono::steady_clock::now();
  auto out = fn();
  if (max_threads() > 1) {
    const auto end = std::chrono::steady_clock::now();
    clock.record(threaded, std::chrono::duration<double>(end - start).count(), units, exploring, steady_seconds(end));
  }
  return out;
}

}  // namespace emp
