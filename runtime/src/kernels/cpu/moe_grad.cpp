//===- moe_grad.cpp - Backward of routing, dispatch, experts and combine --===//
//
// The vector-Jacobian products of the dense-slab forms the plan runs
// (moe_scatter_rows, moe_experts_slabs, moe_gather_rows) and of router_topk.
// The experts recompute their forward rather than keep it: the backward reads
// only what the forward program already holds.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace shardline::rt::cpu {

void router_topk_grad(const float *weights, const int32_t *idx, const float *dweights, int64_t T,
                      int64_t k, int64_t E, float *dlogits) {
  std::fill(dlogits, dlogits + T * E, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float *w = weights + t * k, *dw = dweights + t * k;
    double c = 0.0;
    for (int64_t j = 0; j < k; ++j)
      c += static_cast<double>(w[j]) * dw[j];
    for (int64_t j = 0; j < k; ++j)
      dlogits[t * E + idx[t * k + j]] = static_cast<float>(w[j] * (dw[j] - c));
  }
}

void moe_dispatch_grad(const float *dslabs, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                       float *dx) {
  std::vector<double> acc(H);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const float *row = dslabs + (idx[t * k + j] * T + t) * H;
      for (int64_t h = 0; h < H; ++h)
        acc[h] += row[h];
    }
    for (int64_t h = 0; h < H; ++h)
      dx[t * H + h] = static_cast<float>(acc[h]);
  }
}

void moe_combine_grad(const float *weights, const int32_t *idx, const float *dy, int64_t T,
                      int64_t H, int64_t k, int64_t E, float *dslabs) {
  std::fill(dslabs, dslabs + E * T * H, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      float *row = dslabs + (idx[t * k + j] * T + t) * H;
      const float w = weights[t * k + j];
      for (int64_t h = 0; h < H; ++h)
        row[h] += w * dy[t * H + h];
    }
}

void moe_combine_grad_weights(const float *slabs, const int32_t *idx, const float *dy, int64_t T,
                              int64_t H, int64_t k, float *dweights) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const float *row = slabs + (idx[t * k + j] * T + t) * H;
      double acc = 0.0;
      for (int64_t h = 0; h < H; ++h)
        acc += static_cast<double>(row[h]) * dy[t * H + h];
      dweights[t * k + j] = static_cast<float>(acc);
    }
}

void moe_experts_grad(const float *sorted, const float *dout, const int32_t *counts, int64_t E,
                      const float *w_gate, const float *w_up, const float *w_down, int64_t H,
                      int64_t F, float *dsorted, float *dw_gate, float *dw_up, float *dw_down) {
  std::vector<float> gate, up, act, dact, dgate, dup, part;
  int64_t row = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = counts[e];
    const float *wg = w_gate + e * H * F, *wu = w_up + e * H * F, *wd = w_down + e * F * H;
    if (n == 0) {
      for (float *w : {dw_gate, dw_up})
        if (w)
          std::fill(w + e * H * F, w + (e + 1) * H * F, 0.0f);
      if (dw_down)
        std::fill(dw_down + e * F * H, dw_down + (e + 1) * F * H, 0.0f);
      continue;
    }
    const float *x = sorted + row * H, *d = dout + row * H;
    gate.resize(n * F);
    up.resize(n * F);
    act.resize(n * F);
    dact.resize(n * F);
    dgate.resize(n * F);
    dup.resize(n * F);
    linear(x, wg, n, H, F, gate.data());
    linear(x, wu, n, H, F, up.data());
    linear_grad(d, wd, n, F, H, dact.data());
    swiglu_grad(gate.data(), up.data(), dact.data(), n * F, dgate.data(), dup.data());
    if (dw_down) {
      swiglu(gate.data(), up.data(), n * F, act.data());
      linear_grad_weight(act.data(), d, n, F, H, dw_down + e * F * H);
    }
    if (dw_gate)
      linear_grad_weight(x, dgate.data(), n, H, F, dw_gate + e * H * F);
    if (dw_up)
      linear_grad_weight(x, dup.data(), n, H, F, dw_up + e * H * F);
    if (dsorted) {
      part.resize(n * H);
      linear_grad(dgate.data(), wg, n, H, F, dsorted + row * H);
      linear_grad(dup.data(), wu, n, H, F, part.data());
      for (int64_t i = 0; i < n * H; ++i)
        dsorted[row * H + i] += part[i];
    }
    row += n;
  }
}

