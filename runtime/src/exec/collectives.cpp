//===- collectives.cpp - every exchange of a rank goes through here --------===//

#include "exec/collectives.h"
#include "exec/program.h"

#include <algorithm>

namespace shardline::rt {

namespace {

template <typename T> BufferView view(const T *data, int64_t count) {
  return BufferView(const_cast<T *>(data), count);
}

/// `count` elements of type T in `bytes`, grown as needed (a vector of char
/// may hold values of any type).
template <typename T> T *room(std::vector<char> &bytes, int64_t count) {
  bytes.resize(count * sizeof(T));
  return reinterpret_cast<T *>(bytes.data());
}

/// Throws Stop for a failed status: this rank's error, or an abort.
void check(const CommStatus &status) {
  if (!status)
    throw Stop{status.error, status.error.empty()};
}

} // namespace

Collectives::Collectives(Comm &comm, const Mesh &mesh)
    : comm(comm), mesh(mesh), self(comm.rank()), ranks(mesh.numRanks()) {}

Group &Collectives::group(const Axes &axes) {
  auto it = groups.find(axes);
  if (it != groups.end())
    return *it->second;
  // Color: the group's first member, the same on every member; key: the
  // place in the group's order.
  Ring ring = ringOf(mesh, self, axes);
  std::unique_ptr<Group> made;
  check(comm.split(ring.members.front(), ring.position, made));
  return *groups.emplace(axes, std::move(made)).first->second;
}

void Collectives::settle(const CommStatus &status, const Group &g, int64_t bytesPerValue) {
  check(status);
  // Every view is f32; the report counts each value at the plan's size.
  sent += status.bytesSent / (int64_t)sizeof(float) * bytesPerValue;
  if (g.size() > 1)
    ++calls[g.size()];
}

void Collectives::exchange(const Axes &axes, const Mail &sendTo, Mail &recvFrom,
                           int64_t bytesPerValue) {
  exchange(group(axes), sendTo, recvFrom, bytesPerValue);
}

template <typename T>
void Collectives::exchange(Group &g, const std::vector<std::vector<T>> &sendTo,
                           std::vector<std::vector<T>> &recvFrom, int64_t bytesPerValue) {
  std::vector<BufferView> sends(g.size()), receives(g.size());
  for (int64_t j = 0; j < g.size(); ++j) {
    int64_t m = g.members()[j];
    if (m == self)
      continue;
    sends[j] = view(sendTo[m].data(), (int64_t)sendTo[m].size());
    receives[j] = view(recvFrom[m].data(), (int64_t)recvFrom[m].size());
  }
  settle(g.exchange(sends, receives), g, bytesPerValue);
}

Mail Collectives::allGather(const Axes &axes, const std::vector<float> &mine,
                            int64_t bytesPerValue) {
  Group &g = group(axes);
  int64_t n = (int64_t)mine.size();
  std::vector<float> all(g.size() * n);
  settle(g.allGather(view(mine.data(), n), view(all.data(), (int64_t)all.size())), g,
         bytesPerValue);
  Mail out = noMail();
  for (int64_t j = 0; j < g.size(); ++j)
    out[g.members()[j]].assign(all.begin() + j * n, all.begin() + (j + 1) * n);
  return out;
}

Collectives::Move Collectives::planMove(const std::vector<int64_t> &shape, const Layout &from,
                                        const Layout &to) {
  Move m;
  MoveShape &shaped = m;
  shaped = planMoveShape(mesh, shape, from, to);
  if (!m.error.empty())
    throw Stop{m.error, false};
  switch (m.kind) {
  case MovementKind::Identity:
    return m;
  case MovementKind::Slice:
    m.part = ringOf(mesh, self, m.axes).position;
    return m;
  case MovementKind::General:
    break;
  default:
    m.group = &group(m.axes);
    return m;
  }
  m.mine = planTransfer(mesh, shape, from, to, self);
  if (!m.mine.error.empty())
    throw Stop{m.mine.error, false};
  m.group = &group(m.axes);
  m.sends.assign(m.group->size(), {});
  for (int64_t j = 0; j < m.group->size(); ++j) {
    int64_t r = m.group->members()[j];
    if (mayRead(mesh, m, r, self))
      m.sends[j] = planTransfer(mesh, shape, from, to, r).reads[self];
  }
  return m;
}

void Collectives::transition(int64_t key, const std::vector<int64_t> &shape, const Layout &from,
                             const Layout &to, const BufferView &src, const BufferView &dst,
                             int64_t bytesPerValue) {
  if (src.dtype != dst.dtype || (src.dtype != DType::F32 && src.dtype != DType::I32))
    throw Stop{std::string("a layout transition moves f32 or i32 values, not ") +
                   dtypeName(src.dtype) + " to " + dtypeName(dst.dtype),
               false};
  if (src.dtype == DType::I32 && !from.partial.empty())
    throw Stop{"layout " + from.str() +
                   " is a pending sum of an i32 tensor; integers are never summed",
               false};
  auto it = moves.find(key);
  if (it == moves.end())
    it = moves.emplace(key, planMove(shape, from, to)).first;
  if (src.dtype == DType::I32)
    return run(it->second, src.i32(), dst.i32(), bytesPerValue);
  run(it->second, src.f32(), dst.f32(), bytesPerValue);
}

template <typename T>
void Collectives::run(const Move &m, const T *src, T *dst, int64_t bytesPerValue) {
  int64_t inCount = m.inCount, outCount = m.outCount;
  Group *g = m.group;
  // The source cut into the members' pieces (in place when it already is).
  auto split = [&]() -> const T * {
    if (m.outer <= 1)
      return src;
    T *pieces = room<T>(packed, inCount);
    applyCopies(splitCopies(g->size(), m.outer, m.splitRun), src, pieces);
    return pieces;
  };
  // Where the pieces land, then joined into dst.
  T *landing = m.joinOuter <= 1 ? dst : room<T>(scratch, outCount);
  auto join = [&]() {
    if (landing != dst)
      applyCopies(joinCopies(g->size(), m.joinOuter, m.joinRun), landing, dst);
  };
  switch (m.kind) {
  case MovementKind::Identity:
    if (src != dst)
      std::copy_n(src, inCount, dst);
    return;
  case MovementKind::Slice:
    applyCopies({sliceCopy(m, m.part)}, src, dst);
    return;
  case MovementKind::AllGather:
    settle(g->allGather(view(src, inCount), view(landing, outCount)), *g, bytesPerValue);
    return join();
  case MovementKind::ReduceScatter:
    settle(g->reduceScatter(view(split(), inCount), view(dst, outCount)), *g, bytesPerValue);
    return;
  case MovementKind::AllToAll:
    settle(g->allToAll(view(split(), inCount), view(landing, outCount)), *g, bytesPerValue);
    return join();
  default:
    break;
  }
  std::vector<std::vector<T>> sendTo(ranks), recvFrom(ranks);
  for (int64_t j = 0; j < g->size(); ++j) {
    int64_t r = g->members()[j];
    if (r == self)
      continue;
    sendTo[r].reserve(m.sends[j].size());
    for (int64_t offset : m.sends[j])
      sendTo[r].push_back(src[offset]);
    recvFrom[r].resize(m.mine.reads[r].size());
  }
  exchange(*g, sendTo, recvFrom, bytesPerValue);
  applyTransfer(m.mine, self, src, recvFrom, dst);
}

void Collectives::allReduce(int64_t step, const std::vector<int64_t> &shape, const Layout &from,
                            const Layout &to, const float *src, float *dst, int64_t bytesPerValue) {
  // A pending sum keeps the shape: source and target parts are alike.
  std::vector<int64_t> loc = localShape(from, mesh, shape);
  BufferView in = view(src, numElements(loc)), out = view(dst, numElements(loc));
  Layout mid;
  if (!splitAllReduce(mesh, shape, from, to, mid))
    return transition(2 * step, shape, from, to, in, out, bytesPerValue);
  std::vector<float> half(numElements(localShape(mid, mesh, shape)));
  BufferView halfView(half.data(), (int64_t)half.size());
  transition(2 * step, shape, from, mid, in, halfView, bytesPerValue);
  transition(2 * step + 1, shape, mid, to, halfView, out, bytesPerValue);
}

void Collectives::barrier() {
  std::string error;
  if (!comm.barrier(error))
    throw Stop{error.empty() ? error : "barrier: " + error, error.empty()};
}

Axes Collectives::worldAxes() const {
  Axes world;
  for (const auto &axis : mesh.axes)
    world.push_back(axis.first);
  return world;
}

std::vector<std::vector<int64_t>> Collectives::gatherCounts(const std::vector<int64_t> &mine) {
  Group &g = group(worldAxes());
  int64_t n = (int64_t)mine.size();
  std::vector<int32_t> halves(2 * n), all(2 * n * g.size());
  for (int64_t k = 0; k < n; ++k) {
    uint64_t word = (uint64_t)mine[k];
    halves[2 * k] = (int32_t)(uint32_t)word;
    halves[2 * k + 1] = (int32_t)(uint32_t)(word >> 32);
  }
  check(g.allGather(view(halves.data(), 2 * n), view(all.data(), (int64_t)all.size())));
  std::vector<std::vector<int64_t>> out(ranks, std::vector<int64_t>(n));
  for (int64_t j = 0; j < g.size(); ++j)
    for (int64_t k = 0; k < n; ++k) {
      const int32_t *word = all.data() + (j * n + k) * 2;
      out[g.members()[j]][k] =
          (int64_t)((uint64_t)(uint32_t)word[0] | ((uint64_t)(uint32_t)word[1] << 32));
    }
  return out;
}

std::vector<float> Collectives::gatherToFirst(const std::vector<int64_t> &shape,
                                              const Layout &layout, const float *mine,
                                              int64_t count) {
  Axes world = worldAxes();
  Mail sendTo = noMail(), recvFrom = noMail();
  if (self != 0)
    sendTo[0].assign(mine, mine + count);
  else
    for (int64_t m = 1; m < ranks; ++m)
      recvFrom[m].resize(count);
  exchange(world, sendTo, recvFrom, 0);
  if (self != 0)
    return {};
  recvFrom[0].assign(mine, mine + count);
  std::vector<float> global(numElements(shape), 0.0f);
  for (int64_t r = 0; r < ranks; ++r) {
    std::vector<int64_t> offsets = globalOffsets(mesh, shape, layout, r);
    for (size_t i = 0; i < offsets.size(); ++i)
      global[offsets[i]] = recvFrom[r][i];
  }
  return global;
}

} // namespace shardline::rt
