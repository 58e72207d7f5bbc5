//===- conv.cpp - Causal depthwise conv1d, its halo and the halo's dual --===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

namespace shardline::rt::cpu {

void causal_conv1d(const float *x, const float *w, const float *bias, const float *halo, int64_t B,
                   int64_t S, int64_t C, int64_t W, float *y) {
  assert(W >= 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < S; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        double acc = bias ? bias[c] : 0.0;
        for (int64_t j = 0; j < W; ++j) {
          int64_t src = t - (W - 1) + j;
          float val = 0.0f;
          if (src >= 0)
            val = x[(b * S + src) * C + c];
          else if (halo)
            val = halo[(b * (W - 1) + (W - 1) + src) * C + c];
          acc += static_cast<double>(w[c * W + j]) * val;
        }
        y[(b * S + t) * C + c] = static_cast<float>(acc);
      }
    }
  }
}

void causal_conv1d_halo(const float *x, const float *halo, int64_t B, int64_t S, int64_t C,
                        int64_t W, float *halo_out) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < W - 1; ++i) {
      // Index into xx = [halo; x]; the halo occupies its first W-1 rows.
      int64_t u = S + i;
      float *dst = halo_out + (b * (W - 1) + i) * C;
      if (u >= W - 1)
        std::memcpy(dst, x + (b * S + u - (W - 1)) * C, sizeof(float) * C);
      else if (halo)
        std::memcpy(dst, halo + (b * (W - 1) + u) * C, sizeof(float) * C);
      else
        std::fill(dst, dst + C, 0.0f);
    }
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

void conv(const Step &s, Frame &f) {
  int32_t x = s.in[0], out = s.out[0];
  bool hasHalo = s.has(3);
  const TensorInfo &xt = f.tensors[x];
  int64_t W = f.local(s.in[1])[1], k = hasHalo ? chunksOf(xt) : 1, S = xt.local[1] / k,
          C = xt.local[2];
  const float *hx = hasHalo ? f.f(s.in[3]) : nullptr;
  forEachChunk(xt, hasHalo, [&](int64_t rows, int64_t bi, int64_t c) {
    const float *haloRows = hx ? hx + (bi * k + c) * (W - 1) * C : nullptr;
    cpu::causal_conv1d(f.f(x) + rows * C, f.f(s.in[1]), f.f(s.in[2]), haloRows, 1, S, C, W,
                       f.f(out) + rows * C);
  });
}

enum { kHaloAxes, kHaloWidth };

/// Which rows this rank sends whom and where each row of its halo comes
/// from: the width tokens before each of a member's chunks, taken from the
/// first member of the group that holds them. X is the operand index of x
/// (sl.halo_add resolves the same rows and moves them the other way).
template <int X> void resolveHalo(Step &s, const Frame &f) {
  std::vector<int64_t> members = group(f, s.attrs[kHaloAxes]);
  const TensorInfo &xt = f.tensors[s.in[X]];
  int64_t width = s.attrs[kHaloWidth].i, k = chunksOf(xt), S = xt.local[1] / k;
  std::vector<std::vector<int64_t>> positions;
  for (int64_t m : members)
    positions.push_back(f.owned(s.in[X], 1, m));
  for (size_t q = 0; q < members.size(); ++q)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < width; ++j) {
        int64_t pos = positions[q][c * S] - width + j;
        if (pos < 0)
          continue;
        for (size_t m = 0; m < members.size(); ++m) {
          auto it = std::find(positions[m].begin(), positions[m].end(), pos);
          if (it == positions[m].end())
            continue;
          int64_t row = it - positions[m].begin();
          if (members[q] == f.self)
            s.facts.receives.push_back({members[m], row, c * width + j});
          else if (members[m] == f.self)
            s.facts.sends.push_back({members[q], row, 0});
          break;
        }
      }
}

/// The width tokens before each local chunk, from whoever holds them; rows
/// travel in the order the receiver lists them, batch entries innermost.
void halo(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[0]];
  int64_t slots = chunksOf(xt) * s.attrs[kHaloWidth].i, C = xt.local[2], B = xt.local[0];
  const float *xv = f.f(s.in[0]);
  auto row = [&](int64_t bi, int64_t r) { return xv + (bi * xt.local[1] + r) * C; };
  Mail sendTo = f.collectives->noMail(), recvFrom = f.collectives->noMail();
  for (const RankFacts::Row &r : s.facts.sends)
    for (int64_t bi = 0; bi < B; ++bi)
      sendTo[r.rank].insert(sendTo[r.rank].end(), row(bi, r.row), row(bi, r.row) + C);
  for (const RankFacts::Row &r : s.facts.receives)
    if (r.rank != f.self)
      recvFrom[r.rank].resize(recvFrom[r.rank].size() + B * C);
  f.collectives->exchange(s.attrs[kHaloAxes].strings, sendTo, recvFrom, xt.elementBytes());
  std::vector<size_t> next(recvFrom.size(), 0);
  float *y = f.f(s.out[0]);
  for (const RankFacts::Row &r : s.facts.receives)
    for (int64_t bi = 0; bi < B; ++bi) {
      const float *src = r.rank == f.self ? row(bi, r.row) : recvFrom[r.rank].data() + next[r.rank];
      if (r.rank != f.self)
        next[r.rank] += C;
      std::copy_n(src, C, y + (bi * slots + r.slot) * C);
    }
}

