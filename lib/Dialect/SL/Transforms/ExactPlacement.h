//===- ExactPlacement.h - every op's layout chosen at the least bytes -*- C++ -*-===//
//
// The exact stage of sl-elide-gathers (docs/passes.md, "The exact search").
// The moves of Placement.h re-place one kind of transition at a time and stop
// where no single move lowers the bytes; this stage drops every transition of
// a function and chooses, for each op whose activation operands share one
// shape (its *mode*), the layout it consumes them in, among every layout of
// that shape on the mesh that its sharding rule accepts. Each value then
// reaches the layouts its readers need through the cheapest tree of
// relayouts over those layouts (relayoutBytes, the report's bytes), which is
// what emitRelayout writes. The least total over all modes is found by
// variable elimination over the function's def-use graph (a dynamic program
// whose tables are as wide as the graph is tangled), within fixed limits on
// the number of ops and table entries, so its cost depends on the graph only.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_TRANSFORMS_EXACTPLACEMENT_H
#define SHARDLINE_DIALECT_SL_TRANSFORMS_EXACTPLACEMENT_H

#include "Placement.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::sl::placement {

/// How far the exact search goes before it leaves a function to the moves.
struct ExactLimits {
  /// The most ops whose modes it chooses.
  size_t maxOps = 64;
  /// The most distinct layouts one value may be read in under some modes
  /// (its tree of relayouts is found by enumeration).
  size_t maxReaders = 6;
  /// The most table entries the elimination may fill, over all its steps.
  uint64_t maxEntries = uint64_t(1) << 21;
};

struct ExactResult {
  enum class Status {
    /// The function was rewritten into the placement of least bytes.
    Placed,
    /// Beyond the limits: left as it was.
    TooLarge,
    /// Something the model does not cover (nested regions, several meshes,
    /// a layout outside the enumeration): left as it was.
    Unsupported,
  };
  Status status = Status::Unsupported;
  /// Why it was left as it was.
  std::string why;
  /// Placed: the bytes per rank of the placement, as relayoutBytes prices
  /// them (the report's bytes of the rewritten function).
  int64_t bytes = 0;
};

/// Whether `fn` has few enough ops with modes for the search to be tried
/// (cheap: counts, enumerates nothing).
bool exactSearchMayFit(func::FuncOp fn, const ExactLimits &limits);

/// Rewrites `fn` into the placement of least bytes over its ops' modes (ties:
/// the smaller sum of the ops' result bytes per rank); the transitions it
/// drops are recorded in `changes`. The caller keeps the result only where it
/// sends fewer bytes than `fn` did (run it on a copy).
ExactResult placeExactly(func::FuncOp fn, RelayoutPrices &prices, const ExactLimits &limits,
                         std::vector<Change> &changes);

} // namespace mlir::sl::placement

#endif
