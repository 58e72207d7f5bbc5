//===- SLOps.cpp - sl ops: shared checks, the rule verifier, sl.weight ----===//
//
// Each family's ops, verifiers, rules and remedies live in their own file
// (AttentionOps.cpp, MambaOps.cpp, ...); this file holds what they share.
//
//===----------------------------------------------------------------------===//

#include "OpUtils.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::sl;
using namespace mlir::sl::detail;

#define GET_OP_CLASSES
#include "shardline/Dialect/SL/IR/SLOps.cpp.inc"

namespace mlir::sl::detail {

//===----------------------------------------------------------------------===//
// Shared checks
//===----------------------------------------------------------------------===//

ArrayRef<int64_t> shape(Value v) { return cast<RankedTensorType>(v.getType()).getShape(); }
std::vector<int64_t> shapeVec(Value v) {
  auto s = shape(v);
  return {s.begin(), s.end()};
}

LogicalResult checkRank(Operation *op, Value v, StringRef name, unsigned rank) {
  if (shape(v).size() != rank)
    return op->emitOpError() << name << " must have rank " << rank << ", got " << v.getType();
  return success();
}

LogicalResult checkDim(Operation *op, Value v, StringRef name, unsigned dim, int64_t expected,
                       StringRef why) {
  if (shape(v)[dim] != expected)
    return op->emitOpError() << name << " dimension " << dim << " must be " << expected << " ("
                             << why << "), got " << shape(v)[dim];
  return success();
}

LogicalResult checkDivides(Operation *op, int64_t size, int64_t by, StringRef what) {
  if (by <= 0 || size % by != 0)
    return op->emitOpError() << what << ": " << size << " is not divisible by " << by;
  return success();
}

LogicalResult checkOptionalGradient(Operation *op, Value operand, Value gradient,
                                    StringRef operandName, StringRef gradientName) {
  if (bool(operand) != bool(gradient))
    return op->emitOpError() << "has a " << gradientName << " result exactly when it has a "
                             << operandName << " operand";
  if (operand && shape(operand) != shape(gradient))
    return op->emitOpError() << gradientName << " must be shaped like the " << operandName;
  return success();
}

/// Calls visit(value, "operand" | "result", index) on every operand, then every
/// result, and stops at the first failure.
template <typename Visit> static LogicalResult forEachValue(Operation *op, Visit visit) {
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(visit(v, "operand", i)))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(visit(v, "result", i)))
      return failure();
  return success();
}

/// A static shape's byte count is bounded (kMaxTensorBytes): sizes, offsets
/// and the arena are computed from it in every later stage.
static LogicalResult checkByteCount(Operation *op, Value v, StringRef kind, unsigned i) {
  auto t = cast<RankedTensorType>(v.getType());
  if (!t.hasStaticShape())
    return success();
  std::vector<int64_t> factors(t.getShape().begin(), t.getShape().end());
  Type e = t.getElementType();
  // Types without a bit width (index, dialect types) are costed as 8 bytes.
  factors.push_back(e.isIntOrFloat() ? (int64_t)llvm::divideCeil(e.getIntOrFloatBitWidth(), 8) : 8);
  std::optional<int64_t> bytes = shardline::checkedProduct(factors);
  if (!bytes || *bytes > shardline::kMaxTensorBytes)
    return op->emitOpError() << kind << " #" << i << " " << t << " holds "
                             << (bytes ? std::to_string(*bytes) : "more than 2^63")
                             << " bytes; a tensor holds at most 2^56";
  return success();
}

/// Static shapes, and one floating-point element type among the op's float values.
LogicalResult verifyStaticAndElementTypes(Operation *op, Value f32Allowed) {
  // A backward op (its name has "_grad") may give f32 results from 16-bit
  // values: a 16-bit model's parameter gradients accumulate in f32.
  bool backward = op->getName().getStringRef().contains("_grad");
  Type floatType;
  auto visit = [&](Value v, StringRef kind, unsigned i) -> LogicalResult {
    auto t = cast<RankedTensorType>(v.getType());
    if (!t.hasStaticShape())
      return op->emitOpError() << kind << " #" << i << " must have a static shape, got " << t;
    if (failed(checkByteCount(op, v, kind, i)))
      return failure();
    Type e = t.getElementType();
    if (!isa<FloatType>(e) || (e.isF32() && (v == f32Allowed ||
                                              (backward && isa<OpResult>(v) &&
                                               cast<OpResult>(v).getOwner() == op))))
      return success();
    if (!floatType)
      floatType = e;
    else if (e != floatType)
      return op->emitOpError() << kind << " #" << i << " has element type " << e << " but "
                               << floatType << " is used elsewhere in the op";
    return success();
  };
  return forEachValue(op, visit);
}

