//===- layout.h - layout math on meshes ---------------------------*- C++ -*-===//
//
// Pure helpers: meshes, layouts, local shard shapes, which rank holds which
// tokens (contiguous and zigzag chunk orders), and the byte counts of the
// collectives (DESIGN §4 conventions). The runtime uses it to place shards;
// the compiler's verifier, passes and report use the same code (the
// ShardlineLayout library: this file and layout.cpp, nothing else).
//
// Facts about positions come as runs of consecutive indices, so what they
// cost depends on the mesh, never on the tensor's extents.
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

/// The most ranks a mesh may have: more than any machine built so far, and
/// few enough that per-rank work over the mesh (groups, plans, reports) stays
/// bounded. Every product of axis sizes stays far below int64 overflow.
constexpr int64_t kMaxMeshRanks = int64_t(1) << 20;
/// The most bytes one tensor may hold (64 PiB): a model spec's largest
/// tensor (9e15 elements of 8 bytes) fits, and sums of a hundred such stay
/// inside int64.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 56;

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

/// Checks that every axis has a positive size and that the mesh has at most
/// kMaxMeshRanks ranks. Returns an empty string or the reason it is invalid.
/// The other functions here assume a mesh that passed.
std::string verifyMesh(const Mesh &mesh);

/// Checks a layout on its own and against a mesh and a global shape. Returns
/// an empty string or the reason it is invalid. With a mesh, checks the mesh
/// too (verifyMesh); with a shape, that its extents are non-negative.
std::string verifyLayout(const Layout &layout, const Mesh *mesh, const std::vector<int64_t> *shape);

/// The shape one rank holds.
std::vector<int64_t> localShape(const Layout &layout, const Mesh &mesh,
                                const std::vector<int64_t> &shape);

/// Consecutive global indices [start, start + length).
struct TokenRun {
  int64_t start = 0;
  int64_t length = 0;
  int64_t end() const { return start + length; }
  bool operator==(const TokenRun &o) const { return start == o.start && length == o.length; }
};

/// The global indices along dimension `dim` that `rank` holds, in local order,
/// as runs: one for an unsplit or contiguous dimension, at most two in zigzag
/// order (a rank's two chunks, or the part of them its minor axes leave it).
/// Adjacent runs are merged. None for a dimension the layout or shape lacks.
std::vector<TokenRun> tokenRuns(const Layout &layout, const Mesh &mesh,
                                const std::vector<int64_t> &shape, unsigned dim, int64_t rank);

/// The same indices one by one (tokenRuns expanded): for code that moves
/// elements, never for code whose cost must not depend on extents.
std::vector<int64_t> ownedIndices(const Layout &layout, const Mesh &mesh,
                                  const std::vector<int64_t> &shape, unsigned dim, int64_t rank);

/// How many pieces each rank's part of `dim` has for the sequence ops: two
/// when the dimension is split in zigzag order, else one.
int64_t chunksPerRank(const Layout &layout, unsigned dim);

/// The pieces of `rank`'s local positions along `dim` that the sequence ops
/// (causal conv and its halo, scan chunk states, ring attention) treat one at a
/// time, in local order: two equal pieces in zigzag order, else one. Each is a
/// single run of global positions.
std::vector<TokenRun> sequenceChunks(const Layout &layout, const Mesh &mesh,
                                     const std::vector<int64_t> &shape, unsigned dim, int64_t rank);

/// Appends [start, start + length) to `runs`, merged with the last run when
/// they touch, so that equal index sequences have equal run lists.
void appendRun(std::vector<TokenRun> &runs, int64_t start, int64_t length);
/// The `length` indices that follow the first `offset` ones of `runs`.
std::vector<TokenRun> sliceRuns(const std::vector<TokenRun> &runs, int64_t offset, int64_t length);
/// How many indices `runs` holds.
int64_t totalLength(const std::vector<TokenRun> &runs);

/// The number of indices two run lists have in common.
int64_t overlap(const std::vector<TokenRun> &a, const std::vector<TokenRun> &b);

/// A ring over a collective's group: the members in Mesh::group order, where
/// `rank` stands, and its neighbours (a ring step sends to next, receives from
/// prev).
struct Ring {
  std::vector<int64_t> members;
  int64_t position = 0;
  int64_t next() const { return members[(position + 1) % members.size()]; }
  int64_t prev() const { return members[(position + members.size() - 1) % members.size()]; }
};
Ring ringOf(const Mesh &mesh, int64_t rank, const std::vector<std::string> &axes);

/// What moving a tensor from one layout to another takes, when it is one plain
/// collective over the group of `axes` (in that order, the first major):
///   AllGather      dimension `dim` of the result is the concatenation, in group
///                  order, of the members' pieces;
///   Slice          the reverse: each member keeps its equal piece of `dim`, in
///                  group order; nothing moves;
///   ReduceScatter  a Slice that also sums the partial `axes`;
///   AllReduce      only the partial `axes` are summed;
///   AllToAll       an AllGather of `dim` and a Slice of `splitDim` at once.
/// Identity when nothing changes; General for any other exchange (a zigzag
/// gather over the major axis, a reorder, several moves at once), which needs
/// an explicit transfer.
enum class MovementKind { Identity, AllGather, Slice, ReduceScatter, AllReduce, AllToAll, General };

struct Movement {
  MovementKind kind = MovementKind::General;
  int64_t dim = -1;
  /// AllToAll only: the dimension that gets split.
  int64_t splitDim = -1;
  std::vector<std::string> axes;
};

/// Classifies `from` -> `to` for a tensor of `shape`. Layouts that do not fit
/// the mesh and shape (verifyLayout) are General.
Movement classifyMovement(const Layout &from, const Layout &to, const Mesh &mesh,
                          const std::vector<int64_t> &shape);

const char *movementName(MovementKind kind);

int64_t numElements(const std::vector<int64_t> &shape);

/// The product of `factors`, or nullopt when one is negative or the product
/// overflows int64.
std::optional<int64_t> checkedProduct(const std::vector<int64_t> &factors);

/// Byte counts over many tensors, ranks or steps: each factor is bounded
/// (kMaxTensorBytes, kMaxMeshRanks), their products and sums are not, so these
/// hold at int64's maximum instead of wrapping.
inline int64_t saturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? (a < 0 ? INT64_MIN : INT64_MAX) : r;
}
inline int64_t saturatingMul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? ((a < 0) != (b < 0) ? INT64_MIN : INT64_MAX) : r;
}

/// Activations sit in one arena per rank, each in whole 64-byte slots: the
/// compiler plans with this and the runtime measures with it.
constexpr int64_t kArenaAlignment = 64;
inline int64_t arenaSlotBytes(int64_t bytes) {
  return (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

/// Bytes one rank sends with the bandwidth-optimal algorithm (DESIGN §4) for a
/// group of `g` >= 1 ranks and a full (gathered) tensor of `fullBytes` >= 0
/// bytes, computed without the overflow of (g-1) * fullBytes.
int64_t allGatherBytes(int64_t g, int64_t fullBytes);
int64_t reduceScatterBytes(int64_t g, int64_t fullBytes);
int64_t allReduceBytes(int64_t g, int64_t fullBytes);
/// For all-to-all, `localBytes` is what the rank holds before the exchange.
int64_t allToAllBytes(int64_t g, int64_t localBytes);

} // namespace shardline

#endif
