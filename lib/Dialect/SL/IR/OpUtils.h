//===- OpUtils.h - checks and builders the op families share -----*- C++ -*-===//
//
// Internal to the sl IR library: the shape checks, the rule builder and the
// chunked-scan remedy that several op families use.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_LIB_DIALECT_SL_IR_OPUTILS_H
#define SHARDLINE_LIB_DIALECT_SL_IR_OPUTILS_H

#include "shardline/Dialect/SL/IR/SL.h"

#include "mlir/IR/Builders.h"

namespace mlir::sl::detail {

using shardline::FactorKind;
using shardline::PartialRule;
using shardline::Remedy;
using shardline::ShardingRule;

ArrayRef<int64_t> shape(Value v);
std::vector<int64_t> shapeVec(Value v);

LogicalResult checkRank(Operation *op, Value v, StringRef name, unsigned rank);
LogicalResult checkDim(Operation *op, Value v, StringRef name, unsigned dim, int64_t expected,
                       StringRef why);
LogicalResult checkDivides(Operation *op, int64_t size, int64_t by, StringRef what);
/// A backward op's gradient of an optional operand: a result present exactly
/// when the operand is, and shaped like it.
LogicalResult checkOptionalGradient(Operation *op, Value operand, Value gradient,
                                    StringRef operandName, StringRef gradientName);
/// Static shapes, and one floating-point element type among the op's float
/// values, `f32Allowed` (where given) f32 too whatever the others' type, and
/// so may a backward op's results (a 16-bit parameter's gradient).
LogicalResult verifyStaticAndElementTypes(Operation *op, Value f32Allowed = {});
/// Checks every layout among the op's values on its own terms: known mesh,
/// known axes, splits that divide. Returns the mesh (null when no value has
/// a layout).
FailureOr<MeshOp> verifyValueLayouts(Operation *op);

/// Number of chunks a sequence (dimension 1 of `seqValue`) split over `axes`
/// has (2n in zigzag order); -1 when the layout or mesh is unknown.
int64_t numChunks(Operation *op, Value seqValue, ArrayAttr axes);
/// Checks a scan summary (state or decay): [C?, b, trailing...].
LogicalResult checkSummary(Operation *op, Value v, StringRef name, ArrayAttr chunkAxes,
                           int64_t chunks, ArrayRef<int64_t> trailing);
/// chunk_axes must be the axes that split the sequence of `seqValue`.
LogicalResult checkChunkAxes(Operation *op, Value seqValue, ArrayAttr chunkAxes);
/// A scan's chunk_axes and its summaries for the chunks they split `x` into:
/// state and the optional state_in [C?, stateDims...], decay [C?, decayDims...].
LogicalResult checkScanSummaries(Operation *op, Value x, ArrayAttr chunkAxes, Value state,
                                 Value decay, Value stateIn, ArrayRef<int64_t> stateDims,
                                 ArrayRef<int64_t> decayDims);
/// A correction's chunk_axes and the initial states it reads: init
/// [chunks, stateDims...], one per chunk they split y0 into (the chunk
/// dimension is there even for a single chunk).
LogicalResult checkCorrectionInit(Operation *op, Value y0, Value init, ArrayAttr chunkAxes,
                                  ArrayRef<int64_t> stateDims);

/// The remedy of a scan whose sequence is split: a clone scans every chunk
/// from zero (`chunk_axes`), sl.scan_state_exchange combines the chunks'
/// summaries into their true initial states, and `correct` (the scan's own
/// correction op) adds their contribution to the outputs. The scan's results
/// are y, state, decay; operand 0 is its x.
FailureOr<Operation *>
chunkScan(Operation *scan, Value stateIn, RemedyContext &ctx,
          function_ref<Value(OpBuilder &b, Value y0, Value init, ArrayAttr axes)> correct);

/// In an op's buildGradient: the backward op `name` on `operands`, whose
/// results are the gradients of the operands `inputs` of the op being
/// differentiated, in order; not built when none of them needs one.
LogicalResult buildOperandGradients(Operation *op, GradientBuilder &g, StringRef name,
                                    ValueRange operands, ArrayRef<unsigned> inputs,
                                    ArrayRef<NamedAttribute> attrs);

/// The remedy of an op that reads the `width` tokens before each of its
/// sequence chunks (a causal conv, windowed attention): an sl.halo of `x`,
/// [b, chunks * width, c], whose reason names `what` the op reads of them
/// ("the keys"; empty: the tokens themselves); a null
/// Value when x's sequence is not split or width is 0.
Value insertHalo(Operation *op, Value x, int64_t width, RemedyContext &ctx, StringRef what);

/// The per-rank facts and checks a forward op and its gradients share
/// (AttentionOps.cpp, EndsOps.cpp): the gradients see the tokens, keys and
/// vocabulary rows of the rank exactly as the forward does.
/// sl.tokens: the global positions of the sequence (dimension 1) of `x`.
void setTokenFacts(Operation *op, const RankContext &ctx, Value x);
/// sl.tokens of the queries and sl.key_tokens of the keys.
void setAttentionFacts(Operation *op, const RankContext &ctx, Value q, Value k);
/// sl.vocab_offset: the first vocabulary row of `table` (dimension 0) this rank holds.
void setVocabOffsetFact(Operation *op, const RankContext &ctx, Value table);
/// Vocab-parallel cross-entropy: the first vocabulary entry of the logits
/// (dimension 2) this rank holds, and the group of `vocabAxes`.
void setVocabParallelFacts(Operation *op, const RankContext &ctx, Value logits,
                           ArrayAttr vocabAxes);
/// vocab_axes must be the axes that split the logits' vocabulary.
LogicalResult checkVocabAxes(Operation *op, Value logits, ArrayAttr vocabAxes);
/// logits [b, s, v] and labels [b, s].
LogicalResult checkLogitsAndLabels(Operation *op, Value logits, Value labels);
/// The vocab axes of logits split on the vocabulary (empty when they are
/// not), and the reason the op carries them.
ArrayAttr vocabParallelAxes(Operation *op, Value logits);
/// Bytes one rank sends to all-reduce `vectors` per-token f32 values over
/// `vocabAxes` (-1 when there are none).
int64_t vocabExchangeBytes(Value logits, ArrayAttr vocabAxes, const shardline::Mesh &mesh,
                           int64_t vectors);

/// q: [b, s, heads*d]; k, v: [b, t, kv_heads*d]; heads a multiple of
/// kv_heads; a positive scale. Shared by attention and its gradients.
template <typename OpTy> LogicalResult verifyAttentionShapes(OpTy op) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, op.getQ(), "q", 3)) ||
      failed(checkRank(op, op.getK(), "k", 3)) || failed(checkRank(op, op.getV(), "v", 3)))
    return failure();
  int64_t heads = op.getHeads(), kvHeads = op.getKvHeads();
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
    return op.emitOpError("heads (")
           << heads << ") must be a positive multiple of kv_heads (" << kvHeads << ")";
  auto q = shape(op.getQ());
  if (failed(checkDivides(op, q[2], heads, "q channels by heads")))
    return failure();
  int64_t d = q[2] / heads;
  if (failed(checkDim(op, op.getK(), "k", 0, q[0], "batch")) ||
      failed(checkDim(op, op.getK(), "k", 2, kvHeads * d, "kv_heads * head_dim")))
    return failure();
  if (auto scale = op.getScale(); scale && scale->convertToDouble() <= 0)
    return op.emitOpError("scale must be positive");
  return success();
}

