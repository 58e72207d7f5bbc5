//===- SLDialect.cpp - the sl dialect, its layout attribute and mesh ------===//

#include "shardline/Dialect/SL/IR/SL.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::sl;

#include "shardline/Dialect/SL/IR/SLDialect.cpp.inc"
#include "shardline/Dialect/SL/IR/SLEnums.cpp.inc"
#include "shardline/Dialect/SL/IR/SLInterfaces.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "shardline/Dialect/SL/IR/SLAttrs.cpp.inc"

namespace {
/// Prints layouts as `#layout`, `#layout1`, ... aliases so that types stay short.
struct SLOpAsmInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<LayoutAttr>(attr)) {
      os << "layout";
      return AliasResult::OverridableAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void SLDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "shardline/Dialect/SL/IR/SLOps.cpp.inc"
      >();
  registerAttributes();
  addInterfaces<SLOpAsmInterface>();
}

void SLDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "shardline/Dialect/SL/IR/SLAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// LayoutAttr
//===----------------------------------------------------------------------===//

LayoutAttr LayoutAttr::get(MLIRContext *ctx, FlatSymbolRefAttr mesh,
                           ArrayRef<SmallVector<std::string>> dims, ArrayRef<std::string> partial,
                           int64_t orderDim, ChunkOrder order) {
  SmallVector<Attribute> dimAttrs;
  for (const auto &d : dims)
    dimAttrs.push_back(axesAttr(ctx, std::vector<std::string>(d.begin(), d.end())));
  return LayoutAttr::get(ctx, mesh, ArrayAttr::get(ctx, dimAttrs), axesAttr(ctx, partial), orderDim,
                         order);
}

SmallVector<StringRef> LayoutAttr::getDimAxes(unsigned dim) const {
  SmallVector<StringRef> out;
  for (Attribute a : cast<ArrayAttr>(getDims()[dim]))
    out.push_back(cast<StringAttr>(a).getValue());
  return out;
}

SmallVector<StringRef> LayoutAttr::getPartialAxes() const {
  SmallVector<StringRef> out;
  for (Attribute a : getPartial())
    out.push_back(cast<StringAttr>(a).getValue());
  return out;
}

ChunkOrder LayoutAttr::getDimOrder(unsigned dim) const {
  return (int64_t)dim == getOrderDim() ? getOrder() : ChunkOrder::contiguous;
}

bool LayoutAttr::isReplicated() const {
  if (!getPartial().empty())
    return false;
  for (Attribute d : getDims())
    if (!cast<ArrayAttr>(d).empty())
      return false;
  return true;
}

static ParseResult parseAxisList(AsmParser &p, SmallVectorImpl<Attribute> &axes) {
  return p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() -> ParseResult {
    std::string name;
    if (p.parseKeywordOrString(&name))
      return failure();
    axes.push_back(StringAttr::get(p.getContext(), name));
    return success();
  });
}

Attribute LayoutAttr::parse(AsmParser &p, Type) {
  MLIRContext *ctx = p.getContext();
  SymbolRefAttr meshRef;
  SmallVector<Attribute> dims, partial;
  int64_t orderDim = -1;
  ChunkOrder order = ChunkOrder::contiguous;
  if (p.parseLess() || p.parseAttribute(meshRef) || p.parseComma())
    return {};
  auto mesh = dyn_cast<FlatSymbolRefAttr>(meshRef);
  if (!mesh) {
    p.emitError(p.getCurrentLocation(), "expected a flat mesh symbol such as @mesh");
    return {};
  }
  if (p.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() -> ParseResult {
        SmallVector<Attribute> axes;
        if (parseAxisList(p, axes))
          return failure();
        dims.push_back(ArrayAttr::get(ctx, axes));
        StringRef kw;
        SMLoc loc = p.getCurrentLocation();
        if (failed(p.parseOptionalKeyword(&kw, {"zigzag", "contiguous"})))
          return success();
        if (orderDim >= 0)
          return p.emitError(loc, "only one dimension may carry a chunk order");
        orderDim = (int64_t)dims.size() - 1;
        order = kw == "zigzag" ? ChunkOrder::zigzag : ChunkOrder::contiguous;
        if (succeeded(p.parseOptionalKeyword(&kw, {"zigzag", "contiguous"})))
          return p.emitError(loc, "a dimension takes one chunk order");
        return success();
      }))
    return {};
  if (succeeded(p.parseOptionalComma())) {
    if (p.parseKeyword("partial") || p.parseEqual() || parseAxisList(p, partial))
      return {};
  }
  if (p.parseGreater())
    return {};
  return p.getChecked<LayoutAttr>(ctx, mesh, ArrayAttr::get(ctx, dims),
                                  ArrayAttr::get(ctx, partial), orderDim, order);
}

