//===- layout.h - layout math on meshes ---------------------------*- C++ -*-===//
//
// Pure helpers: meshes, layouts, local shard shapes, which rank holds which
// tokens (contiguous and zigzag chunk orders), and the byte counts of the
// collectives (DESIGN §4 conventions). The runtime uses it to place shards;
// the compiler's verifier, passes and report use the same code (the
// ShardlineLayout library: this file and layout.cpp, nothing else).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_LAYOUT_H
#define SHARDLINE_RUNTIME_CORE_LAYOUT_H

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shardline {

enum class ChunkOrder { Contiguous, Zigzag };

struct Mesh {
  std::vector<std::pair<std::string, int64_t>> axes;

  /// Size of `axis`, or nullopt if the mesh has no such axis.
  std::optional<int64_t> size(const std::string &axis) const;
  int64_t numRanks() const;
  /// Product of the sizes of `axes` (unknown axes count as 1).
  int64_t product(const std::vector<std::string> &axes) const;
  /// Coordinates of a linear rank id (the last axis varies fastest).
  std::vector<int64_t> coords(int64_t rank) const;
  /// The linear rank id of coordinates (inverse of coords).
  int64_t rankAt(const std::vector<int64_t> &coords) const;
  /// Position of `axis` in the mesh, or -1.
  int64_t axisIndex(const std::string &axis) const;
  /// The ranks that differ from `rank` only in `axes`, `rank` included, in
  /// grid order over `axes` as listed (the first listed axis major): a
  /// collective's group, and a ring's order.
  std::vector<int64_t> group(int64_t rank, const std::vector<std::string> &axes) const;
};

struct Layout {
  std::vector<std::vector<std::string>> dims;
  std::vector<std::string> partial;
  /// The dimension whose chunk order is stated, or -1.
  int64_t orderDim = -1;
  ChunkOrder order = ChunkOrder::Contiguous;

  static Layout replicated(unsigned rank) {
    return Layout{std::vector<std::vector<std::string>>(rank), {}, -1, ChunkOrder::Contiguous};
  }
  ChunkOrder dimOrder(unsigned dim) const {
    return (int64_t)dim == orderDim ? order : ChunkOrder::Contiguous;
  }
  bool operator==(const Layout &o) const;
  bool operator!=(const Layout &o) const { return !(*this == o); }
  /// Textual form as in the IR: "[[], [cp, tp] zigzag, []], partial = [tp]".
  std::string str() const;
};

/// An axis list as the IR prints it: "[cp, tp]".
std::string formatAxes(const std::vector<std::string> &axes);

/// Checks a layout on its own and against a mesh and a global shape. Returns
/// an empty string or the reason it is invalid.
std::string verifyLayout(const Layout &layout, const Mesh *mesh, const std::vector<int64_t> *shape);

/// The shape one rank holds.
std::vector<int64_t> localShape(const Layout &layout, const Mesh &mesh,
                                const std::vector<int64_t> &shape);

/// The global indices along dimension `dim` that `rank` holds, in local order.
std::vector<int64_t> ownedIndices(const Layout &layout, const Mesh &mesh,
                                  const std::vector<int64_t> &shape, unsigned dim, int64_t rank);

int64_t numElements(const std::vector<int64_t> &shape);

/// Activations sit in one arena per rank, each in whole 64-byte slots: the
/// compiler plans with this and the runtime measures with it.
constexpr int64_t kArenaAlignment = 64;
inline int64_t arenaSlotBytes(int64_t bytes) {
  return (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

/// Bytes one rank sends with the bandwidth-optimal algorithm (DESIGN §4) for a
/// group of `g` ranks and a full (gathered) tensor of `fullBytes` bytes.
int64_t allGatherBytes(int64_t g, int64_t fullBytes);
int64_t reduceScatterBytes(int64_t g, int64_t fullBytes);
int64_t allReduceBytes(int64_t g, int64_t fullBytes);
/// For all-to-all, `localBytes` is what the rank holds before the exchange.
int64_t allToAllBytes(int64_t g, int64_t localBytes);

} // namespace shardline

#endif
