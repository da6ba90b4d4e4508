// pybind11 bindings: weighted sampling, SeTa's k-means and the radix top-k thresholds, exposed for
// tests.
#include "bindings/common.h"

#include <pybind11/stl.h>

#include <array>
#include <vector>

#include "selection/kmeans.h"
#include "selection/partition.h"
#include "selection/sampling.h"

namespace emp_bind {

using namespace emp;

namespace {

py::dict threshold_info(const RankThreshold& t) {
  py::dict d;
  d["key"] = t.key;
  d["id"] = t.id;
  d["all"] = t.all;
  d["none"] = t.none;
  d["eligible"] = t.eligible;
  return d;
}

}  // namespace

void bind_selection(py::module_& m) {
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
}

}  // namespace emp_bind