static void printAxisList(AsmPrinter &p, ArrayAttr axes) {
  p << '[';
  llvm::interleaveComma(
      axes, p, [&](Attribute a) { p.printKeywordOrString(cast<StringAttr>(a).getValue()); });
  p << ']';
}

void LayoutAttr::print(AsmPrinter &p) const {
  p << '<' << getMesh() << ", [";
  for (auto [i, d] : llvm::enumerate(getDims())) {
    if (i)
      p << ", ";
    printAxisList(p, cast<ArrayAttr>(d));
    if ((int64_t)i == getOrderDim())
      p << ' ' << stringifyChunkOrder(getOrder());
  }
  p << ']';
  if (!getPartial().empty()) {
    p << ", partial = ";
    printAxisList(p, getPartial());
  }
  p << '>';
}

LogicalResult LayoutAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 FlatSymbolRefAttr mesh, ArrayAttr dims, ArrayAttr partial,
                                 int64_t orderDim, ChunkOrder order) {
  shardline::Layout l;
  for (Attribute d : dims) {
    auto list = dyn_cast<ArrayAttr>(d);
    if (!list || !llvm::all_of(list, [](Attribute a) { return isa<StringAttr>(a); }))
      return emitError() << "layout dimensions must be lists of axis names";
    l.dims.push_back(axisNames(list));
  }
  if (!llvm::all_of(partial, [](Attribute a) { return isa<StringAttr>(a); }))
    return emitError() << "partial axes must be axis names";
  l.partial = axisNames(partial);
  l.orderDim = orderDim;
  l.order = order == ChunkOrder::zigzag ? shardline::ChunkOrder::Zigzag
                                        : shardline::ChunkOrder::Contiguous;
  std::string err = shardline::verifyLayout(l, nullptr, nullptr);
  if (!err.empty())
    return emitError() << "invalid layout: " << err;
  return success();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

LayoutAttr mlir::sl::getLayout(Type type) {
  if (auto t = dyn_cast<RankedTensorType>(type))
    return dyn_cast_or_null<LayoutAttr>(t.getEncoding());
  return {};
}

MeshOp mlir::sl::lookupMesh(Operation *from, LayoutAttr layout) {
  return SymbolTable::lookupNearestSymbolFrom<MeshOp>(from, layout.getMesh());
}

FailureOr<MeshOp> mlir::sl::getModuleMesh(ModuleOp module, StringRef pass) {
  MeshOp mesh;
  for (auto m : module.getOps<MeshOp>()) {
    if (mesh)
      return m.emitOpError("a second mesh; ") << pass << " handles one mesh per module";
    mesh = m;
  }
  return mesh;
}

shardline::Layout mlir::sl::layoutOrReplicated(Value v) {
  if (LayoutAttr l = getLayout(v))
    return toLayout(l);
  return shardline::Layout::replicated(cast<RankedTensorType>(v.getType()).getRank());
}

shardline::Layout mlir::sl::toLayout(LayoutAttr attr) {
  shardline::Layout l;
  for (Attribute d : attr.getDims())
    l.dims.push_back(axisNames(cast<ArrayAttr>(d)));
  l.partial = axisNames(attr.getPartial());
  l.orderDim = attr.getOrderDim();
  l.order = attr.getOrder() == ChunkOrder::zigzag ? shardline::ChunkOrder::Zigzag
                                                  : shardline::ChunkOrder::Contiguous;
  return l;
}

LayoutAttr mlir::sl::fromLayout(MLIRContext *ctx, FlatSymbolRefAttr mesh,
                                const shardline::Layout &l) {
  SmallVector<SmallVector<std::string>> dims;
  for (const auto &d : l.dims)
    dims.emplace_back(d.begin(), d.end());
  // Contiguous is the default order: leave it unstated so equal layouts are
  // equal attributes.
  bool zigzag = l.orderDim >= 0 && l.order == shardline::ChunkOrder::Zigzag;
  return LayoutAttr::get(ctx, mesh, dims, l.partial, zigzag ? l.orderDim : -1,
                         zigzag ? ChunkOrder::zigzag : ChunkOrder::contiguous);
}

shardline::Mesh mlir::sl::toMesh(MeshOp mesh) {
  shardline::Mesh m;
  for (auto [name, size] : llvm::zip(mesh.getAxes(), mesh.getSizes()))
    m.axes.emplace_back(cast<StringAttr>(name).str(), size);
  return m;
}

RankedTensorType mlir::sl::withLayout(RankedTensorType type, LayoutAttr layout) {
  return RankedTensorType::get(type.getShape(), type.getElementType(), layout);
}

//===----------------------------------------------------------------------===//
// MeshOp
//===----------------------------------------------------------------------===//

ParseResult MeshOp::parse(OpAsmParser &p, OperationState &state) {
  StringAttr name;
  SmallVector<Attribute> axes;
  SmallVector<int64_t> sizes;
  if (p.parseSymbolName(name, getSymNameAttrName(state.name), state.attributes))
    return failure();
  if (p.parseCommaSeparatedList(AsmParser::Delimiter::Paren, [&]() -> ParseResult {
        std::string axis;
        int64_t size;
        if (p.parseKeywordOrString(&axis) || p.parseEqual() || p.parseInteger(size))
          return failure();
        axes.push_back(p.getBuilder().getStringAttr(axis));
        sizes.push_back(size);
        return success();
      }))
    return failure();
  state.addAttribute(getAxesAttrName(state.name), p.getBuilder().getArrayAttr(axes));
  state.addAttribute(getSizesAttrName(state.name), p.getBuilder().getDenseI64ArrayAttr(sizes));
  return p.parseOptionalAttrDict(state.attributes);
}

void MeshOp::print(OpAsmPrinter &p) {
  p << ' ';
  p.printSymbolName(getSymName());
  p << '(';
  llvm::interleaveComma(llvm::zip(getAxes(), getSizes()), p, [&](auto pair) {
    p.printKeywordOrString(cast<StringAttr>(std::get<0>(pair)).getValue());
    p << " = " << std::get<1>(pair);
  });
  p << ')';
  p.printOptionalAttrDict((*this)->getAttrs(),
                          {getSymNameAttrName(), getAxesAttrName(), getSizesAttrName()});
}

LogicalResult MeshOp::verify() {
  if (getAxes().size() != getSizes().size())
    return emitOpError("has ") << getAxes().size() << " axes but " << getSizes().size() << " sizes";
  llvm::StringSet<llvm::MallocAllocator> seen;
  for (auto [name, size] : llvm::zip(getAxes(), getSizes())) {
    StringRef axis = cast<StringAttr>(name).getValue();
    if (axis.empty())
      return emitOpError("has an axis with an empty name");
    if (!seen.insert(axis).second)
      return emitOpError("declares axis '") << axis << "' twice";
  }
  // Sizes and the rank count, checked before any pass multiplies or divides by them.
  if (std::string err = shardline::verifyMesh(toMesh(*this)); !err.empty())
    return emitOpError(err);
  return success();
}

//===----------------------------------------------------------------------===//
// Discardable attributes
//===----------------------------------------------------------------------===//

namespace {
/// A check of one declared attribute's value; empty when it is fine, else
/// what the attribute must be.
using AttrCheck = std::string (*)(Operation *op, Attribute value);

bool isI64(Attribute a) {
  auto i = dyn_cast<IntegerAttr>(a);
  return i && i.getType().isInteger(64);
}

std::string stringCheck(Operation *, Attribute a) { return isa<StringAttr>(a) ? "" : "a string"; }

/// sl.gather_reason: a relayout's words for the all_gather steps
/// sl-insert-collectives lowers it to, which take them as their sl.reason.
std::string gatherReasonCheck(Operation *op, Attribute a) {
  if (!isa<RelayoutOp>(op))
    return "set on sl.relayout only";
  return isa<StringAttr>(a) ? "" : "a string";
}

std::string runsCheck(Operation *, Attribute a) {
  return isa<DenseI64ArrayAttr>(a) ? "" : "an array<i64>";
}

std::string i64Check(Operation *, Attribute a) { return isI64(a) ? "" : "an i64 integer"; }

std::string unitCheck(Operation *, Attribute a) {
  return isa<UnitAttr>(a) ? "" : "a unit attribute";
}

std::string moduleBoolCheck(Operation *op, Attribute a) {
  if (!isa<ModuleOp>(op))
    return "set on the module only";
  return isa<BoolAttr>(a) ? "" : "a bool";
}

std::string cpCommCheck(Operation *op, Attribute a) {
  auto s = dyn_cast<StringAttr>(a);
  std::optional<CPComm> c = s ? symbolizeCPComm(s.getValue()) : std::nullopt;
  if (isa<ModuleOp>(op))
    return c ? "" : "one of ring, allgather, a2a or auto";
  // Auto is the module's request; sl-choose-cp-comm resolves it per op.
  return c && *c != CPComm::Auto ? "" : "one of ring, allgather or a2a on an op";
}

std::string elidedCheck(Operation *op, Attribute a) {
  auto list = dyn_cast<ArrayAttr>(a);
  if (!isa<ModuleOp>(op) || !list)
    return "an array of dictionaries on the module";
  for (Attribute e : list) {
    auto d = dyn_cast<DictionaryAttr>(e);
    if (!d || !d.getAs<StringAttr>("op") || !d.getAs<StringAttr>("location") ||
        !d.getAs<StringAttr>("how"))
      return "an array of dictionaries with string op, location and how";
  }
  return "";
}

std::string blockCheck(Operation *, Attribute a) {
  return isI64(a) && cast<IntegerAttr>(a).getInt() >= 0 ? "" : "an i64 block index >= 0";
}

// A block family is named by its pattern letter. Which letters exist is the
// model layer's registry, which sits above the dialect: the dialect checks the
// form, the model spec the letter.
std::string familyCheck(Operation *, Attribute a) {
  auto s = dyn_cast<StringAttr>(a);
  if (s && ((s.size() == 1 && s.getValue()[0] >= 'A' && s.getValue()[0] <= 'Z') ||
            llvm::is_contained(kEndFamilies, s.getValue())))
    return "";
  return "a block family's pattern letter (one capital letter), \"embedding\" or \"lm_head\"";
}

std::string rankCheck(Operation *op, Attribute a) {
  return isa<func::FuncOp>(op) && isI64(a) ? "" : "an i64 on a function";
}

std::string keyTokensCheck(Operation *, Attribute a) {
  if (isa<DenseI64ArrayAttr>(a))
    return "";
  auto list = dyn_cast<ArrayAttr>(a);
  if (list && llvm::all_of(list, [](Attribute e) { return isa<DenseI64ArrayAttr>(e); }))
    return "";
  return "an array<i64> or, on ring attention, a list of them";
}

struct DeclaredAttr {
  StringRef name;
  AttrCheck check;
};

const DeclaredAttr kDeclared[] = {
    {kReasonAttr, stringCheck},
    {kCPCommAttr, cpCommCheck},
    {kSequenceParallelAttr, moduleBoolCheck},
    {kElidedAttr, elidedCheck},
    {kBlockAttr, blockCheck},
    {kFamilyAttr, familyCheck},
    {kRankAttr, rankCheck},
    {kRanksAttr, rankCheck},
    {kFromAttr, stringCheck},
    {kTokensAttr, runsCheck},
    {kKeyTokensAttr, keyTokensCheck},
    {kRingAttr, runsCheck},
    {kVocabOffsetAttr, i64Check},
    {kChunksAttr, runsCheck},
    {kGroupAttr, runsCheck},
    {kBackwardAttr, unitCheck},
    {kRecomputeAttr, unitCheck},
    {kGatherReasonAttr, gatherReasonCheck},
};
} // namespace

LogicalResult SLDialect::verifyOperationAttribute(Operation *op, NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  for (const DeclaredAttr &d : kDeclared) {
    if (d.name != name)
      continue;
    std::string want = d.check(op, attr.getValue());
    if (want.empty())
      return success();
    return op->emitError() << "'" << name << "' must be " << want << ", got " << attr.getValue();
  }
  std::string all;
  for (const DeclaredAttr &d : kDeclared)
    all += (all.empty() ? "" : ", ") + d.name.str();
  return op->emitError() << "unknown sl attribute '" << name << "'; the dialect declares " << all
                         << " (and " << kNameAttr << " on function arguments and results)";
}

/// A function argument's or result's name: the model input or output it is.
static LogicalResult verifyValueName(Operation *op, NamedAttribute attr, StringRef what) {
  if (attr.getName() != kNameAttr)
    return op->emitError() << "unknown sl " << what << " attribute '" << attr.getName().getValue()
                           << "'; the dialect declares " << kNameAttr;
  auto name = dyn_cast<StringAttr>(attr.getValue());
  if (!name || name.getValue().empty())
    return op->emitError() << "'" << kNameAttr << "' must be a non-empty string, got "
                           << attr.getValue();
  return success();
}

LogicalResult SLDialect::verifyRegionArgAttribute(Operation *op, unsigned, unsigned,
                                                  NamedAttribute attr) {
  return verifyValueName(op, attr, "argument");
}

LogicalResult SLDialect::verifyRegionResultAttribute(Operation *op, unsigned, unsigned,
                                                     NamedAttribute attr) {
  return verifyValueName(op, attr, "result");
}
