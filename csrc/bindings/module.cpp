// The pybind11 module emp_data._C. Inputs arrive validated and contiguous from the Python layer
// (emp_data/); every loop runs with the GIL released. Each part of the module is bound in its own
// file (bindings/common.h lists them).
#include "bindings/common.h"
#include "core/file_util.h"
#include "core/store.h"

using namespace emp;
using namespace emp_bind;

PYBIND11_MODULE(_C, m) {
  m.doc() = "emp_data C++ core: per-sample score store, pruning policies, weighted sampling";
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

  bind_threads(m);
  bind_store(m);
  bind_selection(m);
  bind_webdataset(m);
}
