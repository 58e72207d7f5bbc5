//===- moe_capacity.h - capacity-mode MoE's arithmetic, host and device -===//
//
// What the CUDA kernels of capacity-mode MoE compute per thread, as
// functions a CPU test runs against kernels/cpu/moe.cpp and moe_grad.cpp
// (moe_capacity_slots, moe_dispatch_capacity, moe_combine_capacity and
// their backward). The slots: under `probs` first one thread per choice
// counts the candidates of its group and expert that rank above it (larger
// weight, or equal weight and earlier position) and marks it kept when fewer
// than C do (rankChoice); then one thread per (token group, expert) visits
// the expert's candidates in the CPU's position order, keeping the marked
// ones (`probs`) or the first C (`position`), and numbers the kept ones
// (expertSlots), so it keeps and drops exactly the CPU's choices; no thread
// needs memory beyond its counters and the slots themselves.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_CAPACITY_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_MOE_CAPACITY_H

#include "kernels/cuda/arith.h"

#include <cstdint>

namespace shardline::rt::cuda::arith {

/// A rank's local tokens [B, S] with k choices each, in groups of `rows`
/// batch rows by `positions` sequence positions, and the buffers [E, Gb, Gs,
/// C, H] (kernels/cpu/kernels.h, CapacityDims).
struct Capacity {
  int64_t B = 0, S = 0, k = 0, E = 0, C = 0, rows = 1, positions = 1;
  SL_HD int64_t groupsB() const { return B / rows; }
  SL_HD int64_t groupsS() const { return S / positions; }
  SL_HD int64_t groups() const { return groupsB() * groupsS(); }
  /// Choice i's row of the buffers, or -1 when it was dropped (or its
  /// expert or slot is out of range: the kernels count those).
  SL_HD int64_t rowOf(const int32_t *idx, const int32_t *slots, int64_t i) const {
    int64_t t = i / k, b = t / S, s = t % S;
    int32_t e = idx[i], c = slots[i];
    if (c < 0 || c >= C || !idInRange(e, E))
      return -1;
    return ((e * groupsB() + b / rows) * groupsS() + s / positions) * C + c;
  }
};

/// The `probs` policy's first pass for choice i (one thread each): slots[i]
/// = 0 when fewer than C candidates of its token group and expert rank
/// above it (larger weight, or equal weight earlier in position order), -1
/// when it is dropped. A choice outside [0, E) is left alone. The weights
/// stored as W (their order is the widened values').
template <typename W>
SL_HD void rankChoice(const W *weights, const int32_t *idx, const Capacity &d, int64_t i,
                      int32_t *slots) {
  int32_t e = idx[i];
  if (!idInRange(e, d.E))
    return;
  int64_t t = i / d.k, b0 = (t / d.S) / d.rows * d.rows, s0 = (t % d.S) / d.positions * d.positions;
  int64_t above = 0;
  for (int64_t b = b0; b < b0 + d.rows; ++b)
    for (int64_t s = s0; s < s0 + d.positions; ++s)
      for (int64_t j = 0; j < d.k; ++j) {
        int64_t i2 = (b * d.S + s) * d.k + j;
        if (idx[i2] == e) {
          float other = loadElement(weights, i2), mine = loadElement(weights, i);
          if (other > mine || (other == mine && i2 < i))
            ++above;
        }
      }
  slots[i] = above < d.C ? 0 : -1;
}

/// The slots of expert e's candidates in group g (row-major over [Gb, Gs]),
/// written into slots: in position order, the kept ones numbered from 0,
/// the others -1; kept are the first C (`position`) or those rankChoice
/// marked (`probs`, which must have run over every choice first). The
/// numbers kept and dropped into *kept, *dropped. Choices of other experts
/// are left alone, and indices outside [0, E) belong to no expert.
SL_HD void expertSlots(const int32_t *idx, const Capacity &d, bool probs, int64_t g, int32_t e,
                       int32_t *slots, int64_t *kept, int64_t *dropped) {
  int64_t b0 = (g / d.groupsS()) * d.rows, s0 = (g % d.groupsS()) * d.positions;
  int64_t n = 0, next = 0;
  for (int64_t b = b0; b < b0 + d.rows; ++b)
    for (int64_t s = s0; s < s0 + d.positions; ++s)
      for (int64_t j = 0; j < d.k; ++j) {
        int64_t i = (b * d.S + s) * d.k + j;
        if (idx[i] != e)
          continue;
        bool keep = probs ? slots[i] >= 0 : n < d.C;
        slots[i] = keep ? (int32_t)next++ : -1;
        ++n;
      }
  *kept = next;
  *dropped = n - next;
}

/// Output (t, h) of the combine: token t's kept rows weighted and summed in
/// double in choice order; zero when every choice was dropped. The buffers
/// and weights stored as T.
template <typename T>
SL_HD float capacityCombineElement(const T *buffers, const T *weights, const int32_t *idx,
                                   const int32_t *slots, const Capacity &d, int64_t H, int64_t t,
                                   int64_t h) {
  double acc = 0.0;
  for (int64_t j = 0; j < d.k; ++j) {
    int64_t row = d.rowOf(idx, slots, t * d.k + j);
    if (row >= 0)
      acc += (double)loadElement(weights, t * d.k + j) * loadElement(buffers, row * H + h);
  }
  return (float)acc;
}

/// dx (t, h) of the dispatch: token t's kept rows of dbuffers summed in
/// double in choice order.
SL_HD float capacityDispatchGradElement(const float *dbuffers, const int32_t *idx,
                                        const int32_t *slots, const Capacity &d, int64_t H,
                                        int64_t t, int64_t h) {
  double acc = 0.0;
  for (int64_t j = 0; j < d.k; ++j) {
    int64_t row = d.rowOf(idx, slots, t * d.k + j);
    if (row >= 0)
      acc += dbuffers[row * H + h];
  }
  return (float)acc;
}

/// dweights of choice i: its kept row against its token's dy in double;
/// zero for a dropped choice.
SL_HD float capacityCombineGradWeight(const float *buffers, const int32_t *idx,
                                      const int32_t *slots, const float *dy, const Capacity &d,
                                      int64_t H, int64_t i) {
  int64_t row = d.rowOf(idx, slots, i);
  if (row < 0)
    return 0.0f;
  double acc = 0.0;
  for (int64_t h = 0; h < H; ++h)
    acc += (double)buffers[row * H + h] * dy[(i / d.k) * H + h];
  return (float)acc;
}

/// Whether choice i's slot is outside [-1, C): the run stops on it, as the
/// CPU kernels do.
SL_HD bool badSlot(const int32_t *slots, const Capacity &d, int64_t i) {
  return slots[i] < -1 || slots[i] >= d.C;
}

} // namespace shardline::rt::cuda::arith

#endif
