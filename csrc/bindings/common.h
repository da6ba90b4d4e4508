// What the binding files share: numpy arrays from C++ vectors, and one function per part of the
// module.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <utility>

namespace emp_bind {

namespace py = pybind11;

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

void bind_threads(py::module_& m);    // thread count, parallel mode, the clocks' diagnosis
void bind_store(py::module_& m);      // Store, SelectConfig and the rule / score enums
void bind_selection(py::module_& m);  // weighted sampling, k-means, top-k thresholds (tests)
void bind_webdataset(py::module_& m); // tar scans, shard indexes, KeyTable, file checksums

}  // namespace emp_bind
