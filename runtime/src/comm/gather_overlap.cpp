//===- gather_overlap.cpp - a gather's pieces under the GEMM that reads it ===//

#include "comm/gather_overlap.h"

#include "comm/nccl_plan.h"

#include <algorithm>
#include <sstream>
#include <utility>

namespace shardline::rt {

namespace {

bool isLinear(const std::string &kind) { return kind == "linear" || kind == "lm_head"; }

bool isFloat(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

bool reads(const Step &s, int32_t t) {
  return std::find(s.in.begin(), s.in.end(), t) != s.in.end();
}

/// The copy the other way: from where it writes to where it reads.
StridedCopy reversed(StridedCopy c) {
  std::swap(c.srcOffset, c.dstOffset);
  std::swap(c.srcPitch, c.dstPitch);
  return c;
}

/// The linear step's launches of pair `o` (its pieces and staging known).
std::vector<OverlapLaunch> launchesOf(const GatherOverlap &o) {
  using L = OverlapLaunch;
  std::vector<int64_t> at(o.members);
  for (const GatherPiece &p : o.pieces)
    at[p.member] = o.inPlace ? p.placement.dstOffset : p.member * o.pieceCount;
  std::vector<L> out;
  auto add = [&](L::Kind kind, int64_t piece) -> L & {
    out.emplace_back();
    out.back().kind = kind;
    out.back().piece = piece;
    return out.back();
  };
  auto gemms = [&](int64_t piece) {
    for (const RowSpan &span : o.pieces[piece].rows)
      add(L::Gemm, piece).rows = span;
  };
  add(L::Follow, -1);
  const GatherPiece &own = o.pieces.front();
  if (!o.inPlace) {
    StridedCopy pack = reversed(own.placement);
    pack.dstOffset = at[own.member];
    add(L::Pack, 0).copy = pack;
  }
  gemms(0);
  for (int64_t k = 1; k < (int64_t)o.pieces.size(); ++k) {
    const GatherPiece &p = o.pieces[k];
    L &ring = add(L::Ring, k);
    ring.sendTo = p.sendTo;
    ring.recvFrom = p.recvFrom;
    ring.sendAt = at[p.sentMember];
    ring.recvAt = at[p.member];
    ring.count = o.pieceCount;
    if (!o.inPlace) {
      StridedCopy place = p.placement;
      place.srcOffset = at[p.member];
      add(L::Place, k).copy = place;
    }
    add(L::Record, k).event = p.event;
    add(L::Wait, k).event = p.event;
    gemms(k);
  }
  return out;
}

/// The schedule of the pair of `gather` and `linear` on `self`, or why
/// there is none.
std::string pairOf(const Step &gather, const Step &linear, const NcclStep &lowered,
                   const Mesh &mesh, const std::vector<TensorInfo> &tensors,
                   const NcclLowering &lowering, int64_t self, GatherOverlap &out) {
  const TensorInfo &x = tensors[gather.in[0]], &y = tensors[gather.out[0]];
  if (lowered.calls.size() != 1 || lowered.calls[0].op != NcclOp::AllGather)
    return "it is not one ncclAllGather";
  if (!isFloat(y.dtype))
    return std::string("it gathers ") + dtypeName(y.dtype) + " values";
  MoveShape m = planMoveShape(mesh, y.shape, x.layout, y.layout);
  if (!m.error.empty() || m.kind != MovementKind::AllGather)
    return "it is no plain all-gather";
  const NcclCommunicator &c = lowering.communicators[lowered.calls[0].communicator];
  int64_t g = (int64_t)c.members.size(), K = y.local.empty() ? 0 : y.local.back();
  int64_t outer = std::max<int64_t>(1, m.joinOuter), run = m.inCount / outer;
  if (y.local.size() < 2 || K <= 0 || run * outer != m.inCount || run % K != 0 || run == 0)
    return "its pieces are not whole rows of its last dimension (" + std::to_string(K) +
           " values): it gathers that dimension";
  if (linear.in[0] != gather.out[0] || linear.in[1] == gather.out[0])
    return "its first reader, op #" + std::to_string(linear.index) + " (sl." + linear.kind +
           "), does not take it as x";
  out.gatherStep = gather.index;
  out.linearStep = linear.index;
  out.gathered = gather.out[0];
  out.communicator = lowered.calls[0].communicator;
  out.members = g;
  out.place = std::find(c.members.begin(), c.members.end(), self) - c.members.begin();
  out.pieceCount = m.inCount;
  out.rowWidth = K;
  out.rows = y.count / K;
  out.bytesSent = lowered.calls[0].bytesSent;
  std::vector<StridedCopy> placements = joinCopies(g, outer, run);
  int64_t p = out.place, next = c.members[(p + 1) % g], prev = c.members[(p + g - 1) % g];
  for (int64_t k = 0; k < g; ++k) {
    GatherPiece piece;
    piece.member = (p + g - k) % g;
    piece.ringStep = k;
    if (k > 0) {
      piece.event = k - 1;
      piece.sendTo = next;
      piece.recvFrom = prev;
      piece.sentMember = (p + g - k + 1) % g;
    }
    piece.placement = placements[piece.member];
    piece.placement.srcOffset = 0;
    for (int64_t o = 0; o < outer; ++o)
      piece.rows.push_back({(o * g + piece.member) * run / K, run / K});
    out.pieces.push_back(std::move(piece));
  }
  out.inPlace = outer == 1;
  out.landingCount = out.inPlace ? 0 : g * m.inCount;
  out.launches = launchesOf(out);
  return "";
}

} // namespace

std::vector<GatherOverlap> planGatherOverlaps(const std::vector<Step> &program, const Mesh &mesh,
                                              const std::vector<TensorInfo> &tensors,
                                              const NcclLowering &lowering, int64_t rank,
                                              std::vector<UnpairedGather> *unpaired) {
  std::vector<GatherOverlap> pairs;
  for (const NcclStep &lowered : lowering.steps) {
    if (lowered.kind != "all_gather")
      continue;
    auto at = std::find_if(program.begin(), program.end(),
                           [&](const Step &s) { return s.index == lowered.step; });
    if (at == program.end())
      continue;
    int32_t gathered = at->out[0];
    auto reader =
        std::find_if(at + 1, program.end(), [&](const Step &s) { return reads(s, gathered); });
    std::string why;
    GatherOverlap pair;
    if (reader == program.end())
      why = "no step reads what it gathers";
    else if (!isLinear(reader->kind))
      why = "its first reader, op #" + std::to_string(reader->index) + " (sl." + reader->kind +
            "), is no linear";
    else
      why = pairOf(*at, *reader, lowered, mesh, tensors, lowering, rank, pair);
    if (why.empty())
      pairs.push_back(std::move(pair));
    else if (unpaired)
      unpaired->push_back({lowered.step, why});
  }
  return pairs;
}

std::string describe(const std::vector<GatherOverlap> &pairs,
                     const std::vector<UnpairedGather> &unpaired) {
  std::ostringstream os;
  for (const GatherOverlap &o : pairs) {
    os << "op #" << o.gatherStep << " (sl.all_gather) in " << o.members << " pieces under op #"
       << o.linearStep << ", pieces of members";
    for (const GatherPiece &p : o.pieces)
      os << " " << p.member;
    os << ", " << o.bytesSent << " bytes sent\n";
  }
  for (const UnpairedGather &u : unpaired)
    os << "op #" << u.gatherStep << " (sl.all_gather) whole: " << u.why << "\n";
  return os.str();
}

} // namespace shardline::rt
