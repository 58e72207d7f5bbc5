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
  std::vector<int32_t> counts;
  std::vector<int64_t> rows;
  detail::nonZeroSlabRows(slabs, E, R, H, counts, rows);
  std::vector<float> packed;
  packed.reserve(rows.size() * H);
  for (int64_t row : rows)
    packed.insert(packed.end(), slabs + row * H, slabs + (row + 1) * H);
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

void moe_capacity_slots(const float *weights, const int32_t *idx, const CapacityDims &d,
                        DropPolicy policy, int32_t *slots, int64_t *kept, int64_t *dropped) {
  // Each expert's candidates of one group, as flat (token, j) indices in
  // position order; reused from group to group.
  std::vector<std::vector<int64_t>> candidates(d.E);
  std::vector<int64_t> ranked;
  std::vector<char> keep;
  for (int64_t gb = 0; gb < d.groupsB(); ++gb)
    for (int64_t gs = 0; gs < d.groupsS(); ++gs) {
      for (auto &c : candidates)
        c.clear();
      for (int64_t b = gb * d.rows; b < (gb + 1) * d.rows; ++b)
        for (int64_t s = gs * d.positions; s < (gs + 1) * d.positions; ++s)
          for (int64_t j = 0; j < d.k; ++j) {
            const int64_t i = (b * d.S + s) * d.k + j;
            assert(idx[i] >= 0 && idx[i] < d.E);
            candidates[idx[i]].push_back(i);
          }
      for (int64_t e = 0; e < d.E; ++e) {
        const std::vector<int64_t> &c = candidates[e];
        const int64_t n = static_cast<int64_t>(c.size());
        keep.assign(n, 0);
        if (n <= d.C || policy == DropPolicy::Position) {
          std::fill(keep.begin(), keep.begin() + std::min(n, d.C), 1);
        } else {
          // The C largest weights; of equal weights the earlier position.
          ranked.resize(n);
          std::iota(ranked.begin(), ranked.end(), 0);
          std::partial_sort(ranked.begin(), ranked.begin() + d.C, ranked.end(),
                            [&](int64_t a, int64_t b) {
                              float wa = weights[c[a]], wb = weights[c[b]];
                              return wa > wb || (wa == wb && a < b);
                            });
          for (int64_t r = 0; r < d.C; ++r)
            keep[ranked[r]] = 1;
        }
        int32_t next = 0;
        for (int64_t r = 0; r < n; ++r)
          slots[c[r]] = keep[r] ? next++ : -1;
        if (kept)
          kept[e] += next;
        if (dropped)
          dropped[e] += n - next;
      }
    }
}

void moe_dispatch_capacity(const float *x, const int32_t *idx, const int32_t *slots,
                           const CapacityDims &d, int64_t H, float *buffers) {
  std::fill(buffers, buffers + d.E * d.groupsB() * d.groupsS() * d.C * H, 0.0f);
  detail::for_each_kept(idx, slots, d, [&](int64_t t, int64_t, int64_t row) {
    std::memcpy(buffers + row * H, x + t * H, sizeof(float) * H);
  });
}

void moe_combine_capacity(const float *buffers, const float *weights, const int32_t *idx,
                          const int32_t *slots, const CapacityDims &d, int64_t H, float *y) {
  std::vector<double> acc(d.B * d.S * H, 0.0);
  detail::for_each_kept(idx, slots, d, [&](int64_t t, int64_t j, int64_t row) {
    const double w = weights[t * d.k + j];
    for (int64_t h = 0; h < H; ++h)
      acc[t * H + h] += w * buffers[row * H + h];
  });
  for (size_t i = 0; i < acc.size(); ++i)
    y[i] = static_cast<float>(acc[i]);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

std::vector<AttrSpec> capacityAttrs(bool withExperts) {
  std::vector<AttrSpec> attrs = {{"group", AttrKind::Ints}};
  if (withExperts)
    attrs.insert(attrs.begin(), {{"experts", AttrKind::Int}, {"capacity", AttrKind::Int}});
  return attrs;
}

void checkCapacity(Contract &c, std::initializer_list<Contract::Arg> routing, Contract::Arg tokens,
                   Contract::Arg buffers) {
  const bool attrsEC = c.step.attrs.size() > 1;
  const std::vector<int64_t> &group = c.step.attrs[attrsEC ? kGroup : 0].ints;
  c.require(group.size() == 2, "attribute 'group' holds " + std::to_string(group.size()) +
                                   " integers, not 2 (rows, positions)");
  if (!c.ok())
    return;
  c.require(group[0] >= 1 && group[1] >= 1, "attribute 'group' is [" + std::to_string(group[0]) +
                                                ", " + std::to_string(group[1]) +
                                                "]: a group has at least one row and one position");
  if (!c.ok())
    return; // the checks below divide by the group
  if (attrsEC) {
    c.require(c.intAttr(kExperts) >= 1,
              "attribute 'experts' is " + std::to_string(c.intAttr(kExperts)) + ", not positive");
    c.require(c.intAttr(kCapacity) >= 1,
              "attribute 'capacity' is " + std::to_string(c.intAttr(kCapacity)) + ", not positive");
  }
  Contract::Arg first = *routing.begin();
  for (Contract::Arg r : routing)
    c.rank(r, 3).sameShape(r, first);
  c.rank(tokens, 3).sameDim(tokens, 0, first, 0).sameDim(tokens, 1, first, 1);
  for (int d : {0, 1})
    c.require(c.dim(first, d) % group[d] == 0,
              c.dimText(first, d) + ", which groups of " + std::to_string(group[d]) +
                  (d == 0 ? " rows" : " positions") + " do not tile");
  c.rank(buffers, 5);
  if (!c.ok())
    return;
  c.dimIs(buffers, 1, c.dim(first, 0) / group[0], "the groups along the batch per rank")
      .dimIs(buffers, 2, c.dim(first, 1) / group[1], "the groups along the sequence per rank")
      .sameDim(buffers, 4, tokens, 2);
  if (attrsEC)
    c.dimIs(buffers, 0, c.intAttr(kExperts), "attribute 'experts'")
        .dimIs(buffers, 3, c.intAttr(kCapacity), "attribute 'capacity'");
}

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
  if (ExpertLoad *load = expertLoad(s, f, s.in[1], f.local(s.out[0])[0])) {
    const int32_t *idx = f.ids(s.in[1]);
    for (int64_t i = 0; i < f.n(s.in[1]); ++i)
      ++load->kept[idx[i]];
  }
}

