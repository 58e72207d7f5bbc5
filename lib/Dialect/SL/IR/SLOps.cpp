//===- SLOps.cpp - sl ops: verifiers and sharding rules -------------------===//

#include "shardline/Dialect/SL/IR/SL.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::sl;
using shardline::FactorKind;
using shardline::PartialRule;
using shardline::Remedy;
using shardline::ShardingRule;

#define GET_OP_CLASSES
#include "shardline/Dialect/SL/IR/SLOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Shared checks
//===----------------------------------------------------------------------===//

static ArrayRef<int64_t> shape(Value v) { return cast<RankedTensorType>(v.getType()).getShape(); }
static std::vector<int64_t> shapeVec(Value v) {
  auto s = shape(v);
  return {s.begin(), s.end()};
}

static LogicalResult checkRank(Operation *op, Value v, StringRef name, unsigned rank) {
  if (shape(v).size() != rank)
    return op->emitOpError() << name << " must have rank " << rank << ", got " << v.getType();
  return success();
}

static LogicalResult checkDim(Operation *op, Value v, StringRef name, unsigned dim,
                              int64_t expected, StringRef why) {
  if (shape(v)[dim] != expected)
    return op->emitOpError() << name << " dimension " << dim << " must be " << expected << " ("
                             << why << "), got " << shape(v)[dim];
  return success();
}

static LogicalResult checkDivides(Operation *op, int64_t size, int64_t by, StringRef what) {
  if (by <= 0 || size % by != 0)
    return op->emitOpError() << what << ": " << size << " is not divisible by " << by;
  return success();
}

/// Static shapes, and one floating-point element type among the op's float values.
static LogicalResult verifyStaticAndElementTypes(Operation *op) {
  Type floatType;
  auto visit = [&](Value v, StringRef kind, unsigned i) -> LogicalResult {
    auto t = cast<RankedTensorType>(v.getType());
    if (!t.hasStaticShape())
      return op->emitOpError() << kind << " #" << i << " must have a static shape, got " << t;
    Type e = t.getElementType();
    if (!isa<FloatType>(e))
      return success();
    if (!floatType)
      floatType = e;
    else if (e != floatType)
      return op->emitOpError() << kind << " #" << i << " has element type " << e << " but "
                               << floatType << " is used elsewhere in the op";
    return success();
  };
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(visit(v, "operand", i)))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(visit(v, "result", i)))
      return failure();
  return success();
}

/// Checks every layout among `values` on its own terms: known mesh, known axes,
/// splits that divide. Returns the mesh (null when no value has a layout).
static FailureOr<MeshOp> verifyValueLayouts(Operation *op) {
  MeshOp mesh;
  FlatSymbolRefAttr meshName;
  auto visit = [&](Value v, StringRef kind, unsigned i) -> LogicalResult {
    LayoutAttr l = getLayout(v);
    if (!l)
      return success();
    if (!meshName) {
      meshName = l.getMesh();
      mesh = lookupMesh(op, l);
      if (!mesh)
        return op->emitOpError() << kind << " #" << i << " refers to unknown mesh " << meshName;
    } else if (l.getMesh() != meshName) {
      return op->emitOpError() << kind << " #" << i << " refers to mesh " << l.getMesh()
                               << " but other values use " << meshName;
    }
    shardline::Mesh m = toMesh(mesh);
    auto s = shapeVec(v);
    std::string err = shardline::verifyLayout(toLayout(l), &m, &s);
    if (!err.empty())
      return op->emitOpError() << kind << " #" << i << " layout: " << err;
    if (!l.getPartial().empty() && !isa<FloatType>(getElementTypeOrSelf(v.getType())))
      return op->emitOpError() << kind << " #" << i
                               << " is an integer tensor and cannot be a pending sum";
    return success();
  };
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(visit(v, "operand", i)))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(visit(v, "result", i)))
      return failure();
  return mesh;
}

std::optional<shardline::RuleCheck>
mlir::sl::checkOpRule(Operation *op, const llvm::DenseMap<Value, shardline::Layout> &overrides) {
  auto iface = dyn_cast<ShardingRuleOpInterface>(op);
  if (!iface)
    return std::nullopt;
  MeshOp mesh;
  std::vector<std::vector<int64_t>> operandShapes, resultShapes;
  std::vector<std::optional<shardline::Layout>> layouts;
  for (Value v : op->getOperands()) {
    operandShapes.push_back(shapeVec(v));
    LayoutAttr l = getLayout(v);
    if (l && !mesh)
      mesh = lookupMesh(op, l);
    if (auto it = overrides.find(v); it != overrides.end())
      layouts.push_back(it->second);
    else if (l)
      layouts.push_back(toLayout(l));
    else
      layouts.push_back(std::nullopt);
  }
  for (Value v : op->getResults()) {
    resultShapes.push_back(shapeVec(v));
    if (LayoutAttr l = getLayout(v); l && !mesh)
      mesh = lookupMesh(op, l);
  }
  if (!mesh)
    return std::nullopt;
  return shardline::checkRule(iface.getShardingRule(), toMesh(mesh), operandShapes, layouts,
                              resultShapes);
}

/// Whether every value of `op` has the rank its rule gives it.
static bool ranksFitRule(Operation *op, const ShardingRule &rule) {
  for (auto [v, dims] : llvm::zip(op->getOperands(), rule.operands))
    if (shape(v).size() != dims.size())
      return false;
  for (auto [v, dims] : llvm::zip(op->getResults(), rule.results))
    if (shape(v).size() != dims.size())
      return false;
  return true;
}

bool mlir::sl::inPerRankProgram(Operation *op) {
  auto fn = op->getParentOfType<func::FuncOp>();
  return fn && fn->hasAttr(kRankAttr);
}