void moe_experts_slabs_grad(const float *slabs, int64_t E, int64_t R, const float *w_gate,
                            const float *w_up, const float *w_down, int64_t H, int64_t F,
                            const float *dy, float *dslabs, float *dw_gate, float *dw_up,
                            float *dw_down) {
  if (dslabs)
    std::fill(dslabs, dslabs + E * R * H, 0.0f);
  // The rows the forward computed.
  std::vector<int32_t> counts;
  std::vector<int64_t> rows;
  detail::nonZeroSlabRows(slabs, E, R, H, counts, rows);
  std::vector<float> x, d;
  for (int64_t row : rows) {
    x.insert(x.end(), slabs + row * H, slabs + (row + 1) * H);
    d.insert(d.end(), dy + row * H, dy + (row + 1) * H);
  }
  std::vector<float> dx(dslabs ? x.size() : 0);
  moe_experts_grad(x.data(), d.data(), counts.data(), E, w_gate, w_up, w_down, H, F,
                   dslabs ? dx.data() : nullptr, dw_gate, dw_up, dw_down);
  if (dslabs)
    for (size_t i = 0; i < rows.size(); ++i)
      std::copy(dx.begin() + i * H, dx.begin() + (i + 1) * H, dslabs + rows[i] * H);
}

void moe_dispatch_capacity_grad(const float *dbuffers, const int32_t *idx, const int32_t *slots,
                                const CapacityDims &d, int64_t H, float *dx) {
  std::vector<double> acc(d.B * d.S * H, 0.0);
  detail::for_each_kept(idx, slots, d, [&](int64_t t, int64_t, int64_t row) {
    for (int64_t h = 0; h < H; ++h)
      acc[t * H + h] += dbuffers[row * H + h];
  });
  for (size_t i = 0; i < acc.size(); ++i)
    dx[i] = static_cast<float>(acc[i]);
}

void moe_combine_capacity_grad(const float *weights, const int32_t *idx, const int32_t *slots,
                               const float *dy, const CapacityDims &d, int64_t H, float *dbuffers) {
  std::fill(dbuffers, dbuffers + d.E * d.groupsB() * d.groupsS() * d.C * H, 0.0f);
  detail::for_each_kept(idx, slots, d, [&](int64_t t, int64_t j, int64_t row) {
    const float w = weights[t * d.k + j];
    for (int64_t h = 0; h < H; ++h)
      dbuffers[row * H + h] = w * dy[t * H + h];
  });
}

void moe_combine_capacity_grad_weights(const float *buffers, const int32_t *idx,
                                       const int32_t *slots, const float *dy, const CapacityDims &d,
                                       int64_t H, float *dweights) {
  std::fill(dweights, dweights + d.B * d.S * d.k, 0.0f);
  detail::for_each_kept(idx, slots, d, [&](int64_t t, int64_t j, int64_t row) {
    double acc = 0.0;
    for (int64_t h = 0; h < H; ++h)
      acc += static_cast<double>(buffers[row * H + h]) * dy[t * H + h];
    dweights[t * d.k + j] = static_cast<float>(acc);
  });
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

void routerTopkGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.in[0]), &out = f.local(s.out[0]);
  requireIdsInRange(f, s.in[1], out[2], "the experts");
  cpu::router_topk_grad(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), w[0] * w[1], w[2], out[2],
                        f.f(s.out[0]));
}

void moeDispatchGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &dl = f.local(s.in[0]);
  requireIdsInRange(f, s.in[1], dl[0], "the experts");
  cpu::moe_dispatch_grad(f.f(s.in[0]), f.ids(s.in[1]), dl[1] * dl[2], dl[3], f.local(s.in[1])[2],
                         f.f(s.out[0]));
}

/// Operands tokens, gate, up, down, dy; `dtokens` or the three weight
/// gradients, whichever the entry computes.
void moeExpertsGrad(const Step &s, Frame &f, bool weights) {
  const std::vector<int64_t> &tl = f.local(s.in[0]), &gl = f.local(s.in[1]);
  cpu::moe_experts_slabs_grad(f.f(s.in[0]), tl[0], expertRows(tl), f.f(s.in[1]), f.f(s.in[2]),
                              f.f(s.in[3]), gl[1], gl[2], f.f(s.in[4]),
                              weights ? nullptr : f.f(s.out[0]), weights ? f.f(s.out[0]) : nullptr,
                              weights ? f.f(s.out[1]) : nullptr, weights ? f.f(s.out[2]) : nullptr);
}

void moeCombineGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &out = f.local(s.out[0]);
  requireIdsInRange(f, s.in[1], out[0], "the experts");
  cpu::moe_combine_grad(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), out[1] * out[2], out[3],
                        f.local(s.in[0])[2], out[0], f.f(s.out[0]));
}

void moeCombineGradWeights(const Step &s, Frame &f) {
  const std::vector<int64_t> &el = f.local(s.in[0]);
  requireIdsInRange(f, s.in[1], el[0], "the experts");
  cpu::moe_combine_grad_weights(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), el[1] * el[2], el[3],
                                f.local(s.in[1])[2], f.f(s.out[0]));
}

void moeDispatchCapacityGrad(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[1], s.in[0]);
  requireIdsInRange(f, s.in[1], d.E, "the experts");
  requireSlotsInRange(f, s.in[2], d.C);
  cpu::moe_dispatch_capacity_grad(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), d,
                                  f.local(s.in[0])[4], f.f(s.out[0]));
}

void moeCombineCapacityGrad(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[1], s.out[0]);
  requireIdsInRange(f, s.in[1], d.E, "the experts");
  requireSlotsInRange(f, s.in[2], d.C);
  cpu::moe_combine_capacity_grad(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), f.f(s.in[3]), d,
                                 f.local(s.in[3])[2], f.f(s.out[0]));
}

void moeCombineCapacityGradWeights(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[1], s.in[0]);
  requireIdsInRange(f, s.in[1], d.E, "the experts");
  requireSlotsInRange(f, s.in[2], d.C);
  cpu::moe_combine_capacity_grad_weights(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), f.f(s.in[3]),
                                         d, f.local(s.in[0])[4], f.f(s.out[0]));
}

// -- contracts --------------------------------------------------------------

/// `routing`[B, S, k] for the tokens of `tokens`[.., B, S, ..] whose batch is
/// dimension `batchDim`.
void checkRouting(Contract &c, Contract::Arg routing, Contract::Arg tokens, int batchDim) {
  c.rank(routing, 3)
      .sameDim(routing, 0, tokens, batchDim)
      .sameDim(routing, 1, tokens, batchDim + 1);
}

/// weights, indices, dweights [B, S, k] -> dlogits[B, S, E], k <= E.
void checkRouterTopkGrad(Contract &c) {
  Contract::Arg weights = operand(0), dlogits = result(0);
  c.rank(dlogits, 3);
  checkRouting(c, weights, dlogits, 0);
  c.sameShape(operand(1), weights).sameShape(operand(2), weights);
  c.require(c.local(weights)[2] <= c.local(dlogits)[2], "k exceeds the experts of dlogits");
}

/// dtokens[E, B, S, H], indices[B, S, k] -> dx[B, S, H].
void checkMoeDispatchGrad(Contract &c) {
  Contract::Arg dtokens = operand(0), dx = result(0);
  c.rank(dtokens, 4).rank(dx, 3);
  for (int d = 0; d < 3; ++d)
    c.sameDim(dx, d, dtokens, d + 1);
  checkRouting(c, operand(1), dx, 0);
}

/// tokens[E, r1, ..., rn, H] (n >= 1), gate and up [E, H, F], down [E, F, H],
/// dy of tokens' shape; dtokens of tokens' shape, or dgate, dup, ddown of the
/// weights'.
void checkMoeExpertsGrad(Contract &c) {
  Contract::Arg tokens = operand(0), gate = operand(1), up = operand(2), down = operand(3);
  c.rankAtLeast(tokens, 3).rank(gate, 3).rank(down, 3).sameShape(up, gate);
  c.sameShape(operand(4), tokens);
  c.sameDim(gate, 0, tokens, 0).sameDim(gate, 1, tokens, -1);
  c.sameDim(down, 0, gate, 0).sameDim(down, 1, gate, 2).sameDim(down, 2, gate, 1);
  if (c.step.out.size() == 1) {
    c.sameShape(result(0), tokens);
    return;
  }
  c.sameShape(result(0), gate).sameShape(result(1), up).sameShape(result(2), down);
}