void moeExperts(const Step &s, Frame &f) {
  const std::vector<int64_t> &tl = f.local(s.in[0]), &gl = f.local(s.in[1]);
  cpu::moe_experts_slabs(f.f(s.in[0]), tl[0], expertRows(tl), f.f(s.in[1]), f.f(s.in[2]),
                         f.f(s.in[3]), gl[1], gl[2], f.f(s.out[0]));
}

// -- capacity mode ----------------------------------------------------------

void moeCapacitySlots(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[1], -1);
  requireIdsInRange(f, s.in[1], d.E, "the experts");
  ExpertLoad *load = expertLoad(s, f, s.in[1], d.E);
  cpu::moe_capacity_slots(
      f.f(s.in[0]), f.ids(s.in[1]), d,
      s.attrs[kPolicy].strings[0] == "probs" ? cpu::DropPolicy::Probs : cpu::DropPolicy::Position,
      f.ids(s.out[0]), load ? load->kept.data() : nullptr, load ? load->dropped.data() : nullptr);
}

void moeDispatchCapacity(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[1], s.out[0]);
  requireIdsInRange(f, s.in[1], d.E, "the experts");
  requireSlotsInRange(f, s.in[2], d.C);
  cpu::moe_dispatch_capacity(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), d, f.local(s.in[0])[2],
                             f.f(s.out[0]));
}

void moeCombineCapacity(const Step &s, Frame &f) {
  cpu::CapacityDims d = capacityDims(s, f, s.in[2], s.in[0]);
  requireIdsInRange(f, s.in[2], d.E, "the experts");
  requireSlotsInRange(f, s.in[3], d.C);
  cpu::moe_combine_capacity(f.f(s.in[0]), f.f(s.in[1]), f.ids(s.in[2]), f.ids(s.in[3]), d,
                            f.local(s.in[0])[4], f.f(s.out[0]));
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

/// tokens[E, r1, ..., rn, H] (n >= 1), gate and up [E, H, F], down [E, F, H].
void checkMoeExperts(Contract &c) {
  Contract::Arg tokens = operand(0), gate = operand(1), up = operand(2), down = operand(3);
  c.rankAtLeast(tokens, 3).rank(gate, 3).rank(down, 3).sameShape(up, gate);
  c.sameDim(gate, 0, tokens, 0).sameDim(gate, 1, tokens, -1);
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

/// weights, indices [B, S, k] -> slots [B, S, k]; groups tile [B, S]; a
/// known drop policy.
void checkMoeCapacitySlots(Contract &c) {
  c.rank(operand(0), 3).sameShape(operand(1), operand(0)).sameShape(result(0), operand(0));
  const std::vector<std::string> &policy = c.step.attrs[kPolicy].strings;
  c.require(policy[0] == "probs" || policy[0] == "position",
            "attribute 'drop_policy' is '" + policy[0] + "', not 'probs' or 'position'");
  checkCapacity(c, {operand(0), operand(1), result(0)}, kNoArg, kNoArg);
}

/// x[B, S, H], indices and slots [B, S, k] -> [E, Gb, Gs, C, H].
void checkMoeDispatchCapacity(Contract &c) {
  checkCapacity(c, {operand(1), operand(2)}, operand(0), result(0));
}

/// expert_out[E, Gb, Gs, C, H], weights, indices, slots [B, S, k] -> [B, S, H].
void checkMoeCombineCapacity(Contract &c) {
  checkCapacity(c, {operand(1), operand(2), operand(3)}, result(0), operand(0));
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
  std::vector<AttrSpec> slotsAttrs = capacityAttrs(true);
  slotsAttrs.push_back({"drop_policy", AttrKind::Name});
  addKernel(t, "moe_capacity_slots",
            {{"weights", "indices"},
             {"slots"},
             slotsAttrs,
             moeCapacitySlots,
             nullptr,
             checkMoeCapacitySlots});
  addKernel(t, "moe_dispatch_capacity",
            {{"x", "indices", "slots"},
             kResult,
             capacityAttrs(true),
             moeDispatchCapacity,
             nullptr,
             checkMoeDispatchCapacity});
  addKernel(t, "moe_combine_capacity",
            {{"expert_out", "weights", "indices", "slots"},
             kResult,
             capacityAttrs(false),
             moeCombineCapacity,
             nullptr,
             checkMoeCombineCapacity});
  addKernel(
      t, "moe_combine",
      {{"expert_out", "weights", "indices"}, kResult, {}, moeCombine, nullptr, checkMoeCombine});
}

} // namespace shardline::rt