LogicalResult mlir::sl::verifyShardingRule(Operation *op) {
  if (inPerRankProgram(op))
    return success();
  // The op's own verifier has accepted the shapes (see SLInterfaces.td);
  // layouts are only checked on static ones.
  for (Value v : llvm::concat<Value>(op->getOperands(), op->getResults()))
    if (!cast<RankedTensorType>(v.getType()).hasStaticShape())
      return success();
  FailureOr<MeshOp> mesh = verifyValueLayouts(op);
  if (failed(mesh))
    return failure();
  if (!*mesh)
    return success();
  ShardingRule rule = cast<ShardingRuleOpInterface>(op).getShardingRule();
  if (rule.operands.size() != op->getNumOperands() || rule.results.size() != op->getNumResults())
    return op->emitOpError("sharding rule does not cover every operand and result");
  if (!ranksFitRule(op, rule))
    return success();
  // An op with an unannotated value awaits sl-propagate-layouts, which
  // inserts the relayouts its rule needs; once every value has a layout, the
  // rule must hold.
  for (Value v : llvm::concat<Value>(op->getOperands(), op->getResults()))
    if (!getLayout(v))
      return success();
  std::optional<shardline::RuleCheck> check = checkOpRule(op);
  if (!check)
    return success();
  if (!check->error.empty())
    return op->emitOpError() << check->error;
  for (auto [i, v] : llvm::enumerate(op->getResults())) {
    shardline::Layout have = toLayout(getLayout(v));
    if (have != check->results[i]) {
      std::string name = i < rule.resultNames.size() ? " (" + rule.resultNames[i] + ")" : "";
      return op->emitOpError() << "result #" << i << name << " has layout " << have.str()
                               << " but the operands' layouts give " << check->results[i].str();
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Rule construction
//===----------------------------------------------------------------------===//

namespace {
struct RuleBuilder {
  ShardingRule rule;
  int factor(const std::string &name, FactorKind kind = FactorKind::Free, int64_t granule = 0,
             bool isSequence = false) {
    int f = rule.findFactor(name);
    return f >= 0 ? f : rule.addFactor(name, kind, granule, isSequence);
  }
  /// A token-position factor. The first one a rule declares is the op's own
  /// sequence (attention declares its query positions before its keys).
  int seq(const std::string &name = "s") {
    int f = factor(name, FactorKind::Free, 0, true);
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
  void mixing(int f, Remedy remedy, ArrayAttr axes) {
    auto &fac = rule.factors[f];
    fac.kind = FactorKind::SequenceMixing;
    fac.remedy = remedy;
    for (Attribute a : axes)
      fac.remedyAxes.push_back(cast<StringAttr>(a).str());
  }
  void mixing(int f, Remedy remedy, ArrayRef<StringRef> axes = {}) {
    auto &fac = rule.factors[f];
    fac.kind = FactorKind::SequenceMixing;
    fac.remedy = remedy;
    for (StringRef a : axes)
      fac.remedyAxes.push_back(a.str());
  }
};

std::vector<int> concat(std::vector<int> a, std::initializer_list<int> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
} // namespace

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (getName().empty())
    return emitOpError("needs a non-empty name");
  StringRef init = getInit();
  if (init != "normal" && init != "uniform" && init != "constant")
    return emitOpError("init must be 'normal', 'uniform' or 'constant', got '") << init << "'";
  if (init != "constant" && getScale().convertToDouble() < 0)
    return emitOpError("scale must be non-negative");
  if (!getResult().getType().hasStaticShape())
    return emitOpError("must have a static shape");
  FailureOr<MeshOp> mesh = verifyValueLayouts(*this);
  if (failed(mesh))
    return failure();
  if (LayoutAttr l = getLayout(getResult()); l && !l.getPartial().empty())
    return emitOpError("a weight cannot be a pending sum");
  return success();
}

//===----------------------------------------------------------------------===//
// Compute ops
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getIds(), "ids", 2)) ||
      failed(checkRank(*this, getTable(), "table", 2)) ||
      failed(checkRank(*this, getResult(), "result", 3)))
    return failure();
  auto ids = shape(getIds());
  if (failed(checkDim(*this, getResult(), "result", 0, ids[0], "batch of ids")) ||
      failed(checkDim(*this, getResult(), "result", 1, ids[1], "sequence of ids")) ||
      failed(checkDim(*this, getResult(), "result", 2, shape(getTable())[1], "table width")))
    return failure();
  return success();
}

ShardingRule EmbeddingOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), v = r.factor("v", FactorKind::Contracted), h = r.factor("h");
  r.operand("ids", {b, s});
  r.operand("table", {v, h});
  r.result("result", {b, s, h});
  return r.rule;
}

LogicalResult RMSNormOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeight(), "weight", 1)))
    return failure();
  auto x = shape(getX());
  if (x.empty())
    return emitOpError("x must have rank >= 1");
  if (failed(checkDim(*this, getWeight(), "weight", 0, x.back(), "normalised dimension of x")))
    return failure();
  if (getResult().getType().getShape() != x)
    return emitOpError("result shape must equal x's shape");
  if (getEps().convertToDouble() <= 0)
    return emitOpError("eps must be positive");
  return success();
}

ShardingRule RMSNormOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getX()).size(), 1) - 1);
  int h = r.factor("h", FactorKind::Whole);
  r.operand("x", concat(lead, {h}));
  r.operand("weight", {h});
  r.result("result", concat(lead, {h}));
  return r.rule;
}

LogicalResult GatedRMSNormOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY(), "y", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 1)))
    return failure();
  auto y = shape(getY());
  if (shape(getZ()) != y || getResult().getType().getShape() != y)
    return emitOpError("y, z and the result must have one shape");
  if (failed(checkDim(*this, getWeight(), "weight", 0, y[2], "channels")) ||
      failed(checkDivides(*this, y[2], getGroups(), "channels by groups")))
    return failure();
  return success();
}

