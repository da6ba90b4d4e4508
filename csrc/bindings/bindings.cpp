// pybind11 bindings. Inputs arrive validated and contiguous from the Python layer (emp_data/*.py);
// every loop below runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <memory>
#include <utility>
#include <vector>

#include "core/file_util.h"
#include "selection/kmeans.h"
#include "core/parallel.h"
#include "selection/partition.h"
#include "selection/policies.h"
#include "webdataset/key_table.h"
#include "core/rng.h"
#include "selection/sampling.h"
#include "core/store.h"
#include "core/update.h"
#include "webdataset/tar_index.h"

namespace py = pybind11;
using namespace emp;

namespace {

// Hands a vector's buffer to numpy without copying; the capsule frees it with the array.
template <class Vec>
py::array_t<typename Vec::value_type> to_numpy(Vec&& v) {
  using T = typename Vec::value_type;
  auto owner = std::make_unique<Vec>(std::move(v));
  T* data = owner->data();
  const py::ssize_t size = static_cast<py::ssize_t>(owner->size());
  py::capsule free_when_done(owner.get(), [](void* p) { delete static_cast<Vec*>(p); });
  owner.release();  // now owned by the capsule
  return py::array_t<T>({size}, {static_cast<py::ssize_t>(sizeof(T))}, data, free_when_done);
}

// A numpy view into store memory that keeps the store object alive.
template <class T>
py::array_t<T> view(const py::object& owner, const T* data, uint64_t n, size_t stride) {
  return py::array_t<T>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(stride)}, data, owner);
}