/// Checks every layout among `values` on its own terms: known mesh, known axes,
/// splits that divide. Returns the mesh (null when no value has a layout).
FailureOr<MeshOp> verifyValueLayouts(Operation *op) {
  MeshOp mesh;
  FlatSymbolRefAttr meshName;
  auto visit = [&](Value v, StringRef kind, unsigned i) -> LogicalResult {
    if (failed(checkByteCount(op, v, kind, i)))
      return failure();
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
  if (failed(forEachValue(op, visit)))
    return failure();
  return mesh;
}

} // namespace mlir::sl::detail

std::optional<shardline::RuleCheck>
mlir::sl::checkOpRule(Operation *op, const llvm::DenseMap<Value, shardline::Layout> &overrides) {
  std::vector<std::optional<shardline::Layout>> layouts;
  for (Value v : op->getOperands())
    if (auto it = overrides.find(v); it != overrides.end())
      layouts.push_back(it->second);
    else
      layouts.push_back(std::nullopt);
  return checkOpRuleAt(op, layouts);
}

std::optional<shardline::RuleCheck>
mlir::sl::checkOpRuleAt(Operation *op, ArrayRef<std::optional<shardline::Layout>> overrides,
                        const shardline::Mesh *known) {
  auto iface = dyn_cast<ShardingRuleOpInterface>(op);
  if (!iface)
    return std::nullopt;
  MeshOp mesh;
  std::vector<std::vector<int64_t>> operandShapes, resultShapes;
  std::vector<std::optional<shardline::Layout>> layouts;
  for (auto [i, v] : llvm::enumerate(op->getOperands())) {
    operandShapes.push_back(shapeVec(v));
    LayoutAttr l = getLayout(v);
    if (l && !mesh && !known)
      mesh = lookupMesh(op, l);
    if (i < overrides.size() && overrides[i])
      layouts.push_back(overrides[i]);
    else if (l)
      layouts.push_back(toLayout(l));
    else
      layouts.push_back(std::nullopt);
  }
  for (Value v : op->getResults()) {
    resultShapes.push_back(shapeVec(v));
    if (LayoutAttr l = getLayout(v); l && !mesh && !known)
      mesh = lookupMesh(op, l);
  }
  if (known)
    return shardline::checkRule(iface.getShardingRule(), *known, operandShapes, layouts,
                                resultShapes);
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

namespace mlir::sl::detail {

/// Number of chunks a sequence split over `axes` has (2n in zigzag order).
int64_t numChunks(Operation *op, Value seqValue, ArrayAttr axes) {
  if (axes.empty())
    return 1;
  LayoutAttr l = getLayout(seqValue);
  if (!l)
    return -1;
  MeshOp mesh = lookupMesh(op, l);
  if (!mesh)
    return -1;
  return chunkCount(toMesh(mesh), axisNames(axes), toLayout(l).dimOrder(1));
}

/// Checks a scan summary (state or decay): [C?, b, trailing...].
LogicalResult checkSummary(Operation *op, Value v, StringRef name, ArrayAttr chunkAxes,
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

LogicalResult checkChunkAxes(Operation *op, Value seqValue, ArrayAttr chunkAxes) {
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

LogicalResult checkScanSummaries(Operation *op, Value x, ArrayAttr chunkAxes, Value state,
                                 Value decay, Value stateIn, ArrayRef<int64_t> stateDims,
                                 ArrayRef<int64_t> decayDims) {
  if (failed(checkChunkAxes(op, x, chunkAxes)))
    return failure();
  int64_t chunks = numChunks(op, x, chunkAxes);
  if (failed(checkSummary(op, state, "state", chunkAxes, chunks, stateDims)) ||
      failed(checkSummary(op, decay, "decay", chunkAxes, chunks, decayDims)))
    return failure();
  if (stateIn && failed(checkSummary(op, stateIn, "state_in", chunkAxes, chunks, stateDims)))
    return failure();
  return success();
}

LogicalResult checkCorrectionInit(Operation *op, Value y0, Value init, ArrayAttr chunkAxes,
                                  ArrayRef<int64_t> stateDims) {
  if (failed(checkRank(op, init, "init", stateDims.size() + 1)) ||
      failed(checkChunkAxes(op, y0, chunkAxes)))
    return failure();
  int64_t chunks = numChunks(op, y0, chunkAxes);
  if (chunks > 0 && failed(checkDim(op, init, "init", 0, chunks, "chunks")))
    return failure();
  for (auto [i, d] : llvm::enumerate(stateDims))
    if (failed(checkDim(op, init, "init", i + 1, d, "scan state")))
      return failure();
  return success();
}

Value insertHalo(Operation *op, Value x, int64_t width, RemedyContext &ctx, StringRef what) {
  shardline::Layout l = layoutOrReplicated(x);
  if (l.dims[1].empty() || width == 0)
    return Value();
  auto xt = cast<RankedTensorType>(x.getType());
  int64_t chunks = chunkCount(ctx.getMesh(), l.dims[1], l.dimOrder(1));
  auto haloType = RankedTensorType::get({xt.getShape()[0], chunks * width, xt.getShape()[2]},
                                        xt.getElementType(), xt.getEncoding());
  OpBuilder b(op);
  auto halo = HaloOp::create(b, op->getLoc(), haloType, x, axesAttr(b.getContext(), l.dims[1]),
                             b.getI64IntegerAttr(width));
  std::string read = what.empty() ? "the " : what.str() + " of the ";
  halo->setAttr(kReasonAttr,
                b.getStringAttr(opLabel(op) + " reads " + read + std::to_string(width) +
                                " tokens before each sequence chunk"));
  return halo.getResult();
}

LogicalResult buildOperandGradients(Operation *op, GradientBuilder &g, StringRef name,
                                    ValueRange operands, ArrayRef<unsigned> inputs,
                                    ArrayRef<NamedAttribute> attrs) {
  if (llvm::none_of(inputs, [&](unsigned i) { return g.needsGradient(i); }))
    return success();
  SmallVector<Value> likes;
  for (unsigned i : inputs)
    likes.push_back(op->getOperand(i));
  FailureOr<Operation *> grad = g.build(name, operands, likes, attrs);
  if (failed(grad))
    return failure();
  for (auto [j, i] : llvm::enumerate(inputs))
    if (g.needsGradient(i))
      g.contribute(i, (*grad)->getResult(j));
  return success();
}

FailureOr<Operation *>
chunkScan(Operation *scan, Value stateIn, RemedyContext &ctx,
          function_ref<Value(OpBuilder &b, Value y0, Value init, ArrayAttr axes)> correct) {
  shardline::Layout x = layoutOrReplicated(scan->getOperand(0));
  auto chunkAxes = scan->getAttrOfType<ArrayAttr>("chunk_axes");
  if (x.dims[1].empty() || (chunkAxes && !chunkAxes.empty()))
    return scan;
  Value state = scan->getResult(1), decay = scan->getResult(2);
  if (!state.use_empty() || !decay.use_empty()) {
    scan->emitOpError("the final state of a scan whose sequence is split over ")
        << shardline::formatAxes(x.dims[1]) << " is not supported yet";
    return failure();
  }
  if (stateIn) {
    scan->emitOpError("an initial state for a scan whose sequence is split is not supported yet");
    return failure();
  }
  OpBuilder b(scan);
  int64_t chunks = chunkCount(ctx.getMesh(), x.dims[1], x.dimOrder(1));
  auto withChunks = [&](Type t) {
    auto rt = cast<RankedTensorType>(t);
    SmallVector<int64_t> shape{chunks};
    shape.append(rt.getShape().begin(), rt.getShape().end());
    return RankedTensorType::get(shape, rt.getElementType());
  };
  ArrayAttr axes = axesAttr(b.getContext(), x.dims[1]);
  Operation *chunked = b.clone(*scan);
  chunked->getResult(1).setType(withChunks(state.getType()));
  chunked->getResult(2).setType(withChunks(decay.getType()));
  chunked->setAttr("chunk_axes", axes);
  if (failed(ctx.deriveResults(chunked)))
    return failure();
  Value y0 = chunked->getResult(0), st = chunked->getResult(1), dec = chunked->getResult(2);
  auto exchange = ScanStateExchangeOp::create(b, scan->getLoc(), st.getType(), st, dec, axes);
  exchange->setAttr(kReasonAttr,
                    b.getStringAttr("the sequence of " + opLabel(scan) + " is split over " +
                                    shardline::formatAxes(x.dims[1]) +
                                    ", so chunks scan from zero and pass states"));
  Value corrected = correct(b, y0, exchange, axes);
  scan->getResult(0).replaceAllUsesWith(corrected);
  scan->erase();
  return corrected.getDefiningOp();
}

} // namespace mlir::sl::detail

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  if (inPerRankProgram(*this))
    return success();
  if (getName().empty())
    return emitOpError("needs a non-empty name");
  StringRef init = getInit();
  if (init != "normal" && init != "uniform" && init != "constant" && init != "copy")
    return emitOpError("init must be 'normal', 'uniform', 'constant' or 'copy', got '")
           << init << "'";
  if (init == "copy" && getSource().empty())
    return emitOpError("init 'copy' needs source, the name of the weight it copies");
  if (init != "copy" && !getSource().empty())
    return emitOpError("source names the weight a 'copy' init copies, and the init is '")
           << init << "'";
  if (getSource() == getName())
    return emitOpError("cannot copy itself");
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
