//===- moe_dropless.cpp - Dropless MoE: routed rows by count --------------===//
//
// sl.moe_dropless and its gradient on one rank of the expert group: the ranks
// of `expert_axes` in Mesh::group order, member m owning experts
// [m El, (m + 1) El) with El = E / ep (the experts' split over those axes).
// A rank sorts its routed rows by expert, tells every member how many rows it
// sends to each of that member's experts, sends exactly those rows, and each
// owner runs every local expert once over the rows it received (grouped by
// expert, then by sender); the results travel back the same way. Nothing is
// sized experts x tokens; with a group of one (the single-device run) it is
// the plain computation and exchanges nothing.
//
// With expert tensor parallelism (`tensor_axes`, etp > 1), as Megatron's
// alltoall dispatcher runs it: the members of the expert-tensor group hold
// the same experts, each an ffn shard; after the exchange over the expert
// group each member sends the others its received rows' counts and then the
// rows, every member runs its experts on all of them (grouped by expert, then
// by member) with its ffn shard, and the partial outputs are reduce-scattered
// back, each member summing the shards of its own rows in member order,
// before the outputs travel back over the expert group.
//
// The exchange buffers are the kernel's own scratch, outside the arena, as
// ring attention's blocks are: their size depends on the routing.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace shardline::rt {

namespace {

enum DroplessOperand { kX, kWeights, kIndices, kGate, kUp, kDown, kDy };

/// One rank's side of the exchange, worked out from its routing.
struct Exchange {
  Axes axes;
  /// The group's world ranks in group order, and this rank's position.
  std::vector<int64_t> members;
  int64_t me = 0;
  int64_t T = 0, H = 0, F = 0, k = 0, E = 0, El = 0;
  /// This rank's routed rows sorted by expert (moe_dispatch), the rows per
  /// expert and each sorted row's (token, choice).
  std::vector<float> sorted;
  std::vector<int32_t> counts, perm;
  /// from[m][l]: the rows member m sends for local expert l (this rank's own
  /// included), and their sum over m per local expert.
  std::vector<std::vector<int32_t>> from;
  std::vector<int32_t> local;
  /// Rows this rank sends to, and receives from, other members.
  int64_t rowsOut = 0, rowsIn = 0;

