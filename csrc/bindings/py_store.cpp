// pybind11 bindings: the Store (create, open, update, select, its arrays) and the selection's
// config. Loops run with the GIL released.
#include "bindings/common.h"

#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/store.h"
#include "core/update.h"
#include "selection/partition.h"
#include "selection/policies.h"

namespace emp_bind {

using namespace emp;

namespace {

// A numpy view into store memory that keeps the store object alive.
template <class T>
py::array_t<T> view(const py::object& owner, const T* data, uint64_t n, size_t stride) {
  return py::array_t<T>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(stride)}, data, owner);
}

// A 1-D array argument of the per-step update, read through the buffer protocol. pybind11's array
// casters cost tens of microseconds a call once a training step has left the caches cold
// (benchmarks/update_calls.py); this is one PyObject_GetBuffer. Anything else (another dtype, a
// strided array, a list) is first converted as the casters would: a safe cast into a new array.
template <class T>
class ArrayArg {
 public:
  ArrayArg(py::handle obj, const char* name) {
    if (take(obj)) return;
    copy_ = py::array_t<T, py::array::c_style>::ensure(obj);
    if (!copy_ || !take(copy_)) {
      PyErr_Clear();
      throw py::type_error(std::string(name) + " must be a 1-D array of " + kind());
    }
  }
  ~ArrayArg() {
    if (held_) PyBuffer_Release(&view_);
  }
  ArrayArg(const ArrayArg&) = delete;
  ArrayArg& operator=(const ArrayArg&) = delete;
  const T* data() const { return static_cast<const T*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.shape[0]); }

 private:
  // Holds obj's buffer if it is a 1-D C-contiguous array of T.
  bool take(py::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
      PyErr_Clear();
      return false;
    }
    if (view_.ndim == 1 && view_.itemsize == static_cast<py::ssize_t>(sizeof(T)) && format_ok(view_.format)) {
      held_ = true;
      return true;
    }
    PyBuffer_Release(&view_);
    return false;
  }
  static const char* kind() { return std::is_same<T, float>::value ? "float32" : "int64"; }
  // Native byte order: no prefix, '@', '=' or '<' (x86-64 is little-endian).
  static bool format_ok(const char* f) {
    if (f == nullptr) return false;
    if (*f == '@' || *f == '=' || *f == '<') ++f;
    const bool one = f[0] != '\0' && f[1] == '\0';
    return one && (std::is_same<T, float>::value ? f[0] == 'f' : (f[0] == 'l' || f[0] == 'q'));
  }
  Py_buffer view_{};
  bool held_ = false;
  py::object copy_;
};

using SegmentArray = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// A rank's part from Python: segments as rows (local_begin, global_begin, length, stride), and the
// reductions as callables over numpy arrays (torch.distributed, emp_data/distributed/partition.py),
// which C++ calls with the GIL taken back. None for `sum` means one process.
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

void bind_store(py::module_& m) {
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

  m.attr("UPDATE_LOG_ENTRIES") = kUpdateLogEntries;
  py::class_<Store>(m, "Store")
      .def_static("create", &Store::create, py::arg("num_samples"), py::call_guard<py::gil_scoped_release>())
      .def_static("create_mapped", &Store::create_mapped, py::arg("path"), py::arg("num_samples"),
                  py::call_guard<py::gil_scoped_release>())
      .def_static("open", &Store::open, py::arg("path"), py::arg("readonly"), py::call_guard<py::gil_scoped_release>())
      .def_static("load", &Store::load, py::arg("path"), py::call_guard<py::gil_scoped_release>())
      .def("save",
           [](Store& s, const std::string& path, const py::bytes& metadata) {
             std::string meta = metadata;
             py::gil_scoped_release release;
             settle(s);
             s.save(path, meta);
           },
           py::arg("path"), py::arg("metadata"))
      .def_property_readonly("metadata", [](const Store& s) { return py::bytes(s.metadata()); })
      .def_property_readonly("size", &Store::size)
      .def_property_readonly("nbytes", &Store::nbytes)
      .def_property_readonly("readonly", &Store::readonly)
      .def_property_readonly("mapped", &Store::mapped)
      .def_property_readonly("path", &Store::path)
      .def_property_readonly(
          "pending",
          [](const Store& s) {
            const std::lock_guard<std::mutex> hold(*s.pending().lock);
            return s.pending().size();
          },
          "Entries in the update log, not yet in the records (benchmarks and tests).")
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
      .def("flush",
           [](Store& s) {
             py::gil_scoped_release release;
             settle(s);
             s.flush();
           })
      .def("settle", &settle, py::call_guard<py::gil_scoped_release>())
      .def("array",
           [](py::object self, const std::string& name) -> py::array {
             Store& s = self.cast<Store&>();
             // The update writes none of these: no need to apply its log (pruner.loss reads the
             // weights every step, after recording the step).
             if (name == "times_selected") return view<uint16_t>(self, s.times_selected(), s.size(), sizeof(uint16_t));
             if (name == "idle") return view<uint16_t>(self, s.idle(), s.size(), sizeof(uint16_t));
             if (name == "weight") return view<float>(self, s.weight(), s.size(), sizeof(float));
             settle(s);  // a view of the records shows every update recorded so far
             const SampleStats* st = s.stats();
             if (name == "loss") return view<float>(self, &st->loss, s.size(), sizeof(SampleStats));
             if (name == "memory") return view<float>(self, &st->memory, s.size(), sizeof(SampleStats));
             if (name == "loss_mean") return view<float>(self, &st->loss_mean, s.size(), sizeof(SampleStats));
             if (name == "loss_var") return view<float>(self, &st->loss_var, s.size(), sizeof(SampleStats));
             throw py::value_error("unknown store array '" + name + "'");
           },
           py::arg("name"))
      .def("update",
           [](Store& s, py::handle ids, py::handle loss, py::handle memory, float ema_decay, bool skip_nonfinite) {
             if (s.readonly()) throw py::value_error("this store was opened read-only");
             const ArrayArg<int64_t> id_arr(ids, "ids");
             const ArrayArg<float> loss_arr(loss, "losses");
             std::unique_ptr<ArrayArg<float>> mem_arr;
             if (!memory.is_none()) mem_arr = std::make_unique<ArrayArg<float>>(memory, "memory");
             if (loss_arr.size() != id_arr.size() || (mem_arr && mem_arr->size() != id_arr.size()))
               throw py::value_error("ids, losses and memory must have the same length");
             UpdateResult r;
             {
               py::gil_scoped_release release;
               r = update(s, id_arr.data(), loss_arr.data(), mem_arr ? mem_arr->data() : nullptr, id_arr.size(),
                          ema_decay, skip_nonfinite);
             }
             // None when every entry was applied (the per-step case: no tuple to build).
             if (r.error == 0 && r.skipped == 0) return py::object(py::none());
             return py::object(py::make_tuple(r.error, r.bad_index, r.skipped));
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
               settle(s);
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
      .def("scores", [](Store& s, const SelectConfig& cfg) {
        std::vector<float> out(s.size());
        {
          py::gil_scoped_release release;
          settle(s);
          compute_scores(s, cfg, out.data());
        }
        return to_numpy(std::move(out));
      });
}

}  // namespace emp_bind
