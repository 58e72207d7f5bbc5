//===- transfer.cpp - move a tensor between layouts -----------------------===//

#include "comm/transfer.h"

#include <algorithm>
#include <map>

namespace shardline::rt {

namespace {

/// For one dimension of the source layout: for every global index, the
/// coordinates of the splitting axes that own it and its local position.
struct DimOwners {
  std::vector<int64_t> axes;                // mesh axis indices splitting the dim
  std::vector<std::vector<int64_t>> coords; // per global index: coords of `axes`
  std::vector<int64_t> local;               // per global index: local position
};

DimOwners ownersOf(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &layout,
                   unsigned dim, const std::vector<int64_t> &base) {
  DimOwners o;
  for (const auto &a : layout.dims[dim])
    o.axes.push_back(mesh.axisIndex(a));
  o.coords.assign(shape[dim], {});
  o.local.assign(shape[dim], -1);
  std::vector<int64_t> combo(o.axes.size(), 0);
  while (true) {
    std::vector<int64_t> c = base;
    for (size_t i = 0; i < o.axes.size(); ++i)
      c[o.axes[i]] = combo[i];
    std::vector<int64_t> owned = ownedIndices(layout, mesh, shape, dim, mesh.rankAt(c));
    for (size_t i = 0; i < owned.size(); ++i) {
      o.coords[owned[i]] = combo;
      o.local[owned[i]] = (int64_t)i;
    }
    size_t k = o.axes.size();
    while (k > 0 && ++combo[k - 1] == mesh.axes[o.axes[k - 1]].second)
      combo[--k] = 0;
    if (k == 0)
      break;
  }
  return o;
}

/// Iterates over the local elements of `layout` on `rank` in row-major order,
/// giving each one's global index per dimension.
template <typename Fn>
void forEachLocal(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &layout,
                  int64_t rank, Fn fn) {
  std::vector<std::vector<int64_t>> owned;
  for (unsigned d = 0; d < shape.size(); ++d)
    owned.push_back(ownedIndices(layout, mesh, shape, d, rank));
  std::vector<size_t> pos(shape.size(), 0);
  std::vector<int64_t> global(shape.size());
  int64_t total = 1;
  for (const auto &o : owned)
    total *= (int64_t)o.size();
  for (int64_t i = 0; i < total; ++i) {
    for (size_t d = 0; d < shape.size(); ++d)
      global[d] = owned[d][pos[d]];
    fn(i, global);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++pos[d] < owned[d].size())
        break;
      pos[d] = 0;
    }
  }
}

} // namespace

int64_t TransferPlan::remoteElements(int64_t rank) const {
  int64_t n = 0;
  for (size_t m = 0; m < reads.size(); ++m)
    if ((int64_t)m != rank)
      n += (int64_t)reads[m].size();
  return n;
}

TransferPlan planTransfer(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                          const Layout &to, int64_t rank) {
  TransferPlan plan;
  for (const auto &a : to.partial)
    if (std::find(from.partial.begin(), from.partial.end(), a) == from.partial.end()) {
      plan.error = "cannot create a pending sum over '" + a + "'";
      return plan;
    }
  std::vector<int64_t> self = mesh.coords(rank);
  std::vector<DimOwners> owners;
  for (unsigned d = 0; d < shape.size(); ++d)
    owners.push_back(ownersOf(mesh, shape, from, d, self));
  std::vector<int64_t> srcLocal = localShape(from, mesh, shape);
  // Pending sums the target drops: every combination of those axes' coordinates.
  std::vector<int64_t> summed;
  for (const auto &a : from.partial)
    if (std::find(to.partial.begin(), to.partial.end(), a) == to.partial.end())
      summed.push_back(mesh.axisIndex(a));
  for (int64_t a : summed)
    plan.terms *= mesh.axes[a].second;
  plan.reads.assign(mesh.numRanks(), {});
  plan.sources.reserve(numElements(localShape(to, mesh, shape)) * plan.terms);

  forEachLocal(mesh, shape, to, rank, [&](int64_t, const std::vector<int64_t> &g) {
    std::vector<int64_t> c = self;
    int64_t offset = 0;
    for (size_t d = 0; d < shape.size(); ++d) {
      const DimOwners &o = owners[d];
      for (size_t k = 0; k < o.axes.size(); ++k)
        c[o.axes[k]] = o.coords[g[d]][k];
      offset = offset * srcLocal[d] + o.local[g[d]];
    }
    for (int64_t k = 0; k < plan.terms; ++k) {
      int64_t rest = k;
      for (int64_t a : summed) {
        c[a] = rest % mesh.axes[a].second;
        rest /= mesh.axes[a].second;
      }
      int64_t src = mesh.rankAt(c);
      plan.reads[src].push_back(offset);
      plan.sources.push_back((int32_t)src);
    }
  });
  return plan;
}