  int64_t ep() const { return (int64_t)members.size(); }
  /// The first sorted row of member m's experts.
  int64_t firstRowOf(int64_t m) const {
    return std::accumulate(counts.begin(), counts.begin() + m * El, int64_t{0});
  }
  int64_t rowsTo(int64_t m) const { return firstRowOf(m + 1) - firstRowOf(m); }
};

/// Sends every other member m of `members` (this rank is member `me`) the
/// `El` counts `countsFor(m)` over `axes`, as exact floats counted at 4
/// bytes each, and stores what each sent this rank in from[m] (from[me]
/// untouched).
template <typename CountsFor>
void exchangeCounts(Frame &f, const Axes &axes, const std::vector<int64_t> &members, int64_t me,
                    int64_t El, CountsFor countsFor, std::vector<std::vector<int32_t>> &from) {
  if (members.size() <= 1)
    return;
  Mail out = f.collectives->noMail(), in = f.collectives->noMail();
  for (int64_t m = 0; m < (int64_t)members.size(); ++m) {
    if (m == me)
      continue;
    const int32_t *first = countsFor(m);
    out[members[m]].assign(first, first + El);
    in[members[m]].resize(El);
  }
  f.collectives->exchange(axes, out, in, 4);
  for (int64_t m = 0; m < (int64_t)members.size(); ++m)
    if (m != me)
      for (int64_t l = 0; l < El; ++l)
        from[m][l] = (int32_t)in[members[m]][l];
}

/// Sorts the rank's rows and exchanges the counts (El i32 values to every
/// other member).
Exchange plan(const Step &s, Frame &f) {
  Exchange ex;
  const std::vector<int64_t> &xl = f.local(s.in[kX]), &gl = f.local(s.in[kGate]);
  ex.T = xl[0] * xl[1];
  ex.H = xl[2];
  ex.k = f.local(s.in[kIndices])[2];
  ex.E = f.global(s.in[kGate])[0];
  ex.El = gl[0];
  ex.F = gl[2];
  ex.axes = s.attrs[0].strings;
  ex.members = ex.axes.empty() ? std::vector<int64_t>{f.self} : f.mesh.group(f.self, ex.axes);
  ex.me = std::find(ex.members.begin(), ex.members.end(), f.self) - ex.members.begin();
  requireIdsInRange(f, s.in[kIndices], ex.E, "the experts");
  ex.sorted.resize(ex.T * ex.k * ex.H);
  ex.counts.resize(ex.E);
  ex.perm.resize(ex.T * ex.k);
  cpu::moe_dispatch(f.f(s.in[kX]), f.ids(s.in[kIndices]), ex.T, ex.H, ex.k, ex.E, ex.sorted.data(),
                    ex.counts.data(), ex.perm.data());
  ex.from.assign(ex.ep(), std::vector<int32_t>(ex.El, 0));
  std::copy(ex.counts.begin() + ex.me * ex.El, ex.counts.begin() + (ex.me + 1) * ex.El,
            ex.from[ex.me].begin());
  exchangeCounts(
      f, ex.axes, ex.members, ex.me, ex.El, [&](int64_t m) { return ex.counts.data() + m * ex.El; },
      ex.from);
  ex.local.assign(ex.El, 0);
  for (int64_t m = 0; m < ex.ep(); ++m) {
    for (int64_t l = 0; l < ex.El; ++l)
      ex.local[l] += ex.from[m][l];
    if (m == ex.me)
      continue;
    ex.rowsOut += ex.rowsTo(m);
    ex.rowsIn += std::accumulate(ex.from[m].begin(), ex.from[m].end(), int64_t{0});
  }
  return ex;
}

/// Row r of member m's part of the rows this rank computes, grouped by local
/// expert and then by sender: where it lies in that grouping.
std::vector<int64_t> groupedOffsets(const Exchange &ex) {
  // offsets[m * El + l]: the first grouped row of member m's rows for l.
  std::vector<int64_t> offsets(ex.ep() * ex.El);
  int64_t next = 0;
  for (int64_t l = 0; l < ex.El; ++l)
    for (int64_t m = 0; m < ex.ep(); ++m) {
      offsets[m * ex.El + l] = next;
      next += ex.from[m][l];
    }
  return offsets;
}

/// Sends each member the sorted rows (`width` values each) of its experts
/// and returns the rows this rank computes, grouped by local expert and then
/// by sender.
std::vector<float> sendRows(const Exchange &ex, const float *rows, int64_t width,
                            int64_t bytesPerValue, Frame &f) {
  std::vector<int64_t> offsets = groupedOffsets(ex);
  int64_t total = std::accumulate(ex.local.begin(), ex.local.end(), int64_t{0});
  std::vector<float> grouped(total * width);
  // Member m's rows arrive (or lie, for this rank) ordered by expert.
  auto place = [&](int64_t m, const float *src) {
    for (int64_t l = 0; l < ex.El; ++l) {
      std::memcpy(grouped.data() + offsets[m * ex.El + l] * width, src,
                  sizeof(float) * ex.from[m][l] * width);
      src += ex.from[m][l] * width;
    }
  };
  place(ex.me, rows + ex.firstRowOf(ex.me) * width);
  if (ex.ep() > 1) {
    Mail out = f.collectives->noMail(), in = f.collectives->noMail();
    for (int64_t m = 0; m < ex.ep(); ++m) {
      if (m == ex.me)
        continue;
      const float *first = rows + ex.firstRowOf(m) * width;
      out[ex.members[m]].assign(first, first + ex.rowsTo(m) * width);
      in[ex.members[m]].resize(std::accumulate(ex.from[m].begin(), ex.from[m].end(), int64_t{0}) *
                               width);
    }
    f.collectives->exchange(ex.axes, out, in, bytesPerValue);
    for (int64_t m = 0; m < ex.ep(); ++m)
      if (m != ex.me)
        place(m, in[ex.members[m]].data());
  }
  return grouped;
}

/// The reverse of sendRows: each member gets back the grouped rows computed
/// for it; returns this rank's rows in sorted order.
std::vector<float> returnRows(const Exchange &ex, const float *grouped, int64_t width,
                              int64_t bytesPerValue, Frame &f) {
  std::vector<int64_t> offsets = groupedOffsets(ex);
  std::vector<float> rows(ex.T * ex.k * width);
  auto take = [&](int64_t m, float *dst) {
    for (int64_t l = 0; l < ex.El; ++l) {
      std::memcpy(dst, grouped + offsets[m * ex.El + l] * width,
                  sizeof(float) * ex.from[m][l] * width);
      dst += ex.from[m][l] * width;
    }
  };
  take(ex.me, rows.data() + ex.firstRowOf(ex.me) * width);
  if (ex.ep() > 1) {
    Mail out = f.collectives->noMail(), in = f.collectives->noMail();
    for (int64_t m = 0; m < ex.ep(); ++m) {
      if (m == ex.me)
        continue;
      out[ex.members[m]].resize(std::accumulate(ex.from[m].begin(), ex.from[m].end(), int64_t{0}) *
                                width);
      take(m, out[ex.members[m]].data());
      in[ex.members[m]].resize(ex.rowsTo(m) * width);
    }
    f.collectives->exchange(ex.axes, out, in, bytesPerValue);
    for (int64_t m = 0; m < ex.ep(); ++m)
      if (m != ex.me)
        std::copy(in[ex.members[m]].begin(), in[ex.members[m]].end(),
                  rows.begin() + ex.firstRowOf(m) * width);
  }
  return rows;
}

/// The expert-tensor group of `tensor_axes`: which rows each member received
/// over the expert group, per local expert.
struct TensorGroup {
  Axes axes;
  std::vector<int64_t> members;
  int64_t me = 0;
  /// rows[t][l]: the rows member t computes for local expert l after the
  /// expert group's exchange; total[l] their sum over the members.
  std::vector<std::vector<int32_t>> rows;
  std::vector<int32_t> total;