ShardingRule GatedRMSNormOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("groups", FactorKind::Free, getGroups());
  r.operand("y", {b, s, c});
  r.operand("z", {b, s, c});
  r.operand("weight", {c});
  r.result("result", {b, s, c});
  return r.rule;
}

LogicalResult LinearOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  auto x = shape(getX());
  auto w = shape(getWeight());
  auto y = getResult().getType().getShape();
  if (x.empty() || y.size() != x.size())
    return emitOpError("x and the result must have the same rank >= 1");
  if (x.back() != w[0])
    return emitOpError("contracting dimensions differ: x has ")
           << x.back() << " features, weight has " << w[0] << " rows";
  if (y.drop_back() != x.drop_back() || y.back() != w[1])
    return emitOpError("result shape must be x's leading dims followed by ") << w[1];
  return success();
}

ShardingRule LinearOp::getShardingRule() {
  RuleBuilder r;
  auto lead = r.tokens(std::max<size_t>(shape(getX()).size(), 1) - 1);
  int k = r.factor("k", FactorKind::Contracted), n = r.factor("n");
  r.operand("x", concat(lead, {k}));
  r.operand("weight", {k, n});
  r.result("result", concat(lead, {n}));
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult RopeOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)))
    return failure();
  if (getResult().getType().getShape() != shape(getX()))
    return emitOpError("result shape must equal x's shape");
  int64_t d = getHeadDim();
  if (d <= 0 || d % 2 != 0)
    return emitOpError("head_dim must be positive and even, got ") << d;
  return checkDivides(*this, shape(getX())[2], d, "channels by head_dim");
}

ShardingRule RopeOp::getShardingRule() {
  RuleBuilder r;
  auto x = shape(getX());
  int64_t heads = x.size() == 3 && getHeadDim() > 0 ? x[2] / getHeadDim() : 0;
  int b = r.factor("b"), s = r.seq(), c = r.factor("heads", FactorKind::Free, heads);
  r.operand("x", {b, s, c});
  r.result("result", {b, s, c});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

template <typename OpTy> static LogicalResult verifyAttentionShapes(OpTy op) {
  if (failed(verifyStaticAndElementTypes(op)) || failed(checkRank(op, op.getQ(), "q", 3)) ||
      failed(checkRank(op, op.getK(), "k", 3)) || failed(checkRank(op, op.getV(), "v", 3)))
    return failure();
  int64_t heads = op.getHeads(), kvHeads = op.getKvHeads();
  if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
    return op.emitOpError("heads (")
           << heads << ") must be a positive multiple of kv_heads (" << kvHeads << ")";
  auto q = shape(op.getQ()), k = shape(op.getK());
  if (failed(checkDivides(op, q[2], heads, "q channels by heads")))
    return failure();
  int64_t d = q[2] / heads;
  if (shape(op.getV()) != k)
    return op.emitOpError("k and v must have one shape");
  if (failed(checkDim(op, op.getK(), "k", 0, q[0], "batch")) ||
      failed(checkDim(op, op.getK(), "k", 2, kvHeads * d, "kv_heads * head_dim")))
    return failure();
  if (op.getResult().getType().getShape() != q)
    return op.emitOpError("result shape must equal q's shape");
  if (auto scale = op.getScale(); scale && scale->convertToDouble() <= 0)
    return op.emitOpError("scale must be positive");
  return success();
}

LogicalResult AttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return verifyAttentionShapes(*this);
}

ShardingRule AttentionOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), t = r.seq("t"),
      h = r.factor("heads", FactorKind::Free, getKvHeads());
  // A split of the heads may not cut a group of query heads sharing a kv head.
  r.rule.factors[h].granuleName = "kv heads";
  r.mixing(t, Remedy::KVExchange);
  r.operand("q", {b, s, h});
  r.operand("k", {b, t, h});
  r.operand("v", {b, t, h});
  r.result("result", {b, s, h});
  return r.rule;
}

LogicalResult RingAttentionOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyAttentionShapes(*this)))
    return failure();
  if (shape(getK())[1] != shape(getQ())[1])
    return emitOpError("q and k must have the same sequence length");
  if (getAxes().empty())
    return emitOpError("needs at least one ring axis");
  // Every rank of the ring must hold its own block of keys, or the merge
  // counts some keys more than once.
  if (LayoutAttr l = getLayout(getQ())) {
    SmallVector<StringRef> want;
    for (Attribute a : getAxes())
      want.push_back(cast<StringAttr>(a).getValue());
    if (l.getDimAxes(1) != want)
      return emitOpError("axes must be the axes that split the sequence of q, ")
             << shardline::formatAxes(toLayout(l).dims[1]);
  }
  return success();
}

ShardingRule RingAttentionOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("heads", FactorKind::Free, getKvHeads());
  r.rule.factors[h].granuleName = "kv heads";
  r.mixing(s, Remedy::KVExchange, getAxes());
  r.operand("q", {b, s, h});
  r.operand("k", {b, s, h});
  r.operand("v", {b, s, h});
  r.result("result", {b, s, h});
  return r.rule;
}

/// Number of chunks the sequence (dimension 1) of `v` is cut into: one per
/// rank of its split, two in zigzag order; -1 when its mesh is unknown.
static int64_t seqChunks(Operation *op, Value v) {
  LayoutAttr l = getLayout(v);
  if (!l || l.getRank() < 2 || l.getDimAxes(1).empty())
    return 1;
  MeshOp mesh = lookupMesh(op, l);
  if (!mesh)
    return -1;
  int64_t n = toMesh(mesh).product(toLayout(l).dims[1]);
  return l.getDimOrder(1) == ChunkOrder::zigzag ? 2 * n : n;
}