template <typename T>
static void applyTerms(const TransferPlan &plan, int64_t rank, const T *local,
                       const std::vector<std::vector<T>> &received, T *dst) {
  std::vector<size_t> next(plan.reads.size(), 0);
  size_t term = 0;
  auto nextTerm = [&]() {
    int32_t src = plan.sources[term++];
    size_t j = next[src]++;
    return src == rank ? local[plan.reads[src][j]] : received[src][j];
  };
  for (size_t i = 0; term < plan.sources.size(); ++i) {
    T sum = nextTerm();
    for (int64_t k = 1; k < plan.terms; ++k)
      sum += nextTerm();
    dst[i] = sum;
  }
}

void applyTransfer(const TransferPlan &plan, int64_t rank, const float *local,
                   const std::vector<std::vector<float>> &received, float *dst) {
  applyTerms(plan, rank, local, received, dst);
}

void applyTransfer(const TransferPlan &plan, int64_t rank, const int32_t *local,
                   const std::vector<std::vector<int32_t>> &received, int32_t *dst) {
  applyTerms(plan, rank, local, received, dst);
}

TransferResult transfer(const Mesh &mesh, const std::vector<int64_t> &shape, const Layout &from,
                        const std::vector<const float *> &sources, const Layout &to, int64_t rank,
                        float *dst) {
  TransferResult result;
  if ((int64_t)sources.size() != mesh.numRanks()) {
    result.error = "expected one source buffer per rank";
    return result;
  }
  TransferPlan plan = planTransfer(mesh, shape, from, to, rank);
  if (!plan.error.empty()) {
    result.error = plan.error;
    return result;
  }
  std::vector<std::vector<float>> received(plan.reads.size());
  for (size_t m = 0; m < plan.reads.size(); ++m)
    for (int64_t offset : plan.reads[m])
      received[m].push_back(sources[m][offset]);
  applyTransfer(plan, rank, sources[rank], received, dst);
  result.bytesRead = plan.remoteElements(rank) * (int64_t)sizeof(float);
  return result;
}

std::vector<int64_t> globalOffsets(const Mesh &mesh, const std::vector<int64_t> &shape,
                                   const Layout &layout, int64_t rank) {
  std::vector<int64_t> out(numElements(localShape(layout, mesh, shape)));
  forEachLocal(mesh, shape, layout, rank, [&](int64_t i, const std::vector<int64_t> &g) {
    int64_t flat = 0;
    for (size_t d = 0; d < shape.size(); ++d)
      flat = flat * shape[d] + g[d];
    out[i] = flat;
  });
  return out;
}

std::vector<float> extractLocal(const Mesh &mesh, const std::vector<int64_t> &shape,
                                const Layout &layout, const std::vector<float> &global,
                                int64_t rank) {
  std::vector<int64_t> offsets = globalOffsets(mesh, shape, layout, rank);
  std::vector<float> out(offsets.size());
  for (size_t i = 0; i < offsets.size(); ++i)
    out[i] = global[offsets[i]];
  return out;
}

} // namespace shardline::rt
