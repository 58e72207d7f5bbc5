//===- EmitPlan.cpp - sl program -> plan file ------------------------------===//

#include "shardline/Plan/EmitPlan.h"
#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Analysis/Report.h"
#include "shardline/Dialect/SL/IR/SL.h"

#include "core/plan.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

using namespace mlir;
using namespace mlir::sl;
namespace fb = flatbuffers;
namespace plan = shardline::plan;

namespace shardline {

namespace {

FailureOr<plan::DType> dtypeOf(Operation *where, Type type) {
  Type e = getElementTypeOrSelf(type);
  if (e.isF32())
    return plan::DType::F32;
  if (e.isBF16())
    return plan::DType::BF16;
  if (e.isF16())
    return plan::DType::F16;
  if (e.isInteger(32))
    return plan::DType::I32;
  where->emitError("a plan cannot hold element type ") << e;
  return failure();
}

class Writer {
public:
  FailureOr<std::vector<uint8_t>> run(ModuleOp module, const Report &report) {
    func::FuncOp fn;
    for (auto f : module.getOps<func::FuncOp>()) {
      if (f.isExternal())
        continue;
      if (fn) {
        f.emitError("a plan holds one function; this module has more");
        return failure();
      }
      fn = f;
    }
    if (!fn) {
      module.emitError("a plan needs a function to run");
      return failure();
    }
    std::vector<fb::Offset<plan::Axis>> mesh;
    Mesh meshModel;
    for (auto m : module.getOps<MeshOp>()) {
      meshModel = toMesh(m);
      for (auto [name, size] : llvm::zip(m.getAxes(), m.getSizes()))
        mesh.push_back(plan::CreateAxis(b, b.CreateString(cast<StringAttr>(name).str()), size));
    }
    arena = planArena(fn, meshModel);

    Block &body = fn.getBody().front();
    std::vector<int32_t> inputs, outputs;
    for (BlockArgument arg : body.getArguments()) {
      auto name = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), mlir::sl::kNameAttr);
      FailureOr<int32_t> t =
          tensor(arg, name ? name.str() : "arg" + std::to_string(arg.getArgNumber()),
                 plan::Role::Input, fn);
      if (failed(t))
        return failure();
      inputs.push_back(*t);
    }
    // An output is named by its result's sl.name, or "output<i>"; the first
    // name a value gets wins when it is returned twice.
    llvm::DenseMap<Value, std::string> outputNames;
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      auto name = fn.getResultAttrOfType<StringAttr>(i, mlir::sl::kNameAttr);
      outputNames.try_emplace(v, name ? name.str() : "output" + std::to_string(i));
    }
    std::vector<fb::Offset<plan::Op>> ops;
    BlockPlacement placement(fn);
    for (Operation &op : body) {
      if (auto w = dyn_cast<WeightOp>(op)) {
        if (failed(tensor(w.getResult(), w.getName().str(), plan::Role::Weight, &op, w)))
          return failure();
        continue;
      }
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        for (Value v : ret.getOperands())
          outputs.push_back(index.lookup(v));
        continue;
      }
      std::vector<int32_t> operands, results;
      for (Value v : op.getOperands()) {
        auto it = index.find(v);
        if (it == index.end()) {
          op.emitError("operand not defined in the function body");
          return failure();
        }
        operands.push_back(it->second);
      }
      for (Value r : op.getResults()) {
        auto named = outputNames.find(r);
        FailureOr<int32_t> t =
            tensor(r, named == outputNames.end() ? "" : named->second, plan::Role::Activation, &op);
        if (failed(t))
          return failure();
        results.push_back(*t);
      }
      if (auto embedding = dyn_cast<EmbeddingOp>(op))
        vocab = embedding.getTable().getType().getShape()[0];
      std::vector<fb::Offset<plan::Attr>> attrs;
      for (NamedAttribute a : withDefaults(op))
        if (auto converted = attr(a))
          attrs.push_back(*converted);
      auto spmd = dyn_cast<SPMDOpInterface>(op);
      auto [operandNames, resultNames] =
          spmd ? spmd.getValueNames() : mlir::sl::defaultValueNames(&op);
      auto [block, family] = placement.of(&op);
      ops.push_back(plan::CreateOp(
          b, b.CreateString(op.getName().stripDialect().str()), b.CreateVector(operands),
          b.CreateVector(results), b.CreateVectorOfStrings(operandNames),
          b.CreateVectorOfStrings(resultNames), b.CreateVector(attrs),
          b.CreateString(describeLocation(op.getLoc())), block,
          family.empty() ? fb::Offset<fb::String>() : b.CreateString(family)));
    }
    if (!inputs.empty() && vocab < 1) {
      fn.emitError("a plan with inputs needs the vocabulary: the function has no sl.embedding");
      return failure();
    }
    auto root = plan::CreatePlan(b, b.CreateString(fn.getSymName().str()), b.CreateVector(mesh),
                                 b.CreateVector(tensors), b.CreateVector(ops),
                                 b.CreateVector(inputs), b.CreateVector(outputs), arena.highWater,
                                 report.commBytesPerRank, plan::CreateModelFacts(b, vocab));
    plan::FinishPlanBuffer(b, root);
    return rt::wrapPlan(b.GetBufferPointer(), b.GetSize());
  }