  int64_t etp() const { return (int64_t)members.size(); }
  int64_t rowsOf(int64_t t) const {
    return std::accumulate(rows[t].begin(), rows[t].end(), int64_t{0});
  }
};

/// Exchanges the counts of the rows this rank received (El i32 values to
/// every other member).
TensorGroup planTensor(const Step &s, Frame &f, const Exchange &ex) {
  TensorGroup tg;
  if (s.attrs.size() > 1 && s.attrs[1].present)
    tg.axes = s.attrs[1].strings;
  tg.members = tg.axes.empty() ? std::vector<int64_t>{f.self} : f.mesh.group(f.self, tg.axes);
  tg.me = std::find(tg.members.begin(), tg.members.end(), f.self) - tg.members.begin();
  tg.rows.assign(tg.etp(), std::vector<int32_t>(ex.El, 0));
  tg.rows[tg.me] = ex.local;
  exchangeCounts(
      f, tg.axes, tg.members, tg.me, ex.El, [&](int64_t) { return ex.local.data(); }, tg.rows);
  tg.total.assign(ex.El, 0);
  for (int64_t t = 0; t < tg.etp(); ++t)
    for (int64_t l = 0; l < ex.El; ++l)
      tg.total[l] += tg.rows[t][l];
  return tg;
}

/// offsets[t * El + l]: where member t's rows for local expert l lie among
/// the gathered rows, grouped by local expert and then by member.
std::vector<int64_t> gatheredOffsets(const TensorGroup &tg, int64_t El) {
  std::vector<int64_t> offsets(tg.etp() * El);
  int64_t next = 0;
  for (int64_t l = 0; l < El; ++l)
    for (int64_t t = 0; t < tg.etp(); ++t) {
      offsets[t * El + l] = next;
      next += tg.rows[t][l];
    }
  return offsets;
}

/// Sends every other member of the expert-tensor group this rank's received
/// rows (`width` values each, grouped by local expert) and returns all the
/// members' rows, grouped by local expert and then by member.
std::vector<float> gatherRows(const TensorGroup &tg, const std::vector<float> &mine, int64_t El,
                              int64_t width, int64_t bytesPerValue, Frame &f) {
  std::vector<int64_t> offsets = gatheredOffsets(tg, El);
  int64_t total = std::accumulate(tg.total.begin(), tg.total.end(), int64_t{0});
  std::vector<float> gathered(total * width);
  auto place = [&](int64_t t, const float *src) {
    for (int64_t l = 0; l < El; ++l) {
      std::memcpy(gathered.data() + offsets[t * El + l] * width, src,
                  sizeof(float) * tg.rows[t][l] * width);
      src += tg.rows[t][l] * width;
    }
  };
  place(tg.me, mine.data());
  Mail out = f.collectives->noMail(), in = f.collectives->noMail();
  for (int64_t t = 0; t < tg.etp(); ++t) {
    if (t == tg.me)
      continue;
    out[tg.members[t]] = mine;
    in[tg.members[t]].resize(tg.rowsOf(t) * width);
  }
  f.collectives->exchange(tg.axes, out, in, bytesPerValue);
  for (int64_t t = 0; t < tg.etp(); ++t)
    if (t != tg.me)
      place(t, in[tg.members[t]].data());
  return gathered;
}

/// The reverse of gatherRows for partial sums: each member gets back the
/// partial values of its rows from every other member; returns this rank's
/// rows (grouped by local expert) summed over the members in member order.
std::vector<float> reduceScatterRows(const TensorGroup &tg, const std::vector<float> &partial,
                                     int64_t El, int64_t width, int64_t bytesPerValue, Frame &f) {
  std::vector<int64_t> offsets = gatheredOffsets(tg, El);
  auto take = [&](int64_t t, float *dst) {
    for (int64_t l = 0; l < El; ++l) {
      std::memcpy(dst, partial.data() + offsets[t * El + l] * width,
                  sizeof(float) * tg.rows[t][l] * width);
      dst += tg.rows[t][l] * width;
    }
  };
  int64_t n = tg.rowsOf(tg.me) * width;
  Mail out = f.collectives->noMail(), in = f.collectives->noMail();
  for (int64_t t = 0; t < tg.etp(); ++t) {
    if (t == tg.me)
      continue;
    out[tg.members[t]].resize(tg.rowsOf(t) * width);
    take(t, out[tg.members[t]].data());
    in[tg.members[t]].resize(n);
  }
  f.collectives->exchange(tg.axes, out, in, bytesPerValue);
  std::vector<float> own(n), sum(n, 0.0f);
  take(tg.me, own.data());
  for (int64_t t = 0; t < tg.etp(); ++t) {
    const float *part = t == tg.me ? own.data() : in[tg.members[t]].data();
    for (int64_t i = 0; i < n; ++i)
      sum[i] += part[i];
  }
  return sum;
}

/// `values` rounded to `type` (to nearest even), held in f32.
void roundTo(DType type, std::vector<float> &values) {
  if (type == DType::BF16)
    for (float &v : values)
      v = bf16ToFloat(floatToBf16(v));
  else if (type == DType::F16)
    for (float &v : values)
      v = f16ToFloat(floatToF16(v));
}

/// The values the gather sent (this rank's rows to each other member) and
/// the reduce-scatter (each other member's rows back to it), per value of
/// `width`.
int64_t tensorRowsSent(const TensorGroup &tg) {
  int64_t out = (tg.etp() - 1) * tg.rowsOf(tg.me);
  for (int64_t t = 0; t < tg.etp(); ++t)
    if (t != tg.me)
      out += tg.rowsOf(t);
  return out;
}

/// Records what the step sent at its counts and at balanced routing (the
/// report's figure: (ep - 1) / ep of `rowBytes`, all the rank's routed rows'
/// exchanged values, and the counts; with etp > 1, etp - 1 times `rowBytes`
/// for the gather and the reduce-scatter, and their counts).
void recordBytes(const Step &s, Frame &f, const Exchange &ex, const TensorGroup &tg,
                 int64_t implied, int64_t rowBytes) {
  if (!f.variableBytes || (ex.ep() <= 1 && tg.etp() <= 1))
    return;
  int64_t counts = (ex.ep() - 1 + tg.etp() - 1) * ex.El * 4;
  (*f.variableBytes)[s.index] = {counts + implied, counts + rowBytes * (ex.ep() - 1) / ex.ep() +
                                                       rowBytes * (tg.etp() - 1)};
}

void moeDropless(const Step &s, Frame &f) {
  Exchange ex = plan(s, f);
  if (ExpertLoad *load = expertLoad(s, f, s.in[kIndices], ex.E))
    for (int64_t e = 0; e < ex.E; ++e)
      load->kept[e] += ex.counts[e];
  int64_t eb = f.tensors[s.in[kX]].elementBytes();
  std::vector<float> grouped = sendRows(ex, ex.sorted.data(), ex.H, eb, f);
  TensorGroup tg = planTensor(s, f, ex);
  if (tg.etp() > 1)
    grouped = gatherRows(tg, grouped, ex.El, ex.H, eb, f);
  std::vector<float> out(grouped.size());
  cpu::moe_experts(grouped.data(), tg.total.data(), ex.El, f.f(s.in[kGate]), f.f(s.in[kUp]),
                   f.f(s.in[kDown]), ex.H, ex.F, out.data());
  // A 16-bit step's expert outputs are of its type, as the experts' GEMMs
  // write them in Megatron: rounded where the GEMMs end and, with etp, once
  // more where the members' partial values are summed; they travel as
  // stored (the bytes counted), and the combine reads them widened.
  const DType type = f.tensors[s.in[kX]].dtype;
  roundTo(type, out);
  if (tg.etp() > 1) {
    out = reduceScatterRows(tg, out, ex.El, ex.H, eb, f);
    roundTo(type, out);
  }
  std::vector<float> back = returnRows(ex, out.data(), ex.H, eb, f);
  cpu::moe_combine(back.data(), ex.perm.data(), f.f(s.in[kWeights]), ex.T, ex.H, ex.k,
                   f.f(s.out[0]));
  recordBytes(s, f, ex, tg, (ex.rowsOut + ex.rowsIn + tensorRowsSent(tg)) * ex.H * eb,
              2 * ex.T * ex.k * ex.H * eb);
}

/// Each routed row's x and dy travel to the owner with the row's weight; the
/// owner recomputes the expert, returns the row's dx (weighted) and dweight
/// and keeps the weight gradients of the rows it received.
void moeDroplessGrad(const Step &s, Frame &f) {
  Exchange ex = plan(s, f);
  const int64_t R = ex.T * ex.k, H = ex.H;
  const float *dy = f.f(s.in[kDy]), *weights = f.f(s.in[kWeights]);
  std::vector<float> pairs(R * 2 * H), w(R);
  for (int64_t r = 0; r < R; ++r) {
    std::memcpy(pairs.data() + r * 2 * H, ex.sorted.data() + r * H, sizeof(float) * H);
    std::memcpy(pairs.data() + r * 2 * H + H, dy + (ex.perm[r] / ex.k) * H, sizeof(float) * H);
    w[r] = weights[ex.perm[r]];
  }
  int64_t eb = f.tensors[s.in[kX]].elementBytes(), wb = f.tensors[s.in[kWeights]].elementBytes();
  std::vector<float> got = sendRows(ex, pairs.data(), 2 * H, eb, f);
  std::vector<float> gotW = sendRows(ex, w.data(), 1, wb, f);
  TensorGroup tg = planTensor(s, f, ex);
  if (tg.etp() > 1) {
    got = gatherRows(tg, got, ex.El, 2 * H, eb, f);
    gotW = gatherRows(tg, gotW, ex.El, 1, wb, f);
  }
  const int64_t n = (int64_t)gotW.size();
  std::vector<float> x(n * H), dout(n * H), out(n * H), dx(n * H), dw(n);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(x.data() + i * H, got.data() + i * 2 * H, sizeof(float) * H);
    for (int64_t h = 0; h < H; ++h)
      dout[i * H + h] = gotW[i] * got[i * 2 * H + H + h];
  }
  const float *wg = f.f(s.in[kGate]), *wu = f.f(s.in[kUp]), *wd = f.f(s.in[kDown]);
  // With etp > 1, out, and so dw and dx, are this member's ffn shard's part.
  cpu::moe_experts(x.data(), tg.total.data(), ex.El, wg, wu, wd, H, ex.F, out.data());
  for (int64_t i = 0; i < n; ++i) {
    double acc = 0.0;
    for (int64_t h = 0; h < H; ++h)
      acc += static_cast<double>(out[i * H + h]) * got[i * 2 * H + H + h];
    dw[i] = static_cast<float>(acc);
  }
  cpu::moe_experts_grad(x.data(), dout.data(), tg.total.data(), ex.El, wg, wu, wd, H, ex.F,
                        dx.data(), f.f(s.out[2]), f.f(s.out[3]), f.f(s.out[4]));
  // A 16-bit step's dx and dweight rows are of its types where they are made
  // and, with etp, once more where the partial values are summed, as the
  // forward's outputs: what travels back in the bytes counted.
  const DType type = f.tensors[s.in[kX]].dtype, wtype = f.tensors[s.in[kWeights]].dtype;
  roundTo(type, dx);
  roundTo(wtype, dw);
  if (tg.etp() > 1) {
    dx = reduceScatterRows(tg, dx, ex.El, H, eb, f);
    dw = reduceScatterRows(tg, dw, ex.El, 1, wb, f);
    roundTo(type, dx);
    roundTo(wtype, dw);
  }
  std::vector<float> backX = returnRows(ex, dx.data(), H, eb, f);
  std::vector<float> backW = returnRows(ex, dw.data(), 1, wb, f);
  // dx of a token: its choices' rows summed in choice order.
  std::vector<int64_t> rowOf(R);
  for (int64_t r = 0; r < R; ++r)
    rowOf[ex.perm[r]] = r;
  float *dxOut = f.f(s.out[0]), *dwOut = f.f(s.out[1]);
  std::vector<double> acc(H);
  for (int64_t t = 0; t < ex.T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < ex.k; ++j) {
      const float *row = backX.data() + rowOf[t * ex.k + j] * H;
      for (int64_t h = 0; h < H; ++h)
        acc[h] += row[h];
      dwOut[t * ex.k + j] = backW[rowOf[t * ex.k + j]];
    }
    for (int64_t h = 0; h < H; ++h)
      dxOut[t * H + h] = static_cast<float>(acc[h]);
  }
  // The gather sends x, dy and the weight of each row, the reduce-scatter
  // dx and dweight: 3H + 2 values per row it moves, as over the expert group.
  int64_t gathered = (tg.etp() - 1) * tg.rowsOf(tg.me), scattered = tensorRowsSent(tg) - gathered;
  recordBytes(s, f, ex, tg,
              ex.rowsOut * (2 * H * eb + wb) + ex.rowsIn * (H * eb + wb) +
                  gathered * (2 * H * eb + wb) + scattered * (H * eb + wb),
              R * (3 * H * eb + 2 * wb));
}

