// pybind11 bindings: the thread count, the parallel mode and the PathClocks' state (for tests and
// diagnosis).
#include "bindings/common.h"

#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "core/path_clock.h"
#include "core/update.h"

namespace emp_bind {

using namespace emp;

void bind_threads(py::module_& m) {
  m.def("set_num_threads", &set_threads, py::arg("n"));
  // Tests and benchmarks: force one thread or all in update (>= 4096 ids) and select.
  py::enum_<ParallelMode>(m, "ParallelMode")
      .value("AUTO", ParallelMode::Auto)
      .value("SERIAL", ParallelMode::Serial)
      .value("THREADED", ParallelMode::Threaded);
  m.def("set_parallel_mode", &set_parallel_mode, py::arg("mode"));
  m.def("parallel_mode", &parallel_mode);
  // Tests and diagnosis: the update's clock for calls of `count` ids on `n` samples (see store.h).
  m.def("_update_clock_state", [](size_t count, uint64_t n) {
    const ClockState c = update_clock_state(count, n);
    py::dict d;
    d["cost_one"] = c.cost[0];
    d["cost_all"] = c.cost[1];
    d["explore_ratio"] = c.explore_ratio;
    d["calls_one"] = c.calls[0];
    d["calls_all"] = c.calls[1];
    d["seconds_one"] = c.seconds[0];
    d["seconds_all"] = c.seconds[1];
    return d;
  }, py::arg("count"), py::arg("n"));
  // Tests: a fresh PathClock over calls of one unit that take one[i] or all[i] seconds, on a simulated
  // clock; a one-thread call starting within `aftermath_window` seconds of a threaded call takes
  // `aftermath` seconds more (what threads leave behind under load); `min_measured` as the clock's.
  // Returns the way each call took (0: one thread, 1: all) and the seconds it took.
  m.def("_path_clock_trace", [](const std::vector<double>& one, const std::vector<double>& all, bool threads_first,
                                double aftermath, double aftermath_window, int min_measured) {
    if (one.size() != all.size()) throw std::invalid_argument("_path_clock_trace: one and all differ in length");
    if (min_measured < 1 || min_measured > PathClock::kMaxWarmup)
      throw std::invalid_argument("_path_clock_trace: min_measured must be 1 to " + std::to_string(PathClock::kMaxWarmup));
    PathClock clock;
    clock.threads_first = threads_first;
    clock.min_measured = min_measured;
    std::vector<int> ways(one.size());
    std::vector<double> took(one.size());
    double now = 0.0, threaded_end = -1e300;
    for (size_t i = 0; i < one.size(); ++i) {
      bool exploring = false;
      const bool threaded = clock.pick_threaded(1.0, exploring);
      took[i] = threaded ? all[i] : one[i] + (now - threaded_end < aftermath_window ? aftermath : 0.0);
      now += took[i];
      if (threaded) threaded_end = now;
      clock.record(threaded, took[i], 1.0, exploring, now);
      ways[i] = threaded ? 1 : 0;
    }
    return py::make_tuple(ways, took);
  }, py::arg("one"), py::arg("all"), py::arg("threads_first") = false, py::arg("aftermath") = 0.0,
     py::arg("aftermath_window") = 0.0, py::arg("min_measured") = 1);
  m.def("get_num_threads", &max_threads);
  m.def("has_openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
}

}  // namespace emp_bind