private:
  FailureOr<int32_t> tensor(Value v, const std::string &name, plan::Role role, Operation *where,
                            WeightOp weight = {}) {
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type || !type.hasStaticShape()) {
      where->emitError("a plan needs static tensor types, got ") << v.getType();
      return failure();
    }
    FailureOr<plan::DType> dtype = dtypeOf(where, type);
    if (failed(dtype))
      return failure();
    fb::Offset<plan::Layout> layout;
    if (LayoutAttr l = getLayout(type)) {
      std::vector<fb::Offset<plan::AxisList>> dims;
      for (unsigned d = 0; d < l.getRank(); ++d) {
        std::vector<std::string> axes;
        for (StringRef a : l.getDimAxes(d))
          axes.push_back(a.str());
        dims.push_back(plan::CreateAxisList(b, b.CreateVectorOfStrings(axes)));
      }
      std::vector<std::string> partial;
      for (StringRef a : l.getPartialAxes())
        partial.push_back(a.str());
      int64_t orderDim = l.getOrder() == mlir::sl::ChunkOrder::zigzag ? l.getOrderDim() : -1;
      layout =
          plan::CreateLayout(b, b.CreateVector(dims), b.CreateVectorOfStrings(partial), orderDim);
    }
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    plan::Init init = plan::Init::Normal;
    double scale = 0, offset = 0;
    int32_t copyOf = -1;
    if (weight) {
      StringRef kind = weight.getInit();
      init = kind == "uniform"    ? plan::Init::Uniform
             : kind == "constant" ? plan::Init::Constant
             : kind == "copy"     ? plan::Init::Copy
                                  : plan::Init::Normal;
      scale = weight.getScale().convertToDouble();
      offset = weight.getOffset().convertToDouble();
      if (init == plan::Init::Copy) {
        auto source = weightIndex.find(weight.getSource());
        if (source == weightIndex.end()) {
          weight.emitOpError("copies '") << weight.getSource()
                                         << "', which is no weight defined before it";
          return failure();
        }
        WeightOp from = weightOps[source->second];
        if (from.getInit() == "copy" ||
            from.getResult().getType().getShape() != weight.getResult().getType().getShape() ||
            getLayout(from.getResult()) != getLayout(weight.getResult())) {
          weight.emitOpError("copies '")
              << weight.getSource()
              << "', which is not a generated or loaded weight of the same shape and layout";
          return failure();
        }
        copyOf = source->second;
      }
    }
    auto placed = arena.offsets.find(v);
    tensors.push_back(plan::CreateTensor(b, b.CreateString(name), *dtype, b.CreateVector(shape),
                                         layout, role, init, scale, offset,
                                         placed == arena.offsets.end() ? -1 : placed->second,
                                         copyOf));
    int32_t id = (int32_t)tensors.size() - 1;
    index[v] = id;
    if (weight) {
      weightIndex[weight.getName()] = id;
      weightOps[id] = weight;
    }
    return id;
  }

  /// The op's own attributes with every absent default-valued one at its
  /// default: a fresh op of the same name has its properties populated with
  /// the ODS defaults, and the op's own attributes override them. Discardable
  /// attributes (sl.reason, sl.block, ...) are no part of
  /// what the op computes and stay out.
  static NamedAttrList withDefaults(Operation &op) {
    OperationState state(op.getLoc(), op.getName());
    Operation *fresh = Operation::create(state);
    NamedAttrList attrs(fresh->getAttrDictionary());
    fresh->destroy();
    for (NamedAttribute a : op.getAttrDictionary())
      if (!op.getDiscardableAttr(a.getName()))
        attrs.set(a.getName(), a.getValue());
    return attrs;
  }

  std::optional<fb::Offset<plan::Attr>> attr(NamedAttribute a) {
    std::vector<int64_t> ints;
    std::vector<double> floats;
    std::vector<std::string> strings;
    Attribute v = a.getValue();
    auto addOne = [&](Attribute e) {
      if (auto b = dyn_cast<BoolAttr>(e))
        ints.push_back(b.getValue());
      else if (auto i = dyn_cast<IntegerAttr>(e))
        ints.push_back(i.getInt());
      else if (auto f = dyn_cast<FloatAttr>(e))
        floats.push_back(f.getValueAsDouble());
      else if (auto s = dyn_cast<StringAttr>(e))
        strings.push_back(s.str());
      else
        return false;
      return true;
    };
    if (auto arr = dyn_cast<ArrayAttr>(v)) {
      for (Attribute e : arr)
        if (!addOne(e))
          return std::nullopt;
    } else if (auto dense = dyn_cast<DenseI64ArrayAttr>(v)) {
      ints.assign(dense.asArrayRef().begin(), dense.asArrayRef().end());
    } else if (!addOne(v)) {
      return std::nullopt;
    }
    return plan::CreateAttr(b, b.CreateString(a.getName().str()), b.CreateVector(ints),
                            b.CreateVector(floats), b.CreateVectorOfStrings(strings));
  }

  fb::FlatBufferBuilder b;
  ArenaPlan arena;
  int64_t vocab = 0;
  std::vector<fb::Offset<plan::Tensor>> tensors;
  llvm::DenseMap<Value, int32_t> index;
  /// The weights so far by name and by tensor index (a copy names its source).
  llvm::StringMap<int32_t> weightIndex;
  llvm::DenseMap<int32_t, WeightOp> weightOps;
};

} // namespace

FailureOr<std::vector<uint8_t>> emitPlan(ModuleOp module, const Report &report) {
  return Writer().run(module, report);
}

FailureOr<std::vector<uint8_t>> emitPlan(ModuleOp module) {
  return emitPlan(module, analyze(module));
}

} // namespace shardline
