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

std::string verifyLayout(const Layout &layout, const Mesh *mesh,
                         const std::vector<int64_t> *shape) {
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

std::vector<int64_t> ownedIndices(const Layout &layout, const Mesh &mesh,
                                  const std::vector<int64_t> &shape, unsigned dim, int64_t rank) {
  const auto &axes = layout.dims[dim];
  int64_t size = shape[dim];
  std::vector<int64_t> coord = mesh.coords(rank);
  auto coordOf = [&](const std::string &axis) {
    for (size_t i = 0; i < mesh.axes.size(); ++i)
      if (mesh.axes[i].first == axis)
        return coord[i];
    return int64_t(0);
  };
  // Linear position among the minor axes (after the first), major to minor.
  auto linear = [&](size_t from, int64_t &count) {
    int64_t idx = 0;
    count = 1;
    for (size_t i = from; i < axes.size(); ++i) {
      int64_t n = *mesh.size(axes[i]);
      idx = idx * n + coordOf(axes[i]);
      count *= n;
    }
    return idx;
  };
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (int64_t i = 0; i < size; ++i)
      out.push_back(i);
    return out;
  }
  if (layout.dimOrder(dim) == ChunkOrder::Contiguous) {
    int64_t n;
    int64_t r = linear(0, n);
    int64_t block = size / n;
    for (int64_t i = 0; i < block; ++i)
      out.push_back(r * block + i);
    return out;
  }
  // Zigzag over the major axis: its rank c holds chunks c and 2m-1-c; the
  // minor axes split that share contiguously.
  int64_t m = *mesh.size(axes[0]);
  int64_t c = coordOf(axes[0]);
  int64_t chunk = size / (2 * m);
  std::vector<int64_t> share;
  for (int64_t part : {c, 2 * m - 1 - c})
    for (int64_t i = 0; i < chunk; ++i)
      share.push_back(part * chunk + i);
  int64_t n;
  int64_t r = linear(1, n);
  int64_t block = (int64_t)share.size() / n;
  out.assign(share.begin() + r * block, share.begin() + (r + 1) * block);
  return out;
}

int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t allGatherBytes(int64_t g, int64_t fullBytes) { return (g - 1) * fullBytes / g; }
int64_t reduceScatterBytes(int64_t g, int64_t fullBytes) { return (g - 1) * fullBytes / g; }
int64_t allReduceBytes(int64_t g, int64_t fullBytes) { return 2 * (g - 1) * fullBytes / g; }
int64_t allToAllBytes(int64_t g, int64_t localBytes) { return (g - 1) * localBytes / g; }

} // namespace shardline