LogicalResult CausalConv1dOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)) ||
      failed(checkRank(*this, getBias(), "bias", 1)))
    return failure();
  auto x = shape(getX());
  if (failed(checkDim(*this, getWeight(), "weight", 0, x[2], "channels")) ||
      failed(checkDim(*this, getBias(), "bias", 0, x[2], "channels")))
    return failure();
  if (getResult().getType().getShape() != x)
    return emitOpError("result shape must equal x's shape");
  if (Value halo = getHalo()) {
    int64_t width = shape(getWeight())[1] - 1;
    if (failed(checkRank(*this, halo, "halo", 3)) ||
        failed(checkDim(*this, halo, "halo", 0, x[0], "batch")) ||
        failed(checkDim(*this, halo, "halo", 2, x[2], "channels")))
      return failure();
    if (width == 0)
      return emitOpError("has a halo but its kernel of width 1 reads no earlier tokens");
    int64_t chunks = seqChunks(*this, getX());
    if (chunks > 0 && shape(halo)[1] != chunks * width)
      return emitOpError("halo holds ") << shape(halo)[1] << " tokens but x's " << chunks
                                        << " sequence chunks need " << chunks << " * " << width;
    LayoutAttr hl = getLayout(halo), xl = getLayout(getX());
    if (hl && xl &&
        (hl.getDimAxes(1) != xl.getDimAxes(1) || hl.getDimOrder(1) != xl.getDimOrder(1)))
      return emitOpError("halo must split its sequence like x");
  }
  return success();
}

ShardingRule CausalConv1dOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), c = r.factor("c"), w = r.factor("width", FactorKind::Whole);
  SmallVector<StringRef> haloAxes;
  if (LayoutAttr hl = getHalo() ? getLayout(getHalo()) : LayoutAttr(); hl && hl.getRank() > 1)
    haloAxes = hl.getDimAxes(1);
  r.mixing(s, Remedy::Halo, haloAxes);
  r.operand("x", {b, s, c});
  r.operand("weight", {c, w});
  r.operand("bias", {c});
  if (getHalo())
    r.operand("halo", {b, r.seq("halo"), c});
  r.result("result", {b, s, c});
  return r.rule;
}

/// Number of chunks a sequence split over `axes` has (2n in zigzag order).
static int64_t numChunks(Operation *op, Value seqValue, ArrayAttr axes) {
  if (axes.empty())
    return 1;
  LayoutAttr l = getLayout(seqValue);
  if (!l)
    return -1;
  MeshOp mesh = lookupMesh(op, l);
  if (!mesh)
    return -1;
  shardline::Mesh m = toMesh(mesh);
  int64_t n = 1;
  for (Attribute a : axes)
    n *= m.size(cast<StringAttr>(a).str()).value_or(1);
  return l.getDimOrder(1) == ChunkOrder::zigzag ? 2 * n : n;
}

/// Checks a scan summary (state or decay): [C?, b, trailing...].
static LogicalResult checkSummary(Operation *op, Value v, StringRef name, ArrayAttr chunkAxes,
                                  int64_t chunks, ArrayRef<int64_t> trailing) {
  unsigned lead = chunkAxes.empty() ? 0 : 1;
  if (failed(checkRank(op, v, name, lead + trailing.size())))
    return failure();
  if (lead && chunks > 0 && failed(checkDim(op, v, name, 0, chunks, "chunks along the sequence")))
    return failure();
  for (auto [i, d] : llvm::enumerate(trailing))
    if (failed(checkDim(op, v, name, lead + i, d, "scan state")))
      return failure();
  return success();
}

static LogicalResult checkChunkAxes(Operation *op, Value seqValue, ArrayAttr chunkAxes) {
  if (chunkAxes.empty())
    return success();
  LayoutAttr l = getLayout(seqValue);
  if (!l)
    return op->emitOpError("chunk_axes needs a sequence layout on operand #0");
  SmallVector<StringRef> axes = l.getDimAxes(1);
  SmallVector<StringRef> want;
  for (Attribute a : chunkAxes)
    want.push_back(cast<StringAttr>(a).getValue());
  if (axes != want)
    return op->emitOpError("chunk_axes must be the axes that split the sequence of operand #0");
  return success();
}

LogicalResult SSDScanOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getDt(), "dt", 3)) || failed(checkRank(*this, getB(), "B", 3)))
    return failure();
  auto x = shape(getX());
  int64_t heads = getHeads(), groups = getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return emitOpError("heads (") << heads << ") must be a positive multiple of groups (" << groups
                                  << ")";
  if (failed(checkDivides(*this, x[2], heads, "x channels by heads")) ||
      failed(checkDivides(*this, shape(getB())[2], groups, "B channels by groups")))
    return failure();
  int64_t p = x[2] / heads, n = shape(getB())[2] / groups;
  if (shape(getDt()) != ArrayRef<int64_t>{x[0], x[1], heads})
    return emitOpError("dt must be [batch, seq, heads]");
  if (shape(getC()) != shape(getB()) || shape(getB())[0] != x[0] || shape(getB())[1] != x[1])
    return emitOpError("B and C must be [batch, seq, groups * state]");
  for (auto [v, name] :
       {std::pair{getALog(), "a_log"}, std::pair{getD(), "d"}, std::pair{getDtBias(), "dt_bias"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, heads, "heads")))
      return failure();
  if (failed(checkChunkAxes(*this, getX(), getChunkAxes())))
    return failure();
  int64_t chunks = numChunks(*this, getX(), getChunkAxes());
  if (getY().getType().getShape() != x)
    return emitOpError("y must have x's shape");
  if (failed(
          checkSummary(*this, getState(), "state", getChunkAxes(), chunks, {x[0], heads, p, n})) ||
      failed(checkSummary(*this, getDecay(), "decay", getChunkAxes(), chunks, {x[0], heads})))
    return failure();
  if (Value in = getStateIn())
    if (failed(checkSummary(*this, in, "state_in", getChunkAxes(), chunks, {x[0], heads, p, n})))
      return failure();
  return success();
}

