//===- SPMD.cpp - the contexts the passes hand to SPMD ops ----------------===//

#include "shardline/Dialect/SL/IR/SL.h"

using namespace mlir;
using namespace mlir::sl;

std::vector<std::string> mlir::sl::axisNames(ArrayAttr axes) {
  std::vector<std::string> out;
  for (Attribute a : axes)
    out.push_back(cast<StringAttr>(a).getValue().str());
  return out;
}

int64_t mlir::sl::groupSize(const shardline::Mesh &mesh, ArrayAttr axes) {
  return mesh.product(axisNames(axes));
}

std::vector<int64_t> mlir::sl::localShapeOf(Value v, const shardline::Mesh &mesh) {
  auto type = cast<RankedTensorType>(v.getType());
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  if (LayoutAttr l = getLayout(type))
    shape = shardline::localShape(toLayout(l), mesh, shape);
  return shape;
}

int64_t mlir::sl::localBytes(Value v, const shardline::Mesh &mesh) {
  if (!isa<RankedTensorType>(v.getType()))
    return 0;
  int64_t elementBytes = (getElementTypeOrSelf(v.getType()).getIntOrFloatBitWidth() + 7) / 8;
  return shardline::numElements(localShapeOf(v, mesh)) * std::max<int64_t>(1, elementBytes);
}

ArrayAttr mlir::sl::axesAttr(MLIRContext *ctx, ArrayRef<std::string> axes) {
  SmallVector<Attribute> names;
  for (const auto &a : axes)
    names.push_back(StringAttr::get(ctx, a));
  return ArrayAttr::get(ctx, names);
}

int64_t mlir::sl::chunkCount(const shardline::Mesh &mesh, const std::vector<std::string> &axes,
                             shardline::ChunkOrder order) {
  return mesh.product(axes) * (order == shardline::ChunkOrder::Zigzag ? 2 : 1);
}

std::string mlir::sl::opLabel(Operation *op) {
  std::string s = op->getName().getStringRef().str();
  Location loc = op->getLoc();
  while (true) {
    if (auto n = dyn_cast<NameLoc>(loc))
      return s + " '" + n.getName().str() + "'";
    if (auto f = dyn_cast<FusedLoc>(loc); f && !f.getLocations().empty()) {
      loc = f.getLocations().front();
      continue;
    }
    return s;
  }
}

//===----------------------------------------------------------------------===//
// RemedyContext
//===----------------------------------------------------------------------===//

RemedyContext::~RemedyContext() = default;

//===----------------------------------------------------------------------===//
// RankContext
//===----------------------------------------------------------------------===//

static std::vector<int64_t> shapeOf(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  return {t.getShape().begin(), t.getShape().end()};
}

static shardline::Layout layoutOf(Value v) { return layoutOrReplicated(v); }

RankContext::Runs RankContext::owned(Value v, unsigned dim, int64_t r) const {
  return shardline::tokenRuns(layoutOf(v), mesh, shapeOf(v), dim, r);
}

DenseI64ArrayAttr RankContext::runs(Value v, unsigned dim, int64_t r) const {
  SmallVector<int64_t> out;
  for (const shardline::TokenRun &run : owned(v, dim, r))
    out.append({run.start, run.length});
  return DenseI64ArrayAttr::get(ctx, out);
}

DenseI64ArrayAttr RankContext::ranks(ArrayRef<int64_t> ranks) const {
  return DenseI64ArrayAttr::get(ctx, ranks);
}

std::vector<int64_t> RankContext::group(ArrayAttr axes) const {
  return mesh.group(rank, axisNames(axes));
}

IntegerAttr RankContext::offset(Value v, unsigned dim) const {
  return IntegerAttr::get(IntegerType::get(ctx, 64), owned(v, dim, rank).front().start);
}

SmallVector<int16_t> RankContext::gridAxes(ArrayAttr axes) const {
  SmallVector<int16_t> out;
  for (const auto &a : axisNames(axes))
    out.push_back((int16_t)mesh.axisIndex(a));
  return out;
}

RankedTensorType RankContext::localType(Value v) const {
  auto t = cast<RankedTensorType>(v.getType());
  if (!getLayout(v))
    return t;
  return RankedTensorType::get(shardline::localShape(layoutOf(v), mesh, shapeOf(v)),
                               t.getElementType());
}

/// Whether, on every rank, `to`'s indices along `dim` are the concatenation,
/// in group order, of the group members' indices in `from`.
bool RankContext::concatenates(Value from, Value to, unsigned dim,
                               const std::vector<std::string> &axes) const {
  for (int64_t r = 0; r < mesh.numRanks(); ++r) {
    Runs joined;
    for (int64_t m : mesh.group(r, axes))
      for (const shardline::TokenRun &run : owned(from, dim, m))
        shardline::appendRun(joined, run.start, run.length);
    if (joined != owned(to, dim, r))
      return false;
  }
  return true;
}

/// Whether, on every rank, `to`'s indices along `dim` are the k-th of
/// |group| equal slices of `from`'s, k the rank's place in its group.
bool RankContext::slices(Value from, Value to, unsigned dim,
                         const std::vector<std::string> &axes) const {
  for (int64_t r = 0; r < mesh.numRanks(); ++r) {
    std::vector<int64_t> group = mesh.group(r, axes);
    int64_t k = std::find(group.begin(), group.end(), r) - group.begin();
    Runs whole = owned(from, dim, r);
    int64_t size = shardline::totalLength(whole), n = size / (int64_t)group.size();
    if (n * (int64_t)group.size() != size)
      return false;
    if (shardline::sliceRuns(whole, k * n, n) != owned(to, dim, r))
      return false;
  }
  return true;
}

bool RankContext::othersKept(Value from, Value to, ArrayRef<unsigned> skip) const {
  for (unsigned d = 0; d < shapeOf(from).size(); ++d)
    if (!llvm::is_contained(skip, d))
      for (int64_t r = 0; r < mesh.numRanks(); ++r)
        if (owned(from, d, r) != owned(to, d, r))
          return false;
  return true;
}

bool RankContext::alongOneDim(Value x, Value y, unsigned dim, ArrayAttr axes, bool gathers) const {
  std::vector<std::string> names = axisNames(axes);
  return (gathers ? concatenates(x, y, dim, names) : slices(x, y, dim, names)) &&
         othersKept(x, y, {dim});
}

bool RankContext::exchanges(Value x, Value y, unsigned split, unsigned concat,
                            ArrayAttr axes) const {
  std::vector<std::string> names = axisNames(axes);
  return slices(x, y, split, names) && concatenates(x, y, concat, names) &&
         othersKept(x, y, {split, concat});
}

bool RankContext::keepsIndices(Value x, Value y) const { return othersKept(x, y, {}); }

ValueNames mlir::sl::defaultValueNames(Operation *op) {
  ValueNames names;
  auto &[operands, results] = names;
  if (auto ruled = dyn_cast<ShardingRuleOpInterface>(op)) {
    shardline::ShardingRule rule = ruled.getShardingRule();
    operands = rule.operandNames;
    results = rule.resultNames;
  }
  auto numbered = [](std::vector<std::string> &out, unsigned n, const std::string &stem) {
    out.clear();
    for (unsigned i = 0; i < n; ++i)
      out.push_back(n == 1 ? stem : stem + std::to_string(i));
  };
  if (operands.size() != op->getNumOperands())
    numbered(operands, op->getNumOperands(), "x");
  if (results.size() != op->getNumResults())
    numbered(results, op->getNumResults(), "result");
  return names;
}