struct RuleBuilder {
  shardline::ShardingRule rule;
  int factor(const std::string &name, shardline::FactorKind kind = shardline::FactorKind::Free,
             int64_t granule = 0, bool isSequence = false) {
    int f = rule.findFactor(name);
    return f >= 0 ? f : rule.addFactor(name, kind, granule, isSequence);
  }
  /// A token-position factor. The first one a rule declares is the op's own
  /// sequence (attention declares its query positions before its keys).
  int seq(const std::string &name = "s") {
    int f = factor(name, shardline::FactorKind::Free, 0, true);
    if (rule.primarySequence < 0)
      rule.primarySequence = f;
    return f;
  }
  /// Factors of the leading (token) dimensions of a rank-`rank` activation.
  std::vector<int> tokens(size_t rank) {
    if (rank == 2)
      return {factor("b"), seq()};
    if (rank == 1)
      return {seq("t")};
    std::vector<int> out;
    for (size_t d = 0; d < rank; ++d)
      out.push_back(d == 1 ? seq() : factor("d" + std::to_string(d)));
    return out;
  }
  void operand(const std::string &name, std::vector<int> dims) {
    rule.operandNames.push_back(name);
    rule.operands.push_back(std::move(dims));
  }
  void result(const std::string &name, std::vector<int> dims) {
    rule.resultNames.push_back(name);
    rule.results.push_back(std::move(dims));
  }
  /// Sequence `s` of a scan passes its state over `chunkAxes` (empty: not
  /// split); per-chunk summaries (`summary`) then lead with the chunk.
  void statePassing(int s, ArrayAttr chunkAxes) {
    mixing(s, shardline::Remedy::StatePassing, chunkAxes);
    chunkFactor = chunkAxes.empty() ? -1 : s;
  }
  /// The factors of a scan's state or decay: one per chunk once chunked.
  std::vector<int> summary(std::vector<int> dims) const {
    if (chunkFactor >= 0)
      dims.insert(dims.begin(), chunkFactor);
    return dims;
  }
  /// A scan's optional state_in (its last operand) and its results y, state
  /// and decay, the last two per chunk once chunked.
  void scanSummaries(bool hasStateIn, std::vector<int> y, const std::vector<int> &state,
                     const std::vector<int> &decay) {
    if (hasStateIn)
      operand("state_in", summary(state));
    result("y", std::move(y));
    result("state", summary(state));
    result("decay", summary(decay));
  }
  void mixing(int f, shardline::Remedy remedy, ArrayAttr axes) {
    SmallVector<StringRef> names;
    for (Attribute a : axes)
      names.push_back(cast<StringAttr>(a).getValue());
    mixing(f, remedy, names);
  }
  void mixing(int f, shardline::Remedy remedy, ArrayRef<StringRef> axes = {}) {
    auto &fac = rule.factors[f];
    fac.kind = shardline::FactorKind::SequenceMixing;
    fac.remedy = remedy;
    for (StringRef a : axes)
      fac.remedyAxes.push_back(a.str());
  }

private:
  int chunkFactor = -1;
};

inline std::vector<int> concat(std::vector<int> a, std::initializer_list<int> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

} // namespace mlir::sl::detail

#endif
