//===- moe.cpp - Routing, dropless dispatch, SwiGLU experts, combine ------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

namespace shardline::rt::cpu {

void router_topk(const float *logits, int64_t T, int64_t E, int64_t k, float *weights,
                 int32_t *idx) {
  assert(k >= 1 && k <= E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    const float *l = logits + t * E;
    // Softmax is monotonic, so ranking the logits ranks the probabilities
    // without rounding turning distinct logits into ties.
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [l](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    std::copy(order.begin(), order.begin() + k, idx + t * k);
  }
  router_weights(logits, T, E, k, idx, weights);
}

void router_weights(const float *logits, int64_t T, int64_t E, int64_t k, const int32_t *idx,
                    float *weights) {
  std::vector<double> p(E);
  for (int64_t t = 0; t < T; ++t) {
    const float *l = logits + t * E;
    const float m = *std::max_element(l, l + E);
    double z = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      p[e] = std::exp(static_cast<double>(l[e]) - m);
      z += p[e];
    }
    double chosen = 0.0;
    for (int64_t j = 0; j < k; ++j)
      chosen += p[idx[t * k + j]] / z;
    for (int64_t j = 0; j < k; ++j)
      weights[t * k + j] = static_cast<float>(p[idx[t * k + j]] / z / chosen);
  }
}

void moe_dispatch(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k, int64_t E,
                  float *sorted, int32_t *counts, int32_t *perm) {
  std::fill(counts, counts + E, 0);
  for (int64_t i = 0; i < T * k; ++i) {
    assert(idx[i] >= 0 && idx[i] < E);
    ++counts[idx[i]];
  }
  std::vector<int64_t> next(E, 0);
  for (int64_t e = 1; e < E; ++e)
    next[e] = next[e - 1] + counts[e - 1];
  // Visiting (token, slot) in order keeps that order within each expert.
  for (int64_t i = 0; i < T * k; ++i) {
    int64_t r = next[idx[i]]++;
    std::memcpy(sorted + r * H, x + (i / k) * H, sizeof(float) * H);
    perm[r] = static_cast<int32_t>(i);
  }
}

void moe_experts(const float *sorted, const int32_t *counts, int64_t E, const float *w_gate,
                 const float *w_up, const float *w_down, int64_t H, int64_t F, float *out) {
  std::vector<float> gate, up;
  int64_t row = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = counts[e];
    if (n == 0)
      continue;
    gate.resize(n * F);
    up.resize(n * F);
    const float *xe = sorted + row * H;
    linear(xe, w_gate + e * H * F, n, H, F, gate.data());
    linear(xe, w_up + e * H * F, n, H, F, up.data());
    swiglu(gate.data(), up.data(), n * F, gate.data());
    linear(gate.data(), w_down + e * F * H, n, F, H, out + row * H);
    row += n;
  }
}

void moe_combine(const float *expert_out, const int32_t *perm, const float *weights, int64_t T,
                 int64_t H, int64_t k, float *y) {
  std::vector<int64_t> row_of(T * k);
  for (int64_t r = 0; r < T * k; ++r)
    row_of[perm[r]] = r;
  std::vector<double> acc(H);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t s = 0; s < k; ++s) {
      const double w = weights[t * k + s];
      const float *src = expert_out + row_of[t * k + s] * H;
      for (int64_t h = 0; h < H; ++h)
        acc[h] += w * src[h];
    }
    for (int64_t h = 0; h < H; ++h)
      y[t * H + h] = static_cast<float>(acc[h]);
  }
}

void moe_scatter_rows(const float *x, const int32_t *idx, int64_t T, int64_t H, int64_t k,
                      float *slabs) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(slabs + (idx[t * k + j] * T + t) * H, x + t * H, sizeof(float) * H);
}

void moe_experts_slabs(const float *slabs, int64_t E, int64_t R, const float *w_gate,
                       const float *w_up, const float *w_down, int64_t H, int64_t F, float *out) {
  std::vector<int32_t> counts(E, 0);
  std::vector<int64_t> rows;
  std::vector<float> packed;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = 0; r < R; ++r) {
      const float *row = slabs + (e * R + r) * H;
      if (std::all_of(row, row + H, [](float v) { return v == 0.0f; }))
        continue;
      ++counts[e];
      rows.push_back(e * R + r);
      packed.insert(packed.end(), row, row + H);
    }
  std::vector<float> computed(packed.size());
  moe_experts(packed.data(), counts.data(), E, w_gate, w_up, w_down, H, F, computed.data());
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(out + rows[i] * H, computed.data() + i * H, sizeof(float) * H);
}