ShardingRule SSDScanOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, getGroups()),
      p = r.factor("p", FactorKind::Whole), n = r.factor("n", FactorKind::Whole);
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  bool chunked = !getChunkAxes().empty();
  auto summary = [&](std::vector<int> dims) {
    if (chunked)
      dims.insert(dims.begin(), s);
    return dims;
  };
  r.operand("x", {b, s, h});
  r.operand("dt", {b, s, h});
  r.operand("a_log", {h});
  r.operand("B", {b, s, h});
  r.operand("C", {b, s, h});
  r.operand("d", {h});
  r.operand("dt_bias", {h});
  if (getStateIn())
    r.operand("state_in", summary({b, h, p, n}));
  r.result("y", {b, s, h});
  r.result("state", summary({b, h, p, n}));
  r.result("decay", summary({b, h}));
  return r.rule;
}

LogicalResult SSDCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY0(), "y0", 3)) ||
      failed(checkRank(*this, getInit(), "init", 5)))
    return failure();
  auto y = shape(getY0());
  int64_t heads = getHeads(), groups = getGroups();
  if (heads <= 0 || groups <= 0 || heads % groups != 0)
    return emitOpError("heads (") << heads << ") must be a positive multiple of groups (" << groups
                                  << ")";
  if (failed(checkDivides(*this, y[2], heads, "y0 channels by heads")))
    return failure();
  if (shape(getDt()) != ArrayRef<int64_t>{y[0], y[1], heads})
    return emitOpError("dt must be [batch, seq, heads]");
  if (failed(checkRank(*this, getC(), "C", 3)) ||
      failed(checkDivides(*this, shape(getC())[2], groups, "C channels by groups")))
    return failure();
  if (shape(getC())[0] != y[0] || shape(getC())[1] != y[1])
    return emitOpError("C must be [batch, seq, groups * state]");
  for (auto [v, name] : {std::pair{getALog(), "a_log"}, std::pair{getDtBias(), "dt_bias"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, heads, "heads")))
      return failure();
  if (failed(checkChunkAxes(*this, getY0(), getChunkAxes())))
    return failure();
  int64_t chunks = numChunks(*this, getY0(), getChunkAxes());
  if (chunks > 0 && failed(checkDim(*this, getInit(), "init", 0, chunks, "chunks")))
    return failure();
  int64_t p = y[2] / heads, n = shape(getC())[2] / groups;
  for (auto [i, d] : llvm::enumerate(ArrayRef<int64_t>{y[0], heads, p, n}))
    if (failed(checkDim(*this, getInit(), "init", i + 1, d, "scan state")))
      return failure();
  if (getResult().getType().getShape() != y)
    return emitOpError("result must have y0's shape");
  return success();
}

ShardingRule SSDCorrectOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("groups", FactorKind::Free, getGroups()),
      p = r.factor("p", FactorKind::Whole), n = r.factor("n", FactorKind::Whole);
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  r.operand("y0", {b, s, h});
  r.operand("init", {s, b, h, p, n});
  r.operand("C", {b, s, h});
  r.operand("dt", {b, s, h});
  r.operand("a_log", {h});
  r.operand("dt_bias", {h});
  r.result("result", {b, s, h});
  return r.rule;
}

LogicalResult RGLRUScanOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)))
    return failure();
  auto x = shape(getX());
  for (auto [v, name] :
       {std::pair{getWa(), "wa"}, std::pair{getBa(), "ba"}, std::pair{getWx(), "wx"},
        std::pair{getBx(), "bx"}, std::pair{getLambda(), "lambda"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, x[2], "width")))
      return failure();
  if (failed(checkChunkAxes(*this, getX(), getChunkAxes())))
    return failure();
  int64_t chunks = numChunks(*this, getX(), getChunkAxes());
  if (getY().getType().getShape() != x)
    return emitOpError("y must have x's shape");
  if (failed(checkSummary(*this, getState(), "state", getChunkAxes(), chunks, {x[0], x[2]})) ||
      failed(checkSummary(*this, getDecay(), "decay", getChunkAxes(), chunks, {x[0], x[2]})))
    return failure();
  if (Value in = getStateIn())
    if (failed(checkSummary(*this, in, "state_in", getChunkAxes(), chunks, {x[0], x[2]})))
      return failure();
  return success();
}

ShardingRule RGLRUScanOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  bool chunked = !getChunkAxes().empty();
  auto summary = [&](std::vector<int> dims) {
    if (chunked)
      dims.insert(dims.begin(), s);
    return dims;
  };
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "wx", "bx", "lambda"})
    r.operand(name, {w});
  if (getStateIn())
    r.operand("state_in", summary({b, w}));
  r.result("y", {b, s, w});
  r.result("state", summary({b, w}));
  r.result("decay", summary({b, w}));
  return r.rule;
}

LogicalResult RGLRUCorrectOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getY0(), "y0", 3)) ||
      failed(checkRank(*this, getInit(), "init", 3)))
    return failure();
  auto y = shape(getY0());
  if (shape(getX()) != y || getResult().getType().getShape() != y)
    return emitOpError("y0, x and the result must have one shape");
  for (auto [v, name] :
       {std::pair{getWa(), "wa"}, std::pair{getBa(), "ba"}, std::pair{getLambda(), "lambda"}})
    if (failed(checkRank(*this, v, name, 1)) || failed(checkDim(*this, v, name, 0, y[2], "width")))
      return failure();
  if (failed(checkChunkAxes(*this, getY0(), getChunkAxes())))
    return failure();
  // Like sl.ssd_correct, init has its chunk dimension even for a single chunk.
  int64_t chunks = numChunks(*this, getY0(), getChunkAxes());
  if (chunks > 0 && failed(checkDim(*this, getInit(), "init", 0, chunks, "chunks")))
    return failure();
  if (failed(checkDim(*this, getInit(), "init", 1, y[0], "batch")) ||
      failed(checkDim(*this, getInit(), "init", 2, y[2], "width")))
    return failure();
  return success();
}