/// The dual of halo(): every halo slot's row goes back to the rank it came
/// from and is added to the token it was read from; tokens no halo read get
/// zero. Rows travel in the order the halo's sender lists them, so each
/// receiver reads them in its `sends` order.
void haloAdd(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[1]];
  int64_t slots = chunksOf(xt) * s.attrs[kHaloWidth].i, C = xt.local[2], B = xt.local[0];
  const float *g = f.f(s.in[0]);
  float *y = f.f(s.out[0]);
  std::fill(y, y + f.n(s.out[0]), 0.0f);
  auto row = [&](int64_t bi, int64_t r) { return y + (bi * xt.local[1] + r) * C; };
  auto slot = [&](int64_t bi, int64_t r) { return g + (bi * slots + r) * C; };
  auto addRow = [&](float *dst, const float *src) {
    for (int64_t c = 0; c < C; ++c)
      dst[c] += src[c];
  };
  Mail sendTo = f.collectives->noMail(), recvFrom = f.collectives->noMail();
  for (const RankFacts::Row &r : s.facts.receives)
    for (int64_t bi = 0; bi < B; ++bi) {
      if (r.rank == f.self)
        addRow(row(bi, r.row), slot(bi, r.slot));
      else
        sendTo[r.rank].insert(sendTo[r.rank].end(), slot(bi, r.slot), slot(bi, r.slot) + C);
    }
  for (const RankFacts::Row &r : s.facts.sends)
    recvFrom[r.rank].resize(recvFrom[r.rank].size() + B * C);
  f.collectives->exchange(s.attrs[kHaloAxes].strings, sendTo, recvFrom, xt.elementBytes());
  std::vector<size_t> next(recvFrom.size(), 0);
  for (const RankFacts::Row &r : s.facts.sends)
    for (int64_t bi = 0; bi < B; ++bi) {
      addRow(row(bi, r.row), recvFrom[r.rank].data() + next[r.rank]);
      next[r.rank] += C;
    }
}

// -- contracts --------------------------------------------------------------

/// x[B, S, C], weight[C, W], bias[C]; the halo holds W - 1 rows of C before
/// each sequence chunk of each batch entry, read in that compact order
/// (the halo op writes it so, whatever the halo's own layout).
void checkConv(Contract &c) {
  Contract::Arg x = operand(0), weight = operand(1), bias = operand(2), halo = operand(3);
  c.rank(x, 3).rank(weight, 2).rank(bias, 1).sameShape(result(0), x);
  c.sameDim(weight, 0, x, 2).sameDim(bias, 0, x, 2);
  if (!c.has(halo))
    return;
  int64_t k = c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(halo, Contract::product({c.dim(x, 0), k, c.dim(weight, 1) - 1, c.dim(x, 2)}),
                    "batch x chunks x (kernel width - 1) x channels");
}

/// The result holds `width` rows of C before each chunk of each batch entry.
void checkHalo(Contract &c) {
  Contract::Arg x = operand(0), out = result(0);
  c.rank(x, 3);
  if (!c.ok())
    return;
  c.attrIn(kHaloWidth, 0, c.global(x)[1]);
  int64_t k = c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(out, Contract::product({c.dim(x, 0), k, c.intAttr(kHaloWidth), c.dim(x, 2)}),
                    "batch x chunks x width x channels");
}

/// grad holds `width` rows of C before each chunk of each batch entry of x;
/// the result is x's shape.
void checkHaloAdd(Contract &c) {
  Contract::Arg grad = operand(0), x = operand(1), out = result(0);
  c.rank(grad, 3).rank(x, 3).sameShape(out, x);
  if (!c.ok())
    return;
  c.attrIn(kHaloWidth, 1, c.global(x)[1]);
  if (!c.ok())
    return;
  int64_t k = c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(grad, Contract::product({c.dim(x, 0), k, c.intAttr(kHaloWidth), c.dim(x, 2)}),
                    "batch x chunks x width x channels");
}

} // namespace

SHARDLINE_CPU_KERNELS(conv) {
  addKernel(t, "causal_conv1d",
            {{"x", "weight", "bias", "halo?"}, kResult, {}, conv, nullptr, checkConv});
  addKernel(t, "halo",
            {{"x"},
             kResult,
             {{"axes", AttrKind::Strings}, {"width", AttrKind::Int}},
             halo,
             resolveHalo<0>,
             checkHalo});
  addKernel(t, "halo_add",
            {{"grad", "x"},
             kResult,
             {{"axes", AttrKind::Strings}, {"width", AttrKind::Int}},
             haloAdd,
             resolveHalo<1>,
             checkHaloAdd});
}

} // namespace shardline::rt
