//===- scatter_overlap.cpp - a reduce-scatter's pieces under its linear ----===//

#include "comm/scatter_overlap.h"

#include "comm/nccl_plan.h"

#include <algorithm>
#include <sstream>

namespace shardline::rt {

namespace {

bool isFloat(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

bool reads(const Step &s, int32_t t) {
  return std::find(s.in.begin(), s.in.end(), t) != s.in.end();
}

/// The linear step's launches of pair `o` (its pieces known).
std::vector<ScatterLaunch> launchesOf(const ScatterOverlap &o,
                                      const std::vector<StridedCopy> &pieces,
                                      const std::vector<int64_t> &members) {
  using L = ScatterLaunch;
  const int64_t g = o.members, p = o.place;
  std::vector<L> out;
  auto add = [&](L::Kind kind, int64_t member) -> L & {
    out.emplace_back();
    out.back().kind = kind;
    out.back().member = member;
    return out.back();
  };
  auto gemms = [&](int64_t member) {
    for (const RowSpan &span : o.pieceRows[member])
      add(L::Gemm, member).rows = span;
  };
  for (int64_t k = 1; k < g; ++k) {
    int64_t to = (p + k) % g, from = (p + g - k) % g;
    gemms(to);
    if (!o.inPlace)
      add(L::Pack, to).copy = pieces[to];
    add(L::Follow, to);
    L &x = add(L::Exchange, to);
    x.sendTo = members[to];
    x.recvFrom = members[from];
    x.sendAt = to * o.pieceCount;
    x.recvAt = from * o.pieceCount;
    x.count = o.pieceCount;
  }
  gemms(p);
  add(L::Own, p).copy = pieces[p];
  return out;
}

/// The pair of `linear` and `scatter` on `self`, or why there is none.
std::string pairOf(const Step &linear, const Step &scatter, const NcclStep &lowered,
                   const Mesh &mesh, const std::vector<TensorInfo> &tensors,
                   const NcclLowering &lowering, int64_t self, ScatterOverlap &out) {
  const TensorInfo &x = tensors[scatter.in[0]], &y = tensors[scatter.out[0]];
  if (!isFloat(x.dtype))
    return std::string("it sums ") + dtypeName(x.dtype) + " values";
  if (x.dtype != y.dtype)
    return std::string("its operand is ") + dtypeName(x.dtype) + ", its result " +
           dtypeName(y.dtype);
  MoveShape m = planMoveShape(mesh, y.shape, x.layout, y.layout);
  if (!m.error.empty() || m.kind != MovementKind::ReduceScatter)
    return "it is no plain reduce-scatter";
  bool one =
      lowered.calls.size() == 1 &&
      lowered.calls[0].op == (sumsInOrder(x.dtype) ? NcclOp::SendRecv : NcclOp::ReduceScatter);
  if (!one)
    return "it is not one reduce-scatter call";
  int64_t c = lowered.calls[0].communicator;
  const NcclCommunicator &comm = lowering.communicators[c];
  int64_t g = (int64_t)comm.members.size(), N = x.local.empty() ? 0 : x.local.back();
  int64_t outer = std::max<int64_t>(1, m.outer), run = m.splitRun;
  if (x.local.size() < 2 || N <= 0 || run * outer != m.outCount || run % N != 0 || run == 0)
    return "its pieces are not whole rows of its last dimension (" + std::to_string(N) +
           " values): it scatters that dimension";
  if (linear.kind != "linear" || linear.out[0] != scatter.in[0])
    return "its operand is not made by the linear right before it";
  out.linearStep = linear.index;
  out.scatterStep = scatter.index;
  out.partial = scatter.in[0];
  out.communicator = c;
  out.members = g;
  out.place = std::find(comm.members.begin(), comm.members.end(), self) - comm.members.begin();
  out.pieceCount = m.outCount;
  out.rowWidth = N;
  out.rows = x.count / N;
  out.bytesSent = lowered.calls[0].bytesSent;
  out.inPlace = outer == 1;
  out.pieceRows.assign(g, {});
  for (int64_t j = 0; j < g; ++j)
    for (int64_t o = 0; o < outer; ++o)
      out.pieceRows[j].push_back({(o * g + j) * run / N, run / N});
  out.launches = launchesOf(out, splitCopies(g, outer, run), comm.members);
  return "";
}

} // namespace

std::vector<ScatterOverlap> planScatterOverlaps(const std::vector<Step> &program, const Mesh &mesh,
                                                const std::vector<TensorInfo> &tensors,
                                                const NcclLowering &lowering, int64_t rank,
                                                std::vector<UnpairedScatter> *unpaired) {
  std::vector<ScatterOverlap> pairs;
  for (const NcclStep &lowered : lowering.steps) {
    if (lowered.kind != "reduce_scatter")
      continue;
    auto at = std::find_if(program.begin(), program.end(),
                           [&](const Step &s) { return s.index == lowered.step; });
    if (at == program.end())
      continue;
    std::string why;
    ScatterOverlap pair;
    int32_t partial = at->in[0];
    if (at == program.begin())
      why = "no step makes its operand right before it";
    else if (std::any_of(lowering.overlaps.begin(), lowering.overlaps.end(),
                         [&](const GatherOverlap &o) { return o.linearStep == (at - 1)->index; }))
      why = "its linear, op #" + std::to_string((at - 1)->index) + ", runs under a gather";
    else if (std::any_of(at + 1, program.end(), [&](const Step &s) { return reads(s, partial); }))
      why = "another step reads its operand";
    else
      why = pairOf(*(at - 1), *at, lowered, mesh, tensors, lowering, rank, pair);
    if (why.empty())
      pairs.push_back(std::move(pair));
    else if (unpaired)
      unpaired->push_back({lowered.step, why});
  }
  return pairs;
}

std::string describe(const std::vector<ScatterOverlap> &pairs,
                     const std::vector<UnpairedScatter> &unpaired) {
  std::ostringstream os;
  for (const ScatterOverlap &o : pairs)
    os << "op #" << o.scatterStep << " (sl.reduce_scatter) in " << o.members << " pieces under op #"
       << o.linearStep << (o.inPlace ? ", in place" : ", staged") << ", " << o.bytesSent
       << " bytes sent\n";
  for (const UnpairedScatter &u : unpaired)
    os << "op #" << u.scatterStep << " (sl.reduce_scatter) whole: " << u.why << "\n";
  return os.str();
}

} // namespace shardline::rt