// -- contracts --------------------------------------------------------------

/// x[B, S, H], weights and indices [B, S, k], gate and up [El, H, F], down
/// [El, F, H], the experts split over exactly `expert_axes` (El x ep = E);
/// with the gradient dy like x, dx like x, dweights like weights and the
/// weight gradients like the weights.
void checkMoeDropless(Contract &c) {
  Contract::Arg x = operand(kX), weights = operand(kWeights), indices = operand(kIndices),
                gate = operand(kGate), up = operand(kUp), down = operand(kDown);
  c.rank(x, 3).rank(weights, 3).sameShape(indices, weights);
  c.sameDim(weights, 0, x, 0).sameDim(weights, 1, x, 1);
  c.rank(gate, 3).rank(down, 3).sameShape(up, gate);
  c.sameDim(gate, 1, x, 2)
      .sameDim(down, 0, gate, 0)
      .sameDim(down, 1, gate, 2)
      .sameDim(down, 2, gate, 1);
  if (!c.ok())
    return;
  const Axes &axes = c.step.attrs[0].strings;
  const TensorInfo &g = c.frame.tensors[c.step.in[kGate]];
  c.require(g.layout.dims[0] == axes, "gate's experts are split over " +
                                          formatAxes(g.layout.dims[0]) +
                                          ", not over attribute 'expert_axes' " + formatAxes(axes));
  c.require(c.dim(gate, 0) * c.frame.mesh.product(axes) == c.global(gate)[0],
            "the " + std::to_string(c.global(gate)[0]) + " experts are not " +
                std::to_string(c.dim(gate, 0)) + " on each of the " +
                std::to_string(c.frame.mesh.product(axes)) + " ranks of " + formatAxes(axes));
  Axes tensor =
      c.step.attrs.size() > 1 && c.step.attrs[1].present ? c.step.attrs[1].strings : Axes{};
  c.require(g.layout.dims[2] == tensor, "gate's ffn is split over " + formatAxes(g.layout.dims[2]) +
                                            ", not over attribute 'tensor_axes' " +
                                            formatAxes(tensor));
  c.require(c.dim(gate, 2) * c.frame.mesh.product(tensor) == c.global(gate)[2],
            "the ffn of " + std::to_string(c.global(gate)[2]) + " is not " +
                std::to_string(c.dim(gate, 2)) + " on each of the " +
                std::to_string(c.frame.mesh.product(tensor)) + " ranks of " + formatAxes(tensor));
  c.require(c.dim(weights, 2) <= c.global(gate)[0],
            "k (" + std::to_string(c.dim(weights, 2)) + ") exceeds the " +
                std::to_string(c.global(gate)[0]) + " experts");
  if (c.step.kernel->operands.size() > kDy) {
    c.sameShape(operand(kDy), x).sameShape(result(0), x).sameShape(result(1), weights);
    c.sameShape(result(2), gate).sameShape(result(3), gate).sameShape(result(4), down);
  } else {
    c.sameShape(result(0), x);
  }
}

} // namespace

SHARDLINE_CPU_KERNELS(moe_dropless) {
  std::vector<std::string> operands = {"x", "weights", "indices", "gate", "up", "down"};
  std::vector<AttrSpec> attrs = {{"expert_axes", AttrKind::Strings},
                                 {"tensor_axes", AttrKind::Strings, true}};
  addKernel(t, "moe_dropless", {operands, kResult, attrs, moeDropless, nullptr, checkMoeDropless});
  operands.push_back("dy");
  addKernel(t, "moe_dropless_grad",
            {operands,
             {"dx", "dweights", "dgate", "dup", "ddown"},
             attrs,
             moeDroplessGrad,
             nullptr,
             checkMoeDropless});
}

} // namespace shardline::rt