ShardingRule RGLRUCorrectOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), w = r.factor("w");
  r.mixing(s, Remedy::StatePassing, getChunkAxes());
  r.operand("y0", {b, s, w});
  r.operand("init", {s, b, w});
  r.operand("x", {b, s, w});
  for (const char *name : {"wa", "ba", "lambda"})
    r.operand(name, {w});
  r.result("result", {b, s, w});
  return r.rule;
}

LogicalResult RouterTopKOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getLogits(), "logits", 3)))
    return failure();
  auto l = shape(getLogits());
  int64_t k = getK();
  if (k < 1 || k > l[2])
    return emitOpError("k must be in [1, ") << l[2] << "], got " << k;
  SmallVector<int64_t> want{l[0], l[1], k};
  if (getWeights().getType().getShape() != ArrayRef<int64_t>(want) ||
      getIndices().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("weights and indices must be [batch, seq, k]");
  return success();
}

ShardingRule RouterTopKOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("logits", {b, s, e});
  r.result("weights", {b, s, k});
  r.result("indices", {b, s, k});
  return r.rule;
}

LogicalResult MoEDispatchOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getIndices(), "indices", 3)))
    return failure();
  auto x = shape(getX());
  if (getExperts() < 1)
    return emitOpError("experts must be positive");
  if (shape(getIndices())[0] != x[0] || shape(getIndices())[1] != x[1])
    return emitOpError("indices must be [batch, seq, k] for x's batch and seq");
  SmallVector<int64_t> want{(int64_t)getExperts(), x[0], x[1], x[2]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [experts, batch, seq, hidden]");
  return success();
}

ShardingRule MoEDispatchOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h"), e = r.factor("experts", FactorKind::Whole),
      k = r.factor("k", FactorKind::Whole);
  r.operand("x", {b, s, h});
  r.operand("indices", {b, s, k});
  r.result("result", {e, b, s, h});
  return r.rule;
}

LogicalResult MoEExpertsOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getTokens(), "tokens", 4)) ||
      failed(checkRank(*this, getGate(), "gate", 3)))
    return failure();
  auto t = shape(getTokens());
  auto g = shape(getGate());
  if (g[0] != t[0] || g[1] != t[3])
    return emitOpError("gate must be [experts, hidden, ffn]");
  if (shape(getUp()) != g)
    return emitOpError("up must have gate's shape");
  SmallVector<int64_t> down{g[0], g[2], g[1]};
  if (shape(getDown()) != ArrayRef<int64_t>(down))
    return emitOpError("down must be [experts, ffn, hidden]");
  if (getResult().getType().getShape() != t)
    return emitOpError("result must have the tokens' shape");
  return success();
}

ShardingRule MoEExpertsOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts"), b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Whole),
      f = r.factor("f", FactorKind::Contracted);
  r.operand("tokens", {e, b, s, h});
  r.operand("gate", {e, h, f});
  r.operand("up", {e, h, f});
  r.operand("down", {e, f, h});
  r.result("result", {e, b, s, h});
  return r.rule;
}

LogicalResult MoECombineOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getExpertOut(), "expert_out", 4)) ||
      failed(checkRank(*this, getWeights(), "weights", 3)))
    return failure();
  auto e = shape(getExpertOut());
  if (shape(getIndices()) != shape(getWeights()) || shape(getWeights())[0] != e[1] ||
      shape(getWeights())[1] != e[2])
    return emitOpError("weights and indices must be [batch, seq, k]");
  SmallVector<int64_t> want{e[1], e[2], e[3]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, seq, hidden]");
  return success();
}

ShardingRule MoECombineOp::getShardingRule() {
  RuleBuilder r;
  int e = r.factor("experts", FactorKind::Whole), b = r.factor("b"), s = r.seq(), h = r.factor("h"),
      k = r.factor("k", FactorKind::Whole);
  r.operand("expert_out", {e, b, s, h});
  r.operand("weights", {b, s, k});
  r.operand("indices", {b, s, k});
  r.result("result", {b, s, h});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

template <typename OpTy> static LogicalResult verifyElementwise(OpTy op) {
  if (failed(verifyStaticAndElementTypes(op)))
    return failure();
  auto s = op.getResult().getType().getShape();
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (shape(v) != s)
      return op.emitOpError("operand #") << i << " shape differs from the result's";
  return success();
}

template <typename OpTy> static ShardingRule elementwiseRule(OpTy op, PartialRule partial) {
  RuleBuilder r;
  auto dims = r.tokens(op.getResult().getType().getRank());
  for (unsigned i = 0; i < op->getNumOperands(); ++i)
    r.operand(op->getNumOperands() == 1 ? "x" : (i ? "rhs" : "lhs"), dims);
  r.result("result", dims);
  r.rule.partial = partial;
  return r.rule;
}

#define SL_ELEMENTWISE(OP, PARTIAL)                                                                \
  LogicalResult OP::verify() {                                                                     \
    return inPerRankProgram(*this) ? success() : verifyElementwise(*this);                         \
  }                                                                                                \
  ShardingRule OP::getShardingRule() { return elementwiseRule(*this, PARTIAL); }
SL_ELEMENTWISE(AddOp, PartialRule::Same)
SL_ELEMENTWISE(MulOp, PartialRule::One)
SL_ELEMENTWISE(SwiGLUOp, PartialRule::None)
SL_ELEMENTWISE(SiLUOp, PartialRule::None)
SL_ELEMENTWISE(GeLUOp, PartialRule::None)
SL_ELEMENTWISE(SigmoidOp, PartialRule::None)
SL_ELEMENTWISE(SoftplusOp, PartialRule::None)
#undef SL_ELEMENTWISE

LogicalResult LMHeadOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getWeight(), "weight", 2)))
    return failure();
  auto x = shape(getX()), w = shape(getWeight());
  if (x[2] != w[0])
    return emitOpError("hidden sizes differ: x has ") << x[2] << ", weight has " << w[0];
  SmallVector<int64_t> want{x[0], x[1], w[1]};
  if (getResult().getType().getShape() != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, seq, vocab]");
  return success();
}