void moe_gather_rows(const float *slabs, const float *weights, const int32_t *idx, int64_t T,
                     int64_t H, int64_t k, float *y) {
  std::fill(y, y + T * H, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const float *row = slabs + (idx[t * k + j] * T + t) * H;
      float w = weights[t * k + j];
      for (int64_t h = 0; h < H; ++h)
        y[t * H + h] += w * row[h];
    }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

void routerTopk(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]);
  cpu::router_topk(f.f(s.in[0]), l[0] * l[1], l[2], s.attrs[0].i, f.f(s.out[0]), f.ids(s.out[1]));
}

/// The dispatch is dropless and static: each expert's slab holds a row per
/// token, zero where the router did not choose it.
void moeDispatch(const Step &s, Frame &f) {
  const std::vector<int64_t> &xl = f.local(s.in[0]);
  requireIdsInRange(f, s.in[1], f.local(s.out[0])[0], "the experts");
  cpu::moe_scatter_rows(f.f(s.in[0]), f.ids(s.in[1]), xl[0] * xl[1], xl[2], f.local(s.in[1])[2],
                        f.f(s.out[0]));
}

void moeExperts(const Step &s, Frame &f) {
  const std::vector<int64_t> &tl = f.local(s.in[0]), &gl = f.local(s.in[1]);
  cpu::moe_experts_slabs(f.f(s.in[0]), tl[0], tl[1] * tl[2], f.f(s.in[1]), f.f(s.in[2]),
                         f.f(s.in[3]), gl[1], gl[2], f.f(s.out[0]));
}

void moeCombine(const Step &s, Frame &f) {
  const std::vector<int64_t> &el = f.local(s.in[0]);
  requireIdsInRange(f, s.in[2], el[0], "the experts");
  cpu::moe_gather_rows(f.f(s.in[0]), f.f(s.in[1]), f.ids(s.in[2]), el[1] * el[2], el[3],
                       f.local(s.in[1])[2], f.f(s.out[0]));
}

// -- contracts --------------------------------------------------------------

/// logits[B, S, E] -> weights, indices [B, S, k], k <= E.
void checkRouterTopk(Contract &c) {
  Contract::Arg logits = operand(0);
  c.rank(logits, 3).attrIn(0, 1, c.dim(logits, 2));
  for (size_t r : {0, 1})
    c.rank(result(r), 3)
        .sameDim(result(r), 0, logits, 0)
        .sameDim(result(r), 1, logits, 1)
        .dimIs(result(r), 2, c.intAttr(0), "attribute 'k'");
}

/// x[B, S, H] and indices[B, S, k] -> slabs[E, B, S, H].
void checkMoeDispatch(Contract &c) {
  Contract::Arg x = operand(0), indices = operand(1), out = result(0);
  c.rank(x, 3).rank(indices, 3).rank(out, 4);
  c.sameDim(indices, 0, x, 0).sameDim(indices, 1, x, 1);
  c.sameDim(out, 1, x, 0).sameDim(out, 2, x, 1).sameDim(out, 3, x, 2);
}

/// tokens[E, B, S, H], gate and up [E, H, F], down [E, F, H].
void checkMoeExperts(Contract &c) {
  Contract::Arg tokens = operand(0), gate = operand(1), up = operand(2), down = operand(3);
  c.rank(tokens, 4).rank(gate, 3).rank(down, 3).sameShape(up, gate);
  c.sameDim(gate, 0, tokens, 0).sameDim(gate, 1, tokens, 3);
  c.sameDim(down, 0, gate, 0).sameDim(down, 1, gate, 2).sameDim(down, 2, gate, 1);
  c.sameShape(result(0), tokens);
}

/// expert_out[E, B, S, H], weights and indices [B, S, k] -> [B, S, H].
void checkMoeCombine(Contract &c) {
  Contract::Arg slabs = operand(0), weights = operand(1), indices = operand(2), out = result(0);
  c.rank(slabs, 4).rank(weights, 3).sameShape(indices, weights);
  c.sameDim(weights, 0, slabs, 1).sameDim(weights, 1, slabs, 2);
  c.rank(out, 3).sameDim(out, 0, slabs, 1).sameDim(out, 1, slabs, 2).sameDim(out, 2, slabs, 3);
}

} // namespace

SHARDLINE_CPU_KERNELS(moe) {
  addKernel(t, "router_topk",
            {{"logits"},
             {"weights", "indices"},
             {{"k", AttrKind::Int}},
             routerTopk,
             nullptr,
             checkRouterTopk});
  addKernel(t, "moe_dispatch",
            {{"x", "indices"}, kResult, {}, moeDispatch, nullptr, checkMoeDispatch});
  addKernel(t, "moe_experts",
            {{"tokens", "gate", "up", "down"}, kResult, {}, moeExperts, nullptr, checkMoeExperts});
  addKernel(
      t, "moe_combine",
      {{"expert_out", "weights", "indices"}, kResult, {}, moeCombine, nullptr, checkMoeCombine});
}

} // namespace shardline::rt
