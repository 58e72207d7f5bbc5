//===- ShardingRule.h - per-op sharding rules as data -----------*- C++ -*-===//
//
// A sharding rule maps every dimension of an op's operands and results to a
// factor (an index space of the computation) and says what splitting that
// factor over mesh axes costs: nothing (free), a pending sum in the result
// (contracted), nothing possible (whole), or a family-specific exchange
// (sequence-mixing). The checker below is pure (no MLIR) so that the
// verifier, the propagation passes and the unit tests share it.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_SHARDINGRULE_H
#define SHARDLINE_DIALECT_SL_IR_SHARDINGRULE_H

#include "core/layout.h"

#include <optional>
#include <string>
#include <vector>

namespace shardline {

enum class FactorKind {
  /// Token-wise or channel-wise independent: may stay split, no communication.
  Free,
  /// Summed over: splitting it leaves a pending sum (partial) in the results.
  Contracted,
  /// Must not be split (normalised, softmax or head-internal dimensions).
  Whole,
  /// Needs data from other sequence positions; split only with the remedy.
  SequenceMixing,
};

/// How a sequence-mixing factor can still be split.
enum class Remedy {
  None,
  /// Attention keys: ring exchange with LSE merge, all-gather of K and V, or
  /// all-to-all sequence<->heads.
  KVExchange,
  /// Causal conv1d: the conv-1 tokens before each chunk (sl.halo).
  Halo,
  /// SSD and RG-LRU scans: scan from zero per chunk, exchange (decay, state)
  /// summaries, correct (sl.scan_state_exchange).
  StatePassing,
  /// Cross-entropy over a split vocabulary: all-reduce of max and sum.
  VocabParallel,
  /// Dropless MoE's experts: each rank sends its routed rows to the owners of
  /// their experts by count and gets the outputs back (sl.moe_dropless), so
  /// the experts may be split over the axes that also split the tokens.
  ExpertExchange,
};

/// How pending sums in operands pass through the op.
enum class PartialRule {
  /// Nonlinear: no operand may be a pending sum.
  None,
  /// Linear in every operand jointly (add, slice, collectives): all operands
  /// carry the same pending sum, which the results inherit.
  Same,
  /// Linear in each operand separately (mul, linear): at most one operand may
  /// be a pending sum, which the results inherit.
  One,
};

struct Factor {
  std::string name;
  FactorKind kind = FactorKind::Free;
  Remedy remedy = Remedy::None;
  /// Axes over which a sequence-mixing factor may be split because the op
  /// carries the remedy itself (e.g. sl.ring_attention over cp).
  std::vector<std::string> remedyAxes;
  /// When non-zero, the product of the split sizes must divide it (heads,
  /// groups: a split may not cut through a head).
  int64_t granule = 0;
  /// What the granule counts, for messages ("kv heads"); the factor's name
  /// when empty.
  std::string granuleName;
  /// The factor is a token position (its dimensions may carry a chunk order).
  /// A rule may have several (attention's query and key positions); the
  /// rule's `primarySequence` says which one is the op's own sequence.
  bool isSequence = false;
};

struct ShardingRule {
  std::vector<Factor> factors;
  /// For each operand (resp. result), the factor of each dimension; -1 for a
  /// dimension of size one that no factor covers (e.g. a broadcast).
  std::vector<std::vector<int>> operands;
  std::vector<std::vector<int>> results;
  std::vector<std::string> operandNames;
  std::vector<std::string> resultNames;
  PartialRule partial = PartialRule::None;
  /// Results that are reductions over every split factor (a scalar loss).
  /// When set, results take a pending sum over every axis that splits a free
  /// factor instead of splitting their own dimensions.
  bool reducesToScalar = false;
  /// The factor that is the op's own sequence (a factor with `isSequence`):
  /// the one sequence parallelism scatters a reduced pending sum onto and
  /// that axes an activation gives up move to. -1 when the op has none.
  int primarySequence = -1;
  /// Empty, or one entry per result: the factors that result sums over
  /// although the others keep them split (an op whose results include both
  /// tokens and weight gradients). The result takes a pending sum over their
  /// axes, less the axes an ExpertExchange factor is split over: the rows of
  /// the whole expert group reach their owner, which sums them itself.
  std::vector<std::vector<int>> resultSums;

  int addFactor(std::string name, FactorKind kind = FactorKind::Free, int64_t granule = 0,
                bool isSequence = false);
  int findFactor(const std::string &name) const;
  /// A one-line description of the rule:
  /// "x[b,s,k] weight[k,n] -> result[b,s,n]; free: b,s,n; contracted: k; sequence: s".
  /// Sequence-mixing factors name their remedy and the axes the op already
  /// carries it over; granules follow their factor ("heads/4 kv heads").
  std::string describe() const;
};

/// What the checker derives for an op from the layouts of its operands.
struct RuleCheck {
  /// Empty when the layouts are acceptable.
  std::string error;
  /// The split axes of every factor (empty when no annotated operand splits it).
  std::vector<std::vector<std::string>> factorAxes;
  /// The chunk order of each factor (only sequence factors may be zigzag).
  std::vector<ChunkOrder> factorOrder;
  /// Pending-sum axes of the results.
  std::vector<std::string> resultPartial;
  /// The result layouts the rule derives, for results with a known rank.
  std::vector<Layout> results;
};

/// Checks the operand layouts (nullopt: not annotated) against the rule and
/// derives result layouts. Shapes are global.
RuleCheck checkRule(const ShardingRule &rule, const Mesh &mesh,
                    const std::vector<std::vector<int64_t>> &operandShapes,
                    const std::vector<std::optional<Layout>> &operandLayouts,
                    const std::vector<std::vector<int64_t>> &resultShapes);

} // namespace shardline

#endif