ShardingRule LMHeadOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), h = r.factor("h", FactorKind::Contracted), v = r.factor("v");
  r.operand("x", {b, s, h});
  r.operand("weight", {h, v});
  r.result("logits", {b, s, v});
  r.rule.partial = PartialRule::One;
  return r.rule;
}

LogicalResult CrossEntropyOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) ||
      failed(checkRank(*this, getLogits(), "logits", 3)) ||
      failed(checkRank(*this, getLabels(), "labels", 2)) ||
      failed(checkRank(*this, getLoss(), "loss", 0)))
    return failure();
  auto l = shape(getLogits());
  if (shape(getLabels()) != l.take_front(2))
    return emitOpError("labels must be [batch, seq] of the logits");
  // The max and sum are all-reduced over vocab_axes: an axis that does not
  // split the vocabulary would count every logit once per rank.
  LayoutAttr layout = getLayout(getLogits());
  if (layout && !getVocabAxes().empty()) {
    SmallVector<StringRef> want;
    for (Attribute a : getVocabAxes())
      want.push_back(cast<StringAttr>(a).getValue());
    if (layout.getDimAxes(2) != want)
      return emitOpError("vocab_axes must be the axes that split the logits' vocabulary, ")
             << shardline::formatAxes(toLayout(layout).dims[2]);
  }
  return success();
}

ShardingRule CrossEntropyOp::getShardingRule() {
  RuleBuilder r;
  int b = r.factor("b"), s = r.seq(), v = r.factor("v");
  r.mixing(v, Remedy::VocabParallel, getVocabAxes());
  r.operand("logits", {b, s, v});
  r.operand("labels", {b, s});
  r.result("loss", {});
  r.rule.reducesToScalar = true;
  return r.rule;
}

//===----------------------------------------------------------------------===//
// Layout transitions
//===----------------------------------------------------------------------===//

static std::vector<std::string> strings(ArrayAttr axes) {
  std::vector<std::string> out;
  for (Attribute a : axes)
    out.push_back(cast<StringAttr>(a).str());
  return out;
}

/// Common prelude: both sides annotated, valid, on one mesh, same element type.
static FailureOr<std::pair<shardline::Layout, shardline::Layout>>
verifyTransition(Operation *op, Value in, Value out, bool sameShape) {
  if (failed(verifyValueLayouts(op)))
    return failure();
  LayoutAttr li = getLayout(in), lo = getLayout(out);
  if (!li || !lo)
    return op->emitOpError("operand and result must carry #sl.layout encodings");
  if (!cast<RankedTensorType>(in.getType()).hasStaticShape() ||
      !cast<RankedTensorType>(out.getType()).hasStaticShape())
    return op->emitOpError("operand and result must have static shapes");
  if (getElementTypeOrSelf(in.getType()) != getElementTypeOrSelf(out.getType()))
    return op->emitOpError("operand and result element types differ");
  if (sameShape && shape(in) != shape(out))
    return op->emitOpError("operand and result shapes differ");
  return std::pair{toLayout(li), toLayout(lo)};
}

static LogicalResult checkAxes(Operation *op, ArrayAttr axes, const shardline::Mesh *) {
  if (axes.empty())
    return op->emitOpError("needs at least one axis");
  return success();
}

static LogicalResult checkDimIndex(Operation *op, int64_t dim, unsigned rank, StringRef name) {
  if (dim < 0 || dim >= (int64_t)rank)
    return op->emitOpError() << name << " " << dim << " is out of range for rank " << rank;
  return success();
}

static LogicalResult expectLayout(Operation *op, const shardline::Layout &got,
                                  const shardline::Layout &want) {
  if (got != want)
    return op->emitOpError() << "result layout " << got.str() << " does not match the expected "
                             << want.str();
  return success();
}

/// Removes `axes` from the end of dimension `dim`'s split, or explains why not.
static LogicalResult dropSuffix(Operation *op, shardline::Layout &l, int64_t dim,
                                const std::vector<std::string> &axes) {
  auto &d = l.dims[dim];
  if (d.size() < axes.size() || !std::equal(axes.begin(), axes.end(), d.end() - axes.size()))
    return op->emitOpError() << "dimension " << dim << " is split over " << shardline::formatAxes(d)
                             << ", which does not end with " << shardline::formatAxes(axes);
  d.resize(d.size() - axes.size());
  if (d.empty() && l.orderDim == dim)
    l.orderDim = -1;
  return success();
}

LogicalResult RelayoutOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  return failure(failed(verifyTransition(*this, getX(), getResult(), true)));
}

LogicalResult AllGatherOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)) ||
      failed(checkDimIndex(*this, (int64_t)getDim(), shape(getX()).size(), "dim")))
    return failure();
  shardline::Layout want = ls->first;
  if (failed(dropSuffix(*this, want, (int64_t)getDim(), strings(getAxes()))))
    return failure();
  return expectLayout(*this, ls->second, want);
}

static LogicalResult dropPartial(Operation *op, shardline::Layout &l,
                                 const std::vector<std::string> &axes) {
  for (const auto &a : axes) {
    auto it = std::find(l.partial.begin(), l.partial.end(), a);
    if (it == l.partial.end())
      return op->emitOpError() << "operand is not a pending sum over '" << a << "'";
    l.partial.erase(it);
  }
  return success();
}

