//===- Report.h - collectives, bytes and residency per rank -----*- C++ -*-===//
//
// The report of DESIGN §4, computed from a program whose values carry
// layouts (after sl-propagate-layouts and sl-insert-collectives).
//
// Bytes per rank follow the bandwidth-optimal conventions, with B counted on
// one rank's local shapes and g the product of the op's axis sizes; each op
// states its own (SPMDOpInterface::sentBytesPerRank, beside its verifier):
//   all_gather       (g-1)/g * B, B = the gathered result
//   reduce_scatter   (g-1)/g * B, B = the operand (before scattering)
//   all_reduce       2(g-1)/g * B, B = the operand (reduce-scatter +
//                    all-gather); (g-1) * B when no dimension of the local
//                    operand is divisible by g (the scalar loss)
//   all_to_all       (g-1)/g * B, B = the operand
//   ring_attention   (g-1) * (local K + local V)
//   moe_dropless     at balanced routing, over ep = the expert_axes and etp
//                    = the tensor_axes: 2(ep-1)/ep * k * (local x) plus
//                    (ep-1) * E/ep i32 counts, and with etp > 1 (etp-1) *
//                    2k * (local x) plus (etp-1) * E/ep counts for the rows
//                    gathered and the outputs reduce-scattered over etp;
//                    moe_dropless_grad the same with 3k * local x + 2 *
//                    local weights in place of 2k * local x
//   halo             the result (the tokens one rank receives)
//   scan_state_exchange  (g-1) * (local states + local decays): an all-gather
//   scan_state_exchange_grad  (g-1) * (local dinit + local decays): its dual
//   reorder          the rows whose owner changes, most over all ranks
//   cross_entropy over vocab_axes: three all_reduce entries (max, sum of
//                    exponentials, target logit), each (g-1) * one f32 per
//                    local token (small vectors, exchanged whole);
//                    cross_entropy_grad two (max, sum of exponentials)
// slice moves nothing and is not a collective.
//
// Peak activation bytes: the high-water mark of the activation arena of
// shardline/Analysis/MemoryPlan.h (what the runtime allocates). Liveness, the
// memory plan's: a value (a function argument or an op result, weights
// excluded) is live from its definition to its last use, and at every op its
// operands and results are live; the largest sum of live local bytes is a
// lower bound of the peak, and the largest while a block's ops run is that
// block's peakLiveBytes.
//
// A training step (sl-autodiff: ops marked sl.backward) also gets: the bytes
// of its backward (every collective from the first backward op on), of which
// the re-gathers of saved shards (sl.recompute); the activations saved for
// the backward (op results of the forward, weights excluded, that an op of
// the backward reads), per rank and per block; and the AdamW moments among
// the weights.
//
// analyze() computes the report once; toJson, printTable and toHtml only
// render it. What it costs depends on the program and the mesh, never on the
// tensors' extents (positions are counted as runs, core/layout.h).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_ANALYSIS_REPORT_H
#define SHARDLINE_ANALYSIS_REPORT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shardline {

struct CollectiveEntry {
  std::string op;
  std::vector<std::string> axes;
  int64_t bytesPerRank = 0;
  /// Block index in the pattern (sl.block); -1 for the ends and for ops in
  /// no block.
  int64_t block = -1;
  /// sl.family: the pattern letter, "embedding" / "lm_head", or "".
  std::string family;
  std::string location;
  std::string why;
  /// Part of the backward program (or the optimizer step).
  bool backward = false;
  /// The bytes are those at balanced routing (dropless MoE): what a run
  /// sends depends on its routing.
  bool balancedRouting = false;
};

struct ElidedEntry {
  std::string op, location, how;
};

struct BlockSummary {
  int64_t block = -1;
  std::string family;
  int64_t commBytes = 0;
  /// Highest live activation bytes while the block's ops run.
  int64_t peakLiveBytes = 0;
  /// Bytes of the block's forward activations the backward reads.
  int64_t savedForBackwardBytes = 0;
};

struct Report {
  std::string model;
  std::vector<std::pair<std::string, int64_t>> mesh;
  int64_t ranks = 1;
  std::vector<CollectiveEntry> collectives;
  std::vector<ElidedEntry> elided;
  int64_t commBytesPerRank = 0;
  std::map<std::string, int64_t> collectiveCounts;
  int64_t weightBytesPerRank = 0;
  int64_t peakActivationBytesPerRank = 0;
  int64_t liveBytesLowerBound = 0;
  /// A training step: the figures below are set.
  bool training = false;
  int64_t backwardCommBytesPerRank = 0;
  /// Of those, the re-gathers of saved shards (save-gathered would save them).
  int64_t regatherBytesPerRank = 0;
  int64_t savedForBackwardBytesPerRank = 0;
  /// The optimizer's state among the weights: the AdamW moments and the f32
  /// main copies of 16-bit parameters; of it, the main copies.
  int64_t optimizerStateBytesPerRank = 0;
  int64_t mainCopyBytesPerRank = 0;
  /// In order of first appearance.
  std::vector<BlockSummary> blocks;
};

/// Bytes one rank sends for `op` on the mesh of its operands' layouts, or -1
/// if `op` is not a collective: what the op states through
/// SPMDOpInterface::sentBytesPerRank.
int64_t collectiveBytesPerRank(mlir::Operation *op);

/// A location as people read it: "blocks.3.A at model.json:2:27".
std::string describeLocation(mlir::Location loc);

/// Where an op sits in the model: `sl.block` and `sl.family` as the importer
/// stamps them. The passes build the ops they insert (collectives, ring
/// attention, halos) at the location of the op they serve, so an op without a
/// stamp takes the stamp of a stamped op at the same location; an op with
/// neither (hand-written IR) is in no block (-1, ""). The report and the plan
/// both place ops through it.
class BlockPlacement {
public:
  explicit BlockPlacement(mlir::func::FuncOp fn);
  std::pair<int64_t, std::string> of(mlir::Operation *op) const;

private:
  static std::optional<std::pair<int64_t, std::string>> stampOf(mlir::Operation *op);
  llvm::DenseMap<mlir::Location, std::pair<int64_t, std::string>> byLocation;
};

Report analyze(mlir::ModuleOp module);

std::string toJson(const Report &report);
void printTable(const Report &report, llvm::raw_ostream &os);
std::string toHtml(const Report &report);

} // namespace shardline

#endif