using IdArray = py::array_t<int64_t, py::array::c_style>;
using FloatArray = py::array_t<float, py::array::c_style>;
using SegmentArray = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// A rank's part from Python: segments as rows (local_begin, global_begin, length, stride), and the
// reductions as callables over numpy arrays (torch.distributed, emp_data/sharded.py), which C++
// calls with the GIL taken back. None for `sum` means one process.
Partition make_partition(uint64_t local_n, const SegmentArray& segments, uint64_t global_n, uint64_t salt,
                         const py::object& sum, const py::object& max, const py::object& concat) {
  if (segments.ndim() != 2 || segments.shape(1) != 4)
    throw std::invalid_argument("segments must have shape (K, 4): local_begin, global_begin, length, stride");
  std::vector<IdSegment> segs(static_cast<size_t>(segments.shape(0)));
  const uint64_t* row = segments.data();
  for (size_t s = 0; s < segs.size(); ++s, row += 4) segs[s] = IdSegment{row[0], row[1], row[2], row[3]};
  Partition part{IdMap(std::move(segs), local_n, global_n), Collective{}, salt};
  if (sum.is_none()) return part;
  if (max.is_none() || concat.is_none()) throw std::invalid_argument("give all three reductions (sum, max, concat) or none");
  auto call = [](const py::object& fn, auto* values, size_t n, const char* what) {
    using T = std::remove_pointer_t<decltype(values)>;
    py::gil_scoped_acquire gil;
    py::array_t<T> in(static_cast<py::ssize_t>(n));
    std::memcpy(in.mutable_data(), values, n * sizeof(T));
    const auto out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(fn(in));
    if (!out || static_cast<size_t>(out.size()) != n)
      throw std::runtime_error(std::string("partitioned select: the ") + what + " reduction returned a wrong-sized array");
    std::memcpy(values, out.data(), n * sizeof(T));
  };
  part.ranks.sum = [sum, call](int64_t* v, size_t n) { call(sum, v, n, "sum"); };
  part.ranks.max = [max, call](double* v, size_t n) { call(max, v, n, "max"); };
  part.ranks.concat = [concat](const std::vector<int64_t>& v) {
    py::gil_scoped_acquire gil;
    py::array_t<int64_t> in(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(in.mutable_data(), v.data(), v.size() * sizeof(int64_t));
    const auto out = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(concat(in));
    if (!out) throw std::runtime_error("partitioned select: the concat reduction did not return an array");
    return std::vector<int64_t>(out.data(), out.data() + out.size());
  };
  return part;
}

py::dict threshold_info(const RankThreshold& t) {
  py::dict d;
  d["key"] = t.key;
  d["id"] = t.id;
  d["all"] = t.all;
  d["none"] = t.none;
  d["eligible"] = t.eligible;
  return d;
}

py::dict selection_info(const Selection& sel) {
  py::dict info;
  info["unseen"] = sel.unseen;
  info["above_threshold"] = sel.above_threshold;
  info["forced"] = sel.forced;
  info["threshold"] = sel.threshold;
  info["budget_exceeded"] = sel.budget_exceeded;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "emp_data C++ core: per-sample score store, pruning policies, weighted sampling";

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
  // `aftermath` seconds more (what threads leave behind under load). Returns the way each call took
  // (0: one thread, 1: all) and the seconds it took.
  m.def("_path_clock_trace", [](const std::vector<double>& one, const std::vector<double>& all, bool threads_first,
                                double aftermath, double aftermath_window) {
    if (one.size() != all.size()) throw std::invalid_argument("_path_clock_trace: one and all differ in length");
    PathClock clock;
    clock.threads_first = threads_first;
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
     py::arg("aftermath_window") = 0.0);
  m.def("get_num_threads", &max_threads);
  m.def("has_openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  // File I/O failures (disk full, permissions, a missing file) are OSError with their errno.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const IoError& e) {
      py::object err = py::module_::import("builtins").attr("OSError")(e.error_number, e.what());
      PyErr_SetObject(PyExc_OSError, err.ptr());
    }
  });
  m.attr("FORMAT_VERSION") = kFormatVersion;
  m.attr("MAX_SAMPLES") = kMaxSamples;
  m.attr("BYTES_PER_SAMPLE") = kBytesPerSample;

  py::enum_<Rule>(m, "Rule")
      .value("FULL", Rule::Full)
      .value("SOFT", Rule::Soft)
      .value("TOPK", Rule::TopK)
      .value("WEIGHTED", Rule::Weighted)
      .value("SWEEP", Rule::Sweep)
      .value("SETA", Rule::Seta);
  py::enum_<ScoreKind>(m, "ScoreKind")
      .value("LOSS", ScoreKind::Loss)
      .value("EMP", ScoreKind::Emp)
      .value("MEAN", ScoreKind::Mean)
      .value("UCB", ScoreKind::Ucb);

  py::class_<SelectConfig>(m, "SelectConfig")
      .def(py::init<>())
      .def_readwrite("rule", &SelectConfig::rule)
      .def_readwrite("score", &SelectConfig::score)
      .def_readwrite("prune_ratio", &SelectConfig::prune_ratio)
      .def_readwrite("beta", &SelectConfig::beta)
      .def_readwrite("loss_weight", &SelectConfig::loss_weight)
      .def_readwrite("ucb_c", &SelectConfig::ucb_c)
      .def_readwrite("explore", &SelectConfig::explore)
      .def_readwrite("alpha", &SelectConfig::alpha)
      .def_readwrite("exact_budget", &SelectConfig::exact_budget)
      .def_readwrite("normalize", &SelectConfig::normalize)
      .def_readwrite("max_gap", &SelectConfig::max_gap)
      .def_readwrite("groups", &SelectConfig::groups)
      .def_readwrite("window", &SelectConfig::window);

  py::class_<Store>(m, "Store")
      .def_static("create", &Store::create, py::arg("num_samples"), py::call_guard<py::gil_scoped_release>())
      .def_static("create_mapped", &Store::create_mapped, py::arg("path"), py::arg("num_samples"),
                  py::call_guard<py::gil_scoped_release>())
      .def_static("open", &Store::open, py::arg("path"), py::arg("readonly"), py::call_guard<py::gil_scoped_release>())
      .def_static("load", &Store::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("save",
           [](const Store& s, const std::string& path, const py::bytes& metadata) {
             std::string meta = metadata;
             py::gil_scoped_release release;
             s.save(path, meta);
           },
           py::arg("path"), py::arg("metadata"))
      .def_property_readonly("metadata", [](const Store& s) { return py::bytes(s.metadata()); })
      .def_property_readonly("size", &Store::size)
      .def_property_readonly("nbytes", &Store::nbytes)
      .def_property_readonly("readonly", &Store::readonly)
      .def_property_readonly("mapped", &Store::mapped)
      .def_property_readonly("path", &Store::path)
      .def("reset", &Store::reset, py::call_guard<py::gil_scoped_release>())
      .def("begin_weights_write", &Store::begin_weights_write)
      .def("end_weights_write", &Store::end_weights_write, py::arg("epoch"))
      .def("stamped_epoch", &Store::stamped_epoch, py::arg("timeout_s"), py::call_guard<py::gil_scoped_release>())
      .def("read_weights",
           [](const Store& s, uint64_t lo, uint64_t hi, double timeout_s) {
             if (lo > hi || hi > s.size()) throw py::index_error("weight range outside the store");
             std::vector<float> out(hi - lo);
             int64_t epoch;
             {
               py::gil_scoped_release release;
               epoch = s.read_weights(lo, hi, out.data(), timeout_s);
             }
             return py::make_tuple(epoch, to_numpy(std::move(out)));
           },
           py::arg("lo"), py::arg("hi"), py::arg("timeout_s"))
      .def("same_file_as", &Store::same_file_as, py::arg("path"))
      .def("flush", &Store::flush, py::call_guard<py::gil_scoped_release>())
      .def("array",
           [](py::object self, const std::string& name) -> py::array {
             Store& s = self.cast<Store&>();
             const SampleStats* st = s.stats();
             if (name == "loss") return view<float>(self, &st->loss, s.size(), sizeof(SampleStats));
             if (name == "memory") return view<float>(self, &st->memory, s.size(), sizeof(SampleStats));
             if (name == "loss_mean") return view<float>(self, &st->loss_mean, s.size(), sizeof(SampleStats));
             if (name == "loss_var") return view<float>(self, &st->loss_var, s.size(), sizeof(SampleStats));
             if (name == "times_selected") return view<uint16_t>(self, s.times_selected(), s.size(), sizeof(uint16_t));
             if (name == "idle") return view<uint16_t>(self, s.idle(), s.size(), sizeof(uint16_t));
             if (name == "weight") return view<float>(self, s.weight(), s.size(), sizeof(float));
             throw py::value_error("unknown store array '" + name + "'");
           },
           py::arg("name"))
      .def("update",
           [](Store& s, const IdArray& ids, const FloatArray& loss, const py::object& memory, float ema_decay,
              bool skip_nonfinite) {
             const float* mem = nullptr;
             FloatArray mem_arr;
             if (!memory.is_none()) {
               mem_arr = memory.cast<FloatArray>();
               mem = mem_arr.data();
             }
             UpdateResult r;
             {
               py::gil_scoped_release release;
               r = update(s, ids.data(), loss.data(), mem, static_cast<size_t>(ids.size()), ema_decay, skip_nonfinite);
             }
             return py::make_tuple(r.error, r.bad_index, r.skipped);
           },
           py::arg("ids"), py::arg("loss"), py::arg("memory"), py::arg("ema_decay"), py::arg("skip_nonfinite"))
      .def("select",
           [](Store& s, const SelectConfig& cfg, uint64_t seed, uint64_t epoch, bool count, const py::object& segments,
              uint64_t global_n, uint64_t salt, const py::object& sum, const py::object& max, const py::object& concat) {
             // Built and destroyed with the GIL held (it holds Python callables).
             const Partition part = segments.is_none()
                                        ? Partition::whole(s.size())
                                        : make_partition(s.size(), SegmentArray::ensure(segments), global_n, salt, sum, max, concat);
             Selection sel;
             {
               py::gil_scoped_release release;
               // Readers in other processes (stream workers) see this epoch whole or wait for it.
               s.begin_weights_write();
               try {
                 sel = select(s, part, cfg, seed, epoch, count);
               } catch (...) {
                 s.end_weights_write(-1);
                 throw;
               }
               s.end_weights_write(static_cast<int64_t>(epoch));
             }
             return py::make_tuple(to_numpy(std::move(sel.ids)), to_numpy(std::move(sel.weights)), selection_info(sel));
           },
           py::arg("config"), py::arg("seed"), py::arg("epoch"), py::arg("count"), py::arg("segments") = py::none(),
           py::arg("global_n") = 0, py::arg("salt") = 0, py::arg("sum") = py::none(), py::arg("max") = py::none(),
           py::arg("concat") = py::none(),
           "This epoch's kept ids and weights. With `segments` (rows local_begin, global_begin, length, stride) the "
           "store is one rank's part of `global_n` samples and sum/max/concat reduce over the ranks.")
      .def("current_selection",
           [](Store& s, uint64_t seed, uint64_t epoch, const py::object& segments, uint64_t global_n, uint64_t salt) {
             const Partition part = segments.is_none()
                                        ? Partition::whole(s.size())
                                        : make_partition(s.size(), SegmentArray::ensure(segments), global_n, salt,
                                                         py::none(), py::none(), py::none());
             Selection sel;
             {
               py::gil_scoped_release release;
               sel = current_selection(s, part, seed, epoch);
             }
             return py::make_tuple(to_numpy(std::move(sel.ids)), to_numpy(std::move(sel.weights)));
           },
           py::arg("seed"), py::arg("epoch"), py::arg("segments") = py::none(), py::arg("global_n") = 0,
           py::arg("salt") = 0)
      .def("scores", [](const Store& s, const SelectConfig& cfg) {
        std::vector<float> out(s.size());
        {
          py::gil_scoped_release release;
          compute_scores(s, cfg, out.data());
        }
        return to_numpy(std::move(out));
      });

  m.def("sample_weighted",
        [](const py::array_t<double, py::array::c_style>& w, uint64_t k, uint64_t seed, uint64_t epoch) {
          WeightedSample ws;
          {
            py::gil_scoped_release release;
            ws = sample_weighted(w.data(), static_cast<uint64_t>(w.size()), k, seed, epoch);
          }
          return py::make_tuple(to_numpy(std::move(ws.ids)), to_numpy(std::move(ws.inv_prob)), ws.tau);
        },
        py::arg("weights"), py::arg("k"), py::arg("seed"), py::arg("epoch"));

  m.def("histogram_kmeans",
        [](const py::array_t<uint64_t, py::array::c_style>& counts, double lo, double hi, int groups) {
          if (counts.ndim() != 1 || counts.size() < 1) throw py::value_error("counts must be a non-empty 1-D array");
          if (groups < 1 || groups > 1024) throw py::value_error("groups must be in 1..1024");
          if (!(hi > lo)) throw py::value_error("hi must be above lo");
          std::vector<uint64_t> c(counts.data(), counts.data() + counts.size());
          std::vector<uint16_t> out = histogram_kmeans(c, lo, hi, groups);
          return to_numpy(std::move(out));
        },
        py::arg("counts"), py::arg("lo"), py::arg("hi"), py::arg("groups"),
        "SeTa's clustering: each histogram bin's cluster, clusters by ascending centre (for tests)");

  m.def("topk_threshold",
        [](const py::array_t<uint64_t, py::array::c_style>& keys, uint64_t k, int digit_bits, uint64_t gather_limit) {
          const uint64_t* key = keys.data();
          const uint64_t n = static_cast<uint64_t>(keys.size());
          RadixPlan plan = cpu_radix_plan(n);
          if (digit_bits != 0) plan.digit_bits = digit_bits;
          if (gather_limit != 0) plan.gather_limit = gather_limit;
          RankThreshold t;
          {
            py::gil_scoped_release release;
            t = topk_threshold(n, k, [key](uint64_t i) { return key[i]; }, plan);
          }
          return threshold_info(t);
        },
        py::arg("keys"), py::arg("k"), py::arg("digit_bits") = 0, py::arg("gather_limit") = 0,
        "The k-th best (key, id) of `keys` (larger key first, then smaller id; key 0 not eligible), by the "
        "radix selection every top-k uses; digit_bits / gather_limit override its plan (0 = default). For tests.");

  m.def("topk_settled",
        [](const py::array_t<uint64_t, py::array::c_style>& keys, uint64_t k0, uint64_t k1, int digit_bits,
           uint64_t gather_limit) {
          const uint64_t* key = keys.data();
          const uint64_t n = static_cast<uint64_t>(keys.size());
          RadixPlan plan = cpu_radix_plan(n);
          if (digit_bits != 0) plan.digit_bits = digit_bits;
          if (gather_limit != 0) plan.gather_limit = gather_limit;
          std::vector<uint8_t> inside(n);
          std::array<RankThreshold, 2> t;
          {
            py::gil_scoped_release release;
            const Partition part = Partition::whole(n);
            auto key_of = [key](uint64_t i, uint64_t) { return key[i]; };
            std::array<RadixBoundary, 2> bounds = topk_boundaries<2>(part, {k0, k1}, key_of, key_of, plan);
            uint8_t* in = inside.data();
            t = write_settling(part, bounds, key_of, [in](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* th) {
              in[i] = static_cast<uint8_t>(within(kk, static_cast<int64_t>(g), th[0]) |
                                           (within(kk, static_cast<int64_t>(g), th[1]) << 1));
            });
          }
          py::list thresholds;
          for (const RankThreshold& th : t) thresholds.append(threshold_info(th));
          return py::make_tuple(thresholds, to_numpy(std::move(inside)));
        },
        py::arg("keys"), py::arg("k0"), py::arg("k1"), py::arg("digit_bits") = 0, py::arg("gather_limit") = 0,
        "Two top-k thresholds of `keys` settled in the pass that writes (topk_boundaries + write_settling): "
        "the thresholds, and per key bit j set when it is within threshold j. For tests.");
  m.def("topk_settled_uniform",
        [](const py::array_t<uint64_t, py::array::c_style>& keys, uint64_t k, uint64_t eligible) {
          const uint64_t* key = keys.data();
          const uint64_t n = static_cast<uint64_t>(keys.size());
          std::vector<uint8_t> inside(n);
          RankThreshold t;
          bool predicted = false;
          {
            py::gil_scoped_release release;
            const Partition part = Partition::whole(n);
            auto key_of = [key](uint64_t i, uint64_t) { return key[i]; };
            std::array<RadixBoundary, 1> bounds = {uniform_keys_boundary(part, k, eligible, key_of)};
            predicted = bounds[0].predicted;
            uint8_t* in = inside.data();
            t = write_settling(part, bounds, key_of, [in](uint64_t i, uint64_t g, uint64_t kk, const RankThreshold* th) {
              in[i] = static_cast<uint8_t>(within(kk, static_cast<int64_t>(g), th[0]));
            })[0];
          }
          py::dict d = threshold_info(t);
          d["predicted"] = predicted;
          return py::make_tuple(d, to_numpy(std::move(inside)));
        },
        py::arg("keys"), py::arg("k"), py::arg("eligible"),
        "The k-th best of `keys` by a window predicted for uniform keys (uniform_keys_boundary, `eligible` "
        "nonzero keys) and settled in the writing pass, with its fallback when the window misses: the "
        "threshold, and per key whether it is within. For tests.");

  // Checksums as the file formats compute them: tests craft headers that only the size checks
  // can refuse.
  m.def("checksum_bytes", [](const py::bytes& data) {
    const std::string s = data;
    return checksum_bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  });
  m.def("key_table_header_checksum", [](const py::bytes& data) {
    const std::string s = data;
    if (s.size() < sizeof(KeyTableHeader)) throw py::value_error("need the whole header");
    KeyTableHeader h;
    std::memcpy(&h, s.data(), sizeof(h));
    return key_table_header_checksum(h);
  });

  m.def("scan_tar",
        [](const std::string& path) {
          TarScan scan;
          {
            py::gil_scoped_release release;
            scan = scan_tar(path);
          }
          std::vector<uint64_t> offsets(scan.members.size()), sizes(scan.members.size());
          py::list names;
          for (size_t i = 0; i < scan.members.size(); ++i) {
            offsets[i] = scan.members[i].offset;
            sizes[i] = scan.members[i].size;
            names.append(py::bytes(scan.members[i].name));
          }
          return py::make_tuple(names, to_numpy(std::move(offsets)), to_numpy(std::move(sizes)), scan.file_size,
                                scan.error, scan.error_offset);
        },
        py::arg("path"), "Members (name bytes, data offset, size) of a tar file, from its headers only.");

  m.def("index_shard",
        [](const std::string& path) {
          TarScan scan;
          ShardSamples g;
          {
            py::gil_scoped_release release;
            scan = scan_tar(path);
            g = group_samples(scan);
          }
          auto bytes_array = [](const std::string& s) {
            std::vector<uint8_t> v(s.begin(), s.end());
            return to_numpy(std::move(v));
          };
          py::dict d;
          // 64-bit key hashes, so duplicate keys across the shard set are found by sorting
          // integers; equal hashes are then compared byte for byte in Python.
          std::vector<uint64_t> key_hash(g.key_offsets.size() - 1);
          for (size_t k = 0; k + 1 < g.key_offsets.size(); ++k)
            key_hash[k] = hash_bytes(g.keys.data() + g.key_offsets[k],
                                     static_cast<size_t>(g.key_offsets[k + 1] - g.key_offsets[k]), 0);
          d["key_hash"] = to_numpy(std::move(key_hash));
          d["keys"] = bytes_array(g.keys);
          d["key_offsets"] = to_numpy(std::move(g.key_offsets));
          d["exts"] = bytes_array(g.exts);
          d["ext_offsets"] = to_numpy(std::move(g.ext_offsets));
          d["member_offset"] = to_numpy(std::move(g.member_offset));
          d["member_size"] = to_numpy(std::move(g.member_size));
          d["sample_first_member"] = to_numpy(std::move(g.sample_first_member));
          return py::make_tuple(d, scan.file_size, scan.error, scan.error_offset, g.error);
        },
        py::arg("path"), "A shard's samples grouped as webdataset does, from the tar headers only.");

  py::class_<KeyTable>(m, "KeyTable")
      .def_static("create", &KeyTable::create, py::arg("path"), py::arg("max_ids"), py::arg("key_bytes"),
                  py::arg("hash_bits") = 64)
      .def_static("create_anonymous", &KeyTable::create_anonymous, py::arg("max_ids"), py::arg("key_bytes"),
                  py::arg("hash_bits") = 64)
      .def_static("open", &KeyTable::open, py::arg("path"))
      .def("id_of", &KeyTable::id_of, py::arg("url"), py::arg("key"))
      .def("find", &KeyTable::find, py::arg("url"), py::arg("key"))
      .def("key_of", [](const KeyTable& t, uint64_t id) { return py::bytes(t.key_of(id)); }, py::arg("id"))
      .def("flush", &KeyTable::flush, py::call_guard<py::gil_scoped_release>())
      .def("recover", &KeyTable::recover, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("clean", &KeyTable::clean)
      .def("__len__", &KeyTable::size)
      .def_property_readonly("collisions", &KeyTable::collisions)
      .def_property_readonly("max_ids", &KeyTable::max_ids)
      .def_property_readonly("nbytes", &KeyTable::nbytes)
      .def_property_readonly("path", &KeyTable::path);
}