LogicalResult ReduceScatterOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)) ||
      failed(checkDimIndex(*this, (int64_t)getDim(), shape(getX()).size(), "dim")))
    return failure();
  shardline::Layout want = ls->first;
  auto axes = strings(getAxes());
  if (failed(dropPartial(*this, want, axes)))
    return failure();
  auto &d = want.dims[(int64_t)getDim()];
  d.insert(d.end(), axes.begin(), axes.end());
  if (ls->second.orderDim == (int64_t)getDim() && d.size() == axes.size()) {
    want.orderDim = (int64_t)getDim();
    want.order = ls->second.order;
  }
  return expectLayout(*this, ls->second, want);
}

LogicalResult AllReduceOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)))
    return failure();
  shardline::Layout want = ls->first;
  if (failed(dropPartial(*this, want, strings(getAxes()))))
    return failure();
  return expectLayout(*this, ls->second, want);
}

LogicalResult AllToAllOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  unsigned rank = shape(getX()).size();
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)) ||
      failed(checkDimIndex(*this, (int64_t)getSplitDim(), rank, "split_dim")) ||
      failed(checkDimIndex(*this, (int64_t)getConcatDim(), rank, "concat_dim")))
    return failure();
  if ((int64_t)getSplitDim() == (int64_t)getConcatDim())
    return emitOpError("split_dim and concat_dim must differ");
  shardline::Layout want = ls->first;
  auto axes = strings(getAxes());
  if (failed(dropSuffix(*this, want, (int64_t)getConcatDim(), axes)))
    return failure();
  auto &d = want.dims[(int64_t)getSplitDim()];
  bool wasWhole = d.empty();
  d.insert(d.end(), axes.begin(), axes.end());
  // A dimension that becomes split may take either chunk order.
  if (wasWhole && ls->second.orderDim == (int64_t)getSplitDim()) {
    want.orderDim = (int64_t)getSplitDim();
    want.order = ls->second.order;
  }
  return expectLayout(*this, ls->second, want);
}

LogicalResult SliceOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)) ||
      failed(checkDimIndex(*this, (int64_t)getDim(), shape(getX()).size(), "dim")))
    return failure();
  shardline::Layout want = ls->first;
  auto &d = want.dims[(int64_t)getDim()];
  bool wasWhole = d.empty();
  auto axes = strings(getAxes());
  d.insert(d.end(), axes.begin(), axes.end());
  if (wasWhole && ls->second.orderDim == (int64_t)getDim()) {
    want.orderDim = (int64_t)getDim();
    want.order = ls->second.order;
  }
  return expectLayout(*this, ls->second, want);
}

LogicalResult ReorderOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), true);
  if (failed(ls))
    return failure();
  const auto &[in, out] = *ls;
  if (in.dims != out.dims || in.partial != out.partial)
    return emitOpError("may change only the chunk order; splits and pending sums must stay");
  return success();
}

LogicalResult HaloOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  auto ls = verifyTransition(*this, getX(), getResult(), false);
  if (failed(ls) || failed(checkAxes(*this, getAxes(), nullptr)) ||
      failed(checkRank(*this, getX(), "x", 3)) ||
      failed(checkRank(*this, getResult(), "result", 3)))
    return failure();
  if (getWidth() < 1)
    return emitOpError("width must be positive");
  const auto &[in, out] = *ls;
  if (in.dims[1] != strings(getAxes()))
    return emitOpError("axes must be the axes that split x's sequence, ")
           << shardline::formatAxes(in.dims[1]);
  if (!in.partial.empty())
    return emitOpError("x cannot be a pending sum");
  int64_t chunks = numChunks(*this, getX(), getAxes());
  auto x = shape(getX());
  SmallVector<int64_t> want{x[0], chunks * (int64_t)getWidth(), x[2]};
  if (shape(getResult()) != ArrayRef<int64_t>(want))
    return emitOpError("result must be [batch, ")
           << chunks << " chunks * " << getWidth() << ", channels]";
  return expectLayout(*this, out, in);
}

LogicalResult ScanStateExchangeOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (failed(verifyStaticAndElementTypes(*this)) || failed(verifyValueLayouts(*this)))
    return failure();
  LayoutAttr ls = getLayout(getStates()), ld = getLayout(getDecays()), lr = getLayout(getResult());
  if (!ls || !ld || !lr)
    return emitOpError("states, decays and the result must carry #sl.layout encodings");
  if (getResult().getType() != getStates().getType())
    return emitOpError("result type must equal the states' type");
  auto s = shape(getStates()), d = shape(getDecays());
  if (s.size() < 2 || d.size() < 2 || d.size() > s.size() || s.take_front(d.size()) != d)
    return emitOpError("decays must be [chunks, ...] and a prefix of the states' shape");
  auto axes = strings(getAxes());
  if (axes.empty())
    return emitOpError("needs at least one axis");
  shardline::Layout states = toLayout(ls), decays = toLayout(ld);
  if (states.dims[0] != axes || decays.dims[0] != axes)
    return emitOpError("states and decays must be split over ")
           << shardline::formatAxes(axes) << " along the chunk dimension";
  if (!states.partial.empty() || !decays.partial.empty())
    return emitOpError("summaries cannot be pending sums");
  // Each rank combines the decay and state of the same chunks and elements.
  for (size_t i = 0; i < decays.dims.size(); ++i)
    if (decays.dims[i] != states.dims[i] || decays.dimOrder(i) != states.dimOrder(i))
      return emitOpError("decays must be split like the states' leading dimensions; dimension ")
             << i << " of the states is split over " << shardline::formatAxes(states.dims[i])
             << (states.dimOrder(i) == shardline::ChunkOrder::Zigzag ? " zigzag" : "");
  return success();
}