/// weights, indices [B, S, k], dy[B, S, H] -> dexpert_out[E, B, S, H].
void checkMoeCombineGrad(Contract &c) {
  Contract::Arg weights = operand(0), dy = operand(2), out = result(0);
  c.rank(dy, 3).rank(out, 4);
  checkRouting(c, weights, dy, 0);
  c.sameShape(operand(1), weights);
  for (int d = 0; d < 3; ++d)
    c.sameDim(out, d + 1, dy, d);
}

/// expert_out[E, B, S, H], indices[B, S, k], dy[B, S, H] -> dweights[B, S, k].
void checkMoeCombineGradWeights(Contract &c) {
  Contract::Arg slabs = operand(0), indices = operand(1), dy = operand(2);
  c.rank(slabs, 4).rank(dy, 3);
  for (int d = 0; d < 3; ++d)
    c.sameDim(dy, d, slabs, d + 1);
  checkRouting(c, indices, dy, 0);
  c.sameShape(result(0), indices);
}

/// dtokens[E, Gb, Gs, C, H], indices and slots [B, S, k] -> dx[B, S, H].
void checkMoeDispatchCapacityGrad(Contract &c) {
  checkCapacity(c, {operand(1), operand(2)}, result(0), operand(0));
}

/// weights, indices, slots [B, S, k], dy[B, S, H] -> dexpert_out[E, Gb, Gs, C, H].
void checkMoeCombineCapacityGrad(Contract &c) {
  checkCapacity(c, {operand(0), operand(1), operand(2)}, operand(3), result(0));
}

/// expert_out[E, Gb, Gs, C, H], indices, slots [B, S, k], dy[B, S, H] ->
/// dweights[B, S, k].
void checkMoeCombineCapacityGradWeights(Contract &c) {
  checkCapacity(c, {operand(1), operand(2), result(0)}, operand(3), operand(0));
}

} // namespace

SHARDLINE_CPU_KERNELS(moe_grad) {
  const std::vector<std::string> experts = {"tokens", "gate", "up", "down", "dy"};
  addKernel(t, "router_topk_grad",
            {{"weights", "indices", "dweights"},
             {"dlogits"},
             {},
             routerTopkGrad,
             nullptr,
             checkRouterTopkGrad});
  addKernel(t, "moe_dispatch_grad",
            {{"dtokens", "indices"}, {"dx"}, {}, moeDispatchGrad, nullptr, checkMoeDispatchGrad});
  addKernel(t, "moe_experts_grad",
            {experts,
             {"dtokens"},
             {},
             [](const Step &s, Frame &f) { moeExpertsGrad(s, f, false); },
             nullptr,
             checkMoeExpertsGrad});
  addKernel(t, "moe_experts_grad_weights",
            {experts,
             {"dgate", "dup", "ddown"},
             {},
             [](const Step &s, Frame &f) { moeExpertsGrad(s, f, true); },
             nullptr,
             checkMoeExpertsGrad});
  addKernel(t, "moe_combine_grad",
            {{"weights", "indices", "dy"},
             {"dexpert_out"},
             {},
             moeCombineGrad,
             nullptr,
             checkMoeCombineGrad});
  addKernel(t, "moe_dispatch_capacity_grad",
            {{"dtokens", "indices", "slots"},
             {"dx"},
             capacityAttrs(false),
             moeDispatchCapacityGrad,
             nullptr,
             checkMoeDispatchCapacityGrad});
  addKernel(t, "moe_combine_capacity_grad",
            {{"weights", "indices", "slots", "dy"},
             {"dexpert_out"},
             capacityAttrs(true),
             moeCombineCapacityGrad,
             nullptr,
             checkMoeCombineCapacityGrad});
  addKernel(t, "moe_combine_capacity_grad_weights",
            {{"expert_out", "indices", "slots", "dy"},
             {"dweights"},
             capacityAttrs(false),
             moeCombineCapacityGradWeights,
             nullptr,
             checkMoeCombineCapacityGradWeights});
  addKernel(t, "moe_combine_grad_weights",
            {{"expert_out", "indices", "dy"},
             {"dweights"},
             {},
             moeCombineGradWeights,
             nullptr,
             checkMoeCombineGradWeights});
}

} // namespace shardline::rt
