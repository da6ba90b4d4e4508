// pybind11 bindings of the CUDA path (module emp_data._C_cuda). Arguments are raw device
// addresses (torch's tensor.data_ptr()) and the current CUDA stream handle
// (torch.cuda.current_stream().cuda_stream); emp_data/cuda.py checks devices, dtypes, sizes and
// contiguity before calling, so nothing here links libtorch.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace py = pybind11;
using namespace emp::cuda;

namespace {
template <class T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

py::dict summary_dict(const SelectSummary& s) {
  py::dict d;
  d["kept"] = s.kept;
  d["unseen"] = s.unseen;
  d["above_threshold"] = s.above_threshold;
  d["threshold"] = s.threshold;
  d["budget_exceeded"] = s.budget_exceeded;
  return d;
}

ScoreParams score_params(int kind, float beta, float c, float loss_weight) {
  ScoreParams p;
  p.kind = kind;
  p.beta = beta;
  p.c = c;
  p.loss_weight = loss_weight;
  return p;
}
}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "emp_data CUDA kernels: score store update, per-epoch selection, compaction";
  m.def("device_count", &device_count);
  m.def("reset", [](uintptr_t stats, uintptr_t times, uintptr_t weight, int64_t n, uintptr_t stream) {
    reset(ptr<float>(stats), ptr<int32_t>(times), ptr<float>(weight), n, stream);
  });
  m.def("update", [](uintptr_t ids, uintptr_t loss, uintptr_t memory, uintptr_t order, int64_t count, uintptr_t stats,
                     int64_t n, float ema_decay, bool skip_nonfinite, uintptr_t error, uintptr_t skipped,
                     uintptr_t stream) {
    update(ptr<const int64_t>(ids), ptr<const float>(loss), ptr<const float>(memory), ptr<const int64_t>(order), count,
           ptr<float>(stats), n, ema_decay, skip_nonfinite, ptr<unsigned long long>(error),
           ptr<unsigned long long>(skipped), stream);
  });
  m.def("gather_weights", [](uintptr_t weight, int64_t n, uintptr_t ids, int64_t count, uintptr_t out,
                             uintptr_t stream) {
    gather_weights(ptr<const float>(weight), n, ptr<const int64_t>(ids), count, ptr<float>(out), stream);
  });
  m.def("compute_scores", [](uintptr_t stats, int64_t n, int kind, float beta, float c, float loss_weight, uintptr_t out,
                             uintptr_t stream) {
    compute_scores(ptr<const float>(stats), n, score_params(kind, beta, c, loss_weight), ptr<float>(out), stream);
  });
  m.def("select_full", [](uintptr_t weight, int64_t n, uintptr_t stream) {
    return summary_dict(select_full(ptr<float>(weight), n, stream));
  });
  // The two soft rules share one signature; the GIL is released while the kernels run.
  using SoftRule = SelectSummary (*)(const float*, int64_t, ScoreParams, double, uint64_t, uint64_t, float*, uintptr_t);
  auto bind_soft = [&m](const char* name, SoftRule rule) {
    m.def(name, [rule](uintptr_t stats, int64_t n, int kind, float beta, float c, float loss_weight, double prune_ratio, uint64_t seed,
                       uint64_t epoch, uintptr_t weight, uintptr_t stream) {
      SelectSummary s;
      {
        py::gil_scoped_release release;
        s = rule(ptr<const float>(stats), n, score_params(kind, beta, c, loss_weight), prune_ratio, seed, epoch, ptr<float>(weight),
                 stream);
      }
      return summary_dict(s);
    });
  };
  bind_soft("select_soft", &select_soft);
  bind_soft("select_soft_exact", &select_soft_exact);
  m.def("select_weighted", [](uintptr_t stats, int64_t n, int kind, float beta, float c, float loss_weight, double prune_ratio,
                              double alpha, bool normalize, uint64_t seed, uint64_t epoch, uintptr_t weight,
                              uintptr_t stream) {
    SelectSummary s;
    {
      py::gil_scoped_release release;
      s = select_weighted(ptr<const float>(stats), n, score_params(kind, beta, c, loss_weight), prune_ratio, alpha, normalize, seed,
                          epoch, ptr<float>(weight), stream);
    }
    return summary_dict(s);
  });
  m.def("select_topk", [](uintptr_t stats, int64_t n, int kind, float beta, float c, float loss_weight, double prune_ratio,
                          double explore, uint64_t seed, uint64_t epoch, uintptr_t weight, uintptr_t stream) {
    SelectSummary s;
    {
      py::gil_scoped_release release;
      s = select_topk(ptr<const float>(stats), n, score_params(kind, beta, c, loss_weight), prune_ratio, explore, seed, epoch,
                      ptr<float>(weight), stream);
    }
    return summary_dict(s);
  });
  m.def("count_kept", [](uintptr_t weight, int64_t n, uintptr_t stream) {
    py::gil_scoped_release release;
    return count_kept(ptr<const float>(weight), n, stream);
  });
  m.def("gather_kept", [](uintptr_t weight, int64_t n, uint64_t seed, uint64_t epoch, uintptr_t times,
                          uintptr_t ids_out, uintptr_t weights_out, uint64_t kept, uintptr_t stream) {
    py::gil_scoped_release release;
    gather_kept(ptr<const float>(weight), n, seed, epoch, ptr<int32_t>(times), ptr<int64_t>(ids_out),
                ptr<float>(weights_out), kept, stream);
  });
}
