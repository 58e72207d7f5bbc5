//===- movement.cpp - how a layout transition runs on a group --------------===//

#include "comm/movement.h"

#include "comm/transfer.h"

#include <algorithm>
#include <functional>
#include <numeric>

namespace shardline::rt {

namespace {

int64_t product(const std::vector<int64_t> &v, size_t begin, size_t end) {
  return std::accumulate(v.begin() + begin, v.begin() + end, (int64_t)1,
                         std::multiplies<int64_t>());
}

} // namespace

MoveShape planMoveShape(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                        const Layout &to) {
  MoveShape m;
  Movement mv = classifyMovement(from, to, mesh, shape);
  std::vector<int64_t> in = localShape(from, mesh, shape), out = localShape(to, mesh, shape);
  int64_t g = mesh.product(mv.axes), d = mv.dim;
  m.inCount = numElements(in);
  m.outCount = numElements(out);
  auto plain = [&](bool fits) {
    if (!fits)
      return false;
    m.kind = mv.kind;
    m.axes = mv.axes;
    return true;
  };
  switch (mv.kind) {
  case MovementKind::Identity:
    plain(true);
    return m;
  case MovementKind::Slice:
  case MovementKind::ReduceScatter:
    // Cut the source along d into the members' pieces, in group order.
    if (plain(out[d] * g == in[d])) {
      m.outer = product(in, 0, d);
      m.splitRun = product(out, d, out.size());
      m.parts = g;
      return m;
    }
    break;
  case MovementKind::AllGather:
    // Join the members' pieces along d, in group order.
    if (plain(in[d] * g == out[d])) {
      m.joinOuter = product(in, 0, d);
      m.joinRun = product(in, d, in.size());
      return m;
    }
    break;
  case MovementKind::AllToAll: {
    // Cut along the split dimension, join what arrives along d.
    int64_t s = mv.splitDim;
    std::vector<int64_t> piece = in;
    piece[s] /= g;
    if (plain(in[s] % g == 0 && piece[d] * g == out[d])) {
      m.outer = product(in, 0, s);
      m.splitRun = product(piece, s, piece.size());
      m.joinOuter = product(piece, 0, d);
      m.joinRun = product(piece, d, piece.size());
      m.parts = g;
      return m;
    }
    break;
  }
  default:
    break;
  }
  // A general transfer on the group of every axis either layout uses.
  m.kind = MovementKind::General;
  m.usedByFrom.assign(mesh.axes.size(), false);
  std::vector<bool> used(mesh.axes.size(), false);
  for (const Layout *l : {&from, &to}) {
    std::vector<std::string> names = l->partial;
    for (const auto &dim : l->dims)
      names.insert(names.end(), dim.begin(), dim.end());
    for (const auto &a : names) {
      int64_t i = mesh.axisIndex(a);
      if (i < 0) {
        m.error = "layout " + l->str() + " uses '" + a + "', which is not a mesh axis";
        return m;
      }
      used[i] = true;
      if (l == &from)
        m.usedByFrom[i] = true;
    }
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (used[i])
      m.axes.push_back(mesh.axes[i].first);
  return m;
}

std::vector<StridedCopy> splitCopies(int64_t parts, int64_t outer, int64_t run) {
  std::vector<StridedCopy> copies;
  for (int64_t j = 0; j < parts; ++j)
    copies.push_back({j * run, parts * run, j * outer * run, run, run, outer});
  return copies;
}

std::vector<StridedCopy> joinCopies(int64_t parts, int64_t outer, int64_t run) {
  std::vector<StridedCopy> copies = splitCopies(parts, outer, run);
  for (StridedCopy &c : copies) {
    std::swap(c.srcOffset, c.dstOffset);
    std::swap(c.srcPitch, c.dstPitch);
  }
  return copies;
}

StridedCopy sliceCopy(const MoveShape &m, int64_t part) {
  return {part * m.splitRun, m.parts * m.splitRun, 0, m.splitRun, m.splitRun, m.outer};
}

bool splitAllReduce(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                    const Layout &to, Layout &mid) {
  std::vector<std::string> reduced;
  for (const auto &a : from.partial)
    if (std::find(to.partial.begin(), to.partial.end(), a) == to.partial.end())
      reduced.push_back(a);
  int64_t g = mesh.product(reduced);
  std::vector<int64_t> loc = localShape(from, mesh, shape);
  int64_t dim = -1;
  for (size_t d = 0; d < loc.size(); ++d)
    if (loc[d] % g == 0 && (dim < 0 || loc[d] > loc[dim]))
      dim = (int64_t)d;
  if (dim < 0 || g == 1)
    return false;
  mid = from;
  mid.partial = to.partial;
  bool wasWhole = mid.dims[dim].empty();
  mid.dims[dim].insert(mid.dims[dim].end(), reduced.begin(), reduced.end());
  if (wasWhole && mid.orderDim == dim)
    mid.orderDim = -1;
  return true;
}

bool mayRead(const Mesh &mesh, const MoveShape &move, int64_t rank, int64_t other) {
  if (rank == other)
    return false;
  std::vector<int64_t> mine = mesh.coords(rank), theirs = mesh.coords(other);
  for (size_t i = 0; i < move.usedByFrom.size(); ++i)
    if (!move.usedByFrom[i] && theirs[i] != mine[i])
      return false;
  return true;
}

namespace {

/// Appends element `from` -> `to` to `runs`, extending the last run when it
/// continues it.
void addElement(std::vector<ElementRun> &runs, int64_t from, int64_t to) {
  if (!runs.empty()) {
    ElementRun &last = runs.back();
    if (last.from + last.count == from && last.to + last.count == to) {
      ++last.count;
      return;
    }
  }
  runs.push_back({from, to, 1});
}

} // namespace

TransferRuns planTransferRuns(const Mesh &mesh, const std::vector<int64_t> &shape,
                              const Layout &from, const Layout &to, int64_t rank,
                              const std::vector<int64_t> &members) {
  TransferRuns out;
  TransferPlan mine = planTransfer(mesh, shape, from, to, rank);
  if (!mine.error.empty()) {
    out.error = mine.error;
    return out;
  }
  if (mine.terms != 1) {
    out.sums = true;
    return out;
  }
  MoveShape move = planMoveShape(mesh, shape, from, to);
  if (!move.error.empty()) {
    out.error = move.error;
    return out;
  }
  const int64_t g = (int64_t)members.size();
  out.sourceCount = numElements(localShape(from, mesh, shape));
  out.sendCounts.assign(g, 0);
  out.recvCounts.assign(g, 0);
  std::vector<int64_t> recvAt(mesh.numRanks(), -1);
  int64_t packed = 0, received = 0;
  for (int64_t j = 0; j < g; ++j) {
    int64_t member = members[j];
    if (member == rank)
      continue;
    if (mayRead(mesh, move, member, rank)) {
      TransferPlan theirs = planTransfer(mesh, shape, from, to, member);
      for (int64_t offset : theirs.reads[rank])
        addElement(out.pack, offset, packed++);
      out.sendCounts[j] = (int64_t)theirs.reads[rank].size();
    }
    recvAt[member] = received;
    out.recvCounts[j] = (int64_t)mine.reads[member].size();
    received += out.recvCounts[j];
  }
  std::vector<size_t> next(mesh.numRanks(), 0);
  for (size_t i = 0; i < mine.sources.size(); ++i) {
    int32_t source = mine.sources[i];
    int64_t j = (int64_t)next[source]++;
    if (source == rank) {
      addElement(out.place, mine.reads[source][j], (int64_t)i);
    } else if (recvAt[source] >= 0) {
      addElement(out.place, out.sourceCount + recvAt[source] + j, (int64_t)i);
    } else {
      out.error = "rank " + std::to_string(rank) + " reads from rank " + std::to_string(source) +
                  ", which is not in its group";
      return out;
    }
  }
  return out;
}

} // namespace shardline::rt
