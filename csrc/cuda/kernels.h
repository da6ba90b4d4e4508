// Host launchers of the CUDA path. Plain C++ types only (device pointers as typed pointers, the
// stream as an integer handle taken from torch), so the bindings compile without CUDA headers and
// nothing here links libtorch. Every launcher is asynchronous on `stream` unless it says otherwise.
//
// The GPU store is struct-of-arrays memory owned by torch tensors on the Python side:
//   stats  float32[N][4]  {loss, memory, loss_mean, loss_var}, NaN = never seen (as SampleStats)
//   times  int32[N]       times selected
//   weight float32[N]     this epoch's loss weight, 0 = pruned
#pragma once
#include <cstdint>

namespace emp {
namespace cuda {

// Score kinds and rules, numbered as the CPU enums (policies.h).
enum ScoreKindId : int { kLoss = 0, kEmp = 1, kMean = 2, kUcb = 3 };

struct ScoreParams {
  int kind = kLoss;
  float beta = 0.0f;         // Emp
  float loss_weight = 1.0f;  // Emp: the loss's weight (0: the memory term alone)
  float c = 1.0f;            // Ucb
};

// Fills loss, memory and loss_mean with NaN, loss_var with 0 (as the CPU), times with 0, weight with 1.
void reset(float* stats, int32_t* times, float* weight, int64_t n, uintptr_t stream);

// Writes the batch into stats with the same arithmetic as the CPU update (no fused multiply-add),
// so the stored values are bit-identical. Never synchronises: a bad entry (id out of range, or a
// non-finite value when !skip_nonfinite) is recorded in *error as (position << 2 | code), the
// smallest position winning (atomicMin); code 1 id out of range, 2 non-finite loss, 3 non-finite
// memory. *error must hold UINT64_MAX when nothing is wrong; the host reads it at the next
// synchronising call. Skipped entries (skip_nonfinite) are counted in *skipped.
// The batch must be sorted by id, stably (equal ids in call order), with `order` the caller's
// position of each entry (for error positions): duplicate ids are then applied in call order, as on
// the CPU, by one thread per run of equal ids.
void update(const int64_t* ids, const float* loss, const float* memory, const int64_t* order, int64_t count,
            float* stats, int64_t n, float ema_decay, bool skip_nonfinite, unsigned long long* error,
            unsigned long long* skipped, uintptr_t stream);

// Gathers weight[ids] into out (1 where the id is out of range or pruned): the loss weights of a batch.
void gather_weights(const float* weight, int64_t n, const int64_t* ids, int64_t count, float* out, uintptr_t stream);

// The score of every sample under `score` (NaN when never seen).
void compute_scores(const float* stats, int64_t n, ScoreParams score, float* out, uintptr_t stream);

// Result of a selection that the host needs (copied back: these calls synchronise the stream).
struct SelectSummary {
  uint64_t kept = 0;
  uint64_t unseen = 0;
  uint64_t above_threshold = 0;
  double threshold = 0.0;
  bool budget_exceeded = false;  // exact budget: more hard samples than k (the k best were kept)
};

// Full: weight 1 everywhere.
SelectSummary select_full(float* weight, int64_t n, uintptr_t stream);

// InfoBatch soft rule on `score`: seen samples with score >= mean, and unseen ones, keep weight 1;
// the others are kept at weight 1/(1-r) when their coin (the CPU's counter-based draw for this
// seed and epoch) says so. Identical keep decisions to the CPU for the same mean.
SelectSummary select_soft(const float* stats, int64_t n, ScoreParams score, double prune_ratio, uint64_t seed,
                          uint64_t epoch, float* weight, uintptr_t stream);

// Soft rule with an exact budget k = round((1-r)N): every hard sample plus a uniform draw of
// m = k - hard soft ones at weight soft_count / m (the CPU's per-sample keep draws); the k best
// scores when more than k samples are hard.
SelectSummary select_soft_exact(const float* stats, int64_t n, ScoreParams score, double prune_ratio, uint64_t seed,
                                uint64_t epoch, float* weight, uintptr_t stream);

// k = round((1-r)N) without replacement, P ~ score^alpha (Efraimidis-Spirakis keys from the CPU's
// random stream), with rank-conditioned Horvitz-Thompson weights 1/pi, normalised to sum to N when
// `normalize`. The device log may differ from the host's in the last bit, so a key at the
// boundary can rank differently: matching statistics, not always the identical set.
SelectSummary select_weighted(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double alpha,
                              bool normalize, uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream);

// Top k = round((1-r)N) by score with the CPU's tie-break key; with explore > 0 the last share of k
// is drawn uniformly among the rest. Identical kept set to the CPU.
//
// Every top-k here (and the exact-budget and weighted draws) finds its threshold with the CPU's
// radix-selection driver (radix_select.h) over keys recomputed on the fly: a few histogram passes
// and one gather of at most 64Ki candidates, no sort of N.
SelectSummary select_topk(const float* stats, int64_t n, ScoreParams score, double prune_ratio, double explore,
                          uint64_t seed, uint64_t epoch, float* weight, uintptr_t stream);

// Number of kept samples (weight > 0). Synchronises.
uint64_t count_kept(const float* weight, int64_t n, uintptr_t stream);

// Kept ids (weight > 0) into ids_out[kept] in a uniformly random order that is a pure function of
// (seed, epoch) (random buckets, then a random key per id inside each; not the CPU's order), with
// their weights; adds 1 to times[id] of each when times is not null.
void gather_kept(const float* weight, int64_t n, uint64_t seed, uint64_t epoch, int32_t* times, int64_t* ids_out,
                 float* weights_out, uint64_t kept, uintptr_t stream);

// Device name and whether a device is usable (for messages and test skips).
int device_count();

}  // namespace cuda
}  // namespace emp
