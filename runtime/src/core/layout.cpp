//===- layout.cpp - layout math on meshes ---------------------------------===//

#include "core/layout.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <sstream>

namespace shardline {

std::optional<int64_t> Mesh::size(const std::string &axis) const {
  for (const auto &[name, n] : axes)
    if (name == axis)
      return n;
  return std::nullopt;
}

int64_t Mesh::numRanks() const {
  int64_t n = 1;
  for (const auto &a : axes)
    n *= a.second;
  return n;
}

int64_t Mesh::product(const std::vector<std::string> &names) const {
  int64_t n = 1;
  for (const auto &name : names)
    n *= size(name).value_or(1);
  return n;
}

std::vector<int64_t> Mesh::coords(int64_t rank) const {
  std::vector<int64_t> c(axes.size());
  for (size_t i = axes.size(); i-- > 0;) {
    c[i] = rank % axes[i].second;
    rank /= axes[i].second;
  }
  return c;
}

int64_t Mesh::rankAt(const std::vector<int64_t> &coords) const {
  int64_t r = 0;
  for (size_t i = 0; i < axes.size(); ++i)
    r = r * axes[i].second + coords[i];
  return r;
}

int64_t Mesh::axisIndex(const std::string &axis) const {
  for (size_t i = 0; i < axes.size(); ++i)
    if (axes[i].first == axis)
      return (int64_t)i;
  return -1;
}

std::vector<int64_t> Mesh::group(int64_t rank, const std::vector<std::string> &groupAxes) const {
  std::vector<int64_t> base = coords(rank), idx, out;
  for (const auto &a : groupAxes)
    idx.push_back(axisIndex(a));
  std::vector<int64_t> combo(idx.size(), 0);
  while (true) {
    std::vector<int64_t> c = base;
    for (size_t i = 0; i < idx.size(); ++i)
      c[idx[i]] = combo[i];
    out.push_back(rankAt(c));
    size_t k = idx.size();
    while (k > 0 && ++combo[k - 1] == axes[idx[k - 1]].second)
      combo[--k] = 0;
    if (k == 0)
      break;
  }
  return out;
}

bool Layout::operator==(const Layout &o) const {
  if (dims != o.dims || partial != o.partial)
    return false;
  for (unsigned d = 0; d < dims.size(); ++d)
    if (dimOrder(d) != o.dimOrder(d))
      return false;
  return true;
}

static void printAxes(std::ostream &os, const std::vector<std::string> &axes) {
  os << '[';
  for (size_t i = 0; i < axes.size(); ++i)
    os << (i ? ", " : "") << axes[i];
  os << ']';
}

std::string Layout::str() const {
  std::ostringstream os;
  os << '[';
  for (size_t d = 0; d < dims.size(); ++d) {
    if (d)
      os << ", ";
    printAxes(os, dims[d]);
    if ((int64_t)d == orderDim)
      os << (order == ChunkOrder::Zigzag ? " zigzag" : " contiguous");
  }
  os << ']';
  if (!partial.empty()) {
    os << ", partial = ";
    printAxes(os, partial);
  }
  return os.str();
}

std::string formatAxes(const std::vector<std::string> &axes) {
  std::ostringstream os;
  printAxes(os, axes);
  return os.str();
}

std::optional<int64_t> checkedProduct(const std::vector<int64_t> &factors) {
  int64_t n = 1;
  for (int64_t f : factors)
    if (f < 0 || __builtin_mul_overflow(n, f, &n))
      return std::nullopt;
  return n;
}

std::string verifyMesh(const Mesh &mesh) {
  int64_t ranks = 1;
  for (const auto &[name, size] : mesh.axes) {
    if (size < 1)
      return "axis '" + name + "' has size " + std::to_string(size) + "; sizes must be >= 1";
    // Sizes are at least 1, so the product only grows: stopping at the limit
    // keeps it from overflowing.
    if (size > kMaxMeshRanks || (ranks *= size) > kMaxMeshRanks)
      return "the mesh has more than " + std::to_string(kMaxMeshRanks) +
             " ranks (the limit) at axis '" + name + "' of size " + std::to_string(size);
  }
  return "";
}

std::string verifyLayout(const Layout &layout, const Mesh *mesh,
                         const std::vector<int64_t> *shape) {
  if (mesh)
    if (std::string err = verifyMesh(*mesh); !err.empty())
      return "invalid mesh: " + err;
  std::set<std::string> seen;
  auto use = [&](const std::string &axis, const std::string &where) -> std::string {
    if (mesh && !mesh->size(axis))
      return "unknown mesh axis '" + axis + "' in " + where;
    if (!seen.insert(axis).second)
      return "mesh axis '" + axis + "' is used twice (again in " + where + ")";
    return "";
  };
  for (size_t d = 0; d < layout.dims.size(); ++d)
    for (const auto &axis : layout.dims[d])
      if (auto err = use(axis, "dimension " + std::to_string(d)); !err.empty())
        return err;
  for (const auto &axis : layout.partial)
    if (auto err = use(axis, "partial"); !err.empty())
      return err;
  if (layout.orderDim >= (int64_t)layout.dims.size())
    return "chunk order on dimension " + std::to_string(layout.orderDim) + " of a rank-" +
           std::to_string(layout.dims.size()) + " layout";
  if (layout.orderDim >= 0 && layout.order == ChunkOrder::Zigzag &&
      layout.dims[layout.orderDim].empty())
    return "zigzag order on dimension " + std::to_string(layout.orderDim) +
           ", which no axis splits";
  if (!shape)
    return "";
  if (shape->size() != layout.dims.size())
    return "layout has " + std::to_string(layout.dims.size()) + " dimensions but the tensor has " +
           std::to_string(shape->size());
  for (size_t d = 0; d < shape->size(); ++d)
    if ((*shape)[d] < 0)
      return "dimension " + std::to_string(d) + " has negative size " + std::to_string((*shape)[d]);
  if (!mesh)
    return "";
  for (size_t d = 0; d < layout.dims.size(); ++d) {
    const auto &axes = layout.dims[d];
    if (axes.empty())
      continue;
    int64_t size = (*shape)[d];
    int64_t n = mesh->product(axes);
    if (layout.dimOrder(d) == ChunkOrder::Zigzag) {
      int64_t major = *mesh->size(axes[0]);
      if (size % (2 * major) != 0 || (size / major) % (n / major) != 0)
        return "dimension " + std::to_string(d) + " of size " + std::to_string(size) +
               " cannot be split in zigzag order over " + formatAxes(axes) +
               " (needs a multiple of " + std::to_string(std::lcm(2 * major, n)) + ")";
    } else if (size % n != 0) {
      return "dimension " + std::to_string(d) + " of size " + std::to_string(size) +
             " is not divisible by " + std::to_string(n) + " (the size of " + formatAxes(axes) +
             ")";
    }
  }
  return "";
}

std::vector<int64_t> localShape(const Layout &layout, const Mesh &mesh,
                                const std::vector<int64_t> &shape) {
  std::vector<int64_t> local = shape;
  for (size_t d = 0; d < shape.size() && d < layout.dims.size(); ++d)
    local[d] = shape[d] / mesh.product(layout.dims[d]);
  return local;
}

void appendRun(std::vector<TokenRun> &runs, int64_t start, int64_t length) {
  if (length <= 0)
    return;
  if (!runs.empty() && runs.back().end() == start)
    runs.back().length += length;
  else
    runs.push_back({start, length});
}

std::vector<TokenRun> sliceRuns(const std::vector<TokenRun> &runs, int64_t offset, int64_t length) {
  std::vector<TokenRun> out;
  for (const TokenRun &r : runs) {
    if (length <= 0)
      break;
    if (offset >= r.length) {
      offset -= r.length;
      continue;
    }
    int64_t take = std::min(length, r.length - offset);
    appendRun(out, r.start + offset, take);
    offset = 0;
    length -= take;
  }
  return out;
}

int64_t totalLength(const std::vector<TokenRun> &runs) {
  int64_t n = 0;
  for (const TokenRun &r : runs)
    n += r.length;
  return n;
}

std::vector<TokenRun> tokenRuns(const Layout &layout, const Mesh &mesh,
                                const std::vector<int64_t> &shape, unsigned dim, int64_t rank) {
  std::vector<TokenRun> out;
  if (dim >= layout.dims.size() || dim >= shape.size())
    return out;
  const auto &axes = layout.dims[dim];
  int64_t size = shape[dim];
  if (axes.empty()) {
    appendRun(out, 0, size);
    return out;
  }
  std::vector<int64_t> coord = mesh.coords(rank);
  auto coordOf = [&](const std::string &axis) {
    int64_t i = mesh.axisIndex(axis);
    return i < 0 ? int64_t(0) : coord[i];
  };
  // Position among axes[from..], major to minor, and how many positions there are.
  auto linear = [&](size_t from, int64_t &count) {
    int64_t idx = 0;
    count = 1;
    for (size_t i = from; i < axes.size(); ++i) {
      int64_t n = mesh.size(axes[i]).value_or(1);
      idx = idx * n + coordOf(axes[i]);
      count *= n;
    }
    return idx;
  };
  if (layout.dimOrder(dim) == ChunkOrder::Contiguous) {
    int64_t n;
    int64_t r = linear(0, n);
    int64_t block = size / n;
    appendRun(out, r * block, block);
    return out;
  }
  // Zigzag over the major axis: its rank c holds chunks c and 2m-1-c; the
  // minor axes split that share contiguously.
  int64_t m = mesh.size(axes[0]).value_or(1);
  int64_t c = coordOf(axes[0]);
  int64_t chunk = size / (2 * m);
  std::vector<TokenRun> share;
  appendRun(share, c * chunk, chunk);
  appendRun(share, (2 * m - 1 - c) * chunk, chunk);
  int64_t n;
  int64_t r = linear(1, n);
  int64_t block = 2 * chunk / n;
  return sliceRuns(share, r * block, block);
}

std::vector<int64_t> ownedIndices(const Layout &layout, const Mesh &mesh,
                                  const std::vector<int64_t> &shape, unsigned dim, int64_t rank) {
  std::vector<int64_t> out;
  for (const TokenRun &r : tokenRuns(layout, mesh, shape, dim, rank))
    for (int64_t i = r.start; i < r.end(); ++i)
      out.push_back(i);
  return out;
}

int64_t chunksPerRank(const Layout &layout, unsigned dim) {
  return dim < layout.dims.size() && !layout.dims[dim].empty() &&
                 layout.dimOrder(dim) == ChunkOrder::Zigzag
             ? 2
             : 1;
}

std::vector<TokenRun> sequenceChunks(const Layout &layout, const Mesh &mesh,
                                     const std::vector<int64_t> &shape, unsigned dim,
                                     int64_t rank) {
  std::vector<TokenRun> runs = tokenRuns(layout, mesh, shape, dim, rank);
  int64_t k = chunksPerRank(layout, dim);
  int64_t piece = totalLength(runs) / k;
  std::vector<TokenRun> out;
  for (int64_t c = 0; c < k; ++c) {
    // A piece never straddles the two zigzag chunks when the minor axes divide
    // a chunk; where they do not, the piece is cut at the chunk's end.
    std::vector<TokenRun> part = sliceRuns(runs, c * piece, piece);
    out.push_back(part.empty() ? TokenRun{0, 0} : part.front());
  }
  return out;
}

int64_t overlap(const std::vector<TokenRun> &a, const std::vector<TokenRun> &b) {
  int64_t n = 0;
  for (const TokenRun &x : a)
    for (const TokenRun &y : b)
      n += std::max<int64_t>(0, std::min(x.end(), y.end()) - std::max(x.start, y.start));
  return n;
}

Ring ringOf(const Mesh &mesh, int64_t rank, const std::vector<std::string> &axes) {
  Ring ring;
  ring.members = mesh.group(rank, axes);
  ring.position = std::find(ring.members.begin(), ring.members.end(), rank) - ring.members.begin();
  return ring;
}

namespace {
/// The entries of `a` that `b` lacks, in the order of `a`.
std::vector<std::string> without(const std::vector<std::string> &a,
                                 const std::vector<std::string> &b) {
  std::vector<std::string> out;
  for (const auto &x : a)
    if (std::find(b.begin(), b.end(), x) == b.end())
      out.push_back(x);
  return out;
}

bool sameSet(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

/// Whether, on every rank, the piece of `dim` that `whole` gives it is the
/// concatenation, in group order over `axes`, of the pieces `parts` gives the
/// group's members.
bool concatenates(const Layout &parts, const Layout &whole, const Mesh &mesh,
                  const std::vector<int64_t> &shape, unsigned dim,
                  const std::vector<std::string> &axes) {
  for (int64_t r = 0; r < mesh.numRanks(); ++r) {
    std::vector<TokenRun> joined;
    for (int64_t member : mesh.group(r, axes))
      for (const TokenRun &run : tokenRuns(parts, mesh, shape, dim, member))
        appendRun(joined, run.start, run.length);
    if (joined != tokenRuns(whole, mesh, shape, dim, r))
      return false;
  }
  return true;
}
} // namespace

Movement classifyMovement(const Layout &from, const Layout &to, const Mesh &mesh,
                          const std::vector<int64_t> &shape) {
  Movement general;
  if (!verifyLayout(from, &mesh, &shape).empty() || !verifyLayout(to, &mesh, &shape).empty())
    return general;
  std::vector<std::string> summed = without(from.partial, to.partial);
  if (!without(to.partial, from.partial).empty())
    return general; // a pending sum cannot appear by moving data
  std::vector<unsigned> changed;
  for (unsigned d = 0; d < from.dims.size(); ++d)
    if (from.dims[d] != to.dims[d] || from.dimOrder(d) != to.dimOrder(d))
      changed.push_back(d);
  if (changed.empty())
    return summed.empty() ? Movement{MovementKind::Identity, -1, -1, {}}
                          : Movement{MovementKind::AllReduce, -1, -1, summed};
  if (changed.size() == 1) {
    unsigned d = changed[0];
    std::vector<std::string> gathered = without(from.dims[d], to.dims[d]);
    std::vector<std::string> split = without(to.dims[d], from.dims[d]);
    if (!gathered.empty() && split.empty() && summed.empty() &&
        concatenates(from, to, mesh, shape, d, gathered))
      return {MovementKind::AllGather, d, -1, gathered};
    if (gathered.empty() && !split.empty() && concatenates(to, from, mesh, shape, d, split)) {
      if (summed.empty())
        return {MovementKind::Slice, d, -1, split};
      if (sameSet(summed, split))
        return {MovementKind::ReduceScatter, d, -1, split};
    }
    return general;
  }
  if (changed.size() == 2 && summed.empty()) {
    for (auto [g, s] : {std::pair{changed[0], changed[1]}, std::pair{changed[1], changed[0]}}) {
      std::vector<std::string> gathered = without(from.dims[g], to.dims[g]);
      if (gathered.empty() || !without(to.dims[g], from.dims[g]).empty() ||
          !without(from.dims[s], to.dims[s]).empty() ||
          without(to.dims[s], from.dims[s]) != gathered)
        continue;
      if (concatenates(from, to, mesh, shape, g, gathered) &&
          concatenates(to, from, mesh, shape, s, gathered))
        return {MovementKind::AllToAll, g, s, gathered};
    }
  }
  return general;
}

const char *movementName(MovementKind kind) {
  switch (kind) {
  case MovementKind::Identity:
    return "identity";
  case MovementKind::AllGather:
    return "all_gather";
  case MovementKind::Slice:
    return "slice";
  case MovementKind::ReduceScatter:
    return "reduce_scatter";
  case MovementKind::AllReduce:
    return "all_reduce";
  case MovementKind::AllToAll:
    return "all_to_all";
  case MovementKind::General:
    return "general";
  }
  return "general";
}

int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

namespace {
/// floor((g-1) * bytes / g), which is bytes - ceil(bytes / g) for bytes >= 0.
int64_t allButOneShare(int64_t g, int64_t bytes) { return bytes - (bytes / g + (bytes % g != 0)); }
} // namespace

int64_t allGatherBytes(int64_t g, int64_t fullBytes) { return allButOneShare(g, fullBytes); }
int64_t reduceScatterBytes(int64_t g, int64_t fullBytes) { return allButOneShare(g, fullBytes); }
int64_t allReduceBytes(int64_t g, int64_t fullBytes) {
  return allButOneShare(g, saturatingMul(2, fullBytes));
}
int64_t allToAllBytes(int64_t g, int64_t localBytes) { return allButOneShare(g, localBytes); }

} // namespace shardline
