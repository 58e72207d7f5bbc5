//===- Partition.cpp - the program of one rank -----------------------------===//
//
// sl-partition{rank=R}: local shapes, upstream shard collectives where the
// data movement fits them, rank-dependent facts as attributes. See the pass
// description in Passes.td.
//
//===----------------------------------------------------------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/Dialect/SL/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"

#include <map>

namespace mlir::sl {
#define GEN_PASS_DEF_SLPARTITION
#include "shardline/Dialect/SL/Transforms/Passes.h.inc"
} // namespace mlir::sl

using namespace mlir;
using namespace mlir::sl;
using shardline::Layout;
using shardline::Mesh;

namespace {

std::vector<int64_t> shapeOf(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  return {t.getShape().begin(), t.getShape().end()};
}

std::vector<std::string> strings(ArrayAttr attr) {
  std::vector<std::string> out;
  for (Attribute a : attr)
    out.push_back(cast<StringAttr>(a).getValue().str());
  return out;
}

/// Positions as [start, length] runs.
SmallVector<int64_t> runs(const std::vector<int64_t> &positions) {
  SmallVector<int64_t> out;
  for (int64_t p : positions) {
    if (!out.empty() && out[out.size() - 2] + out.back() == p)
      ++out.back();
    else
      out.append({p, 1});
  }
  return out;
}

class Partitioner {
public:
  Partitioner(ModuleOp module, int64_t rank)
      : module(module), ctx(module.getContext()), rank(rank) {}

  LogicalResult run() {
    SmallVector<MeshOp> meshes(module.getOps<MeshOp>());
    if (meshes.size() != 1)
      return module.emitError("sl-partition needs exactly one sl.mesh, found ") << meshes.size();
    meshOp = meshes.front();
    mesh = toMesh(meshOp);
    if (rank < 0 || rank >= mesh.numRanks())
      return module.emitError("sl-partition: rank ")
             << rank << " is outside the mesh's " << mesh.numRanks() << " ranks";
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn->hasAttr(kRankAttr))
        return fn.emitError("sl-partition: '")
               << fn.getSymName() << "' is already the program of rank "
               << fn->getAttrOfType<IntegerAttr>(kRankAttr).getInt();
      WalkResult unmaterialised = fn.walk([](RelayoutOp op) {
        op.emitError("sl-partition needs the collectives in place: run sl-shard-pipeline (or "
                     "sl-insert-collectives) first");
        return WalkResult::interrupt();
      });
      if (unmaterialised.wasInterrupted())
        return failure();
    }
    gridName = (meshOp.getSymName() + "_grid").str();
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(meshOp);
    SmallVector<int64_t> sizes;
    for (const auto &a : mesh.axes)
      sizes.push_back(a.second);
    shard::GridOp::create(b, meshOp.getLoc(), gridName, sizes);
    for (auto fn : module.getOps<func::FuncOp>())
      if (failed(partition(fn)))
        return failure();
    return success();
  }

private:
  Layout layoutOf(Value v) const {
    LayoutAttr l = getLayout(v);
    return l ? toLayout(l) : Layout::replicated(shapeOf(v).size());
  }
  std::vector<int64_t> owned(Value v, unsigned dim, int64_t r) const {
    return shardline::ownedIndices(layoutOf(v), mesh, shapeOf(v), dim, r);
  }
  DenseI64ArrayAttr runsAttr(Value v, unsigned dim, int64_t r) const {
    return DenseI64ArrayAttr::get(ctx, runs(owned(v, dim, r)));
  }
  DenseI64ArrayAttr ranksAttr(const std::vector<int64_t> &ranks) const {
    return DenseI64ArrayAttr::get(ctx, ArrayRef<int64_t>(ranks));
  }
  SmallVector<int16_t> gridAxes(const std::vector<std::string> &axes) const {
    SmallVector<int16_t> out;
    for (const auto &a : axes)
      out.push_back((int16_t)mesh.axisIndex(a));
    return out;
  }

  /// Whether, on every rank, `to`'s indices along `dim` are the
  /// concatenation, in group order, of the group members' indices in `from`.
  bool concatenates(Value from, Value to, unsigned dim, const std::vector<std::string> &axes) {
    for (int64_t r = 0; r < mesh.numRanks(); ++r) {
      std::vector<int64_t> joined;
      for (int64_t m : mesh.group(r, axes)) {
        std::vector<int64_t> part = owned(from, dim, m);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      if (joined != owned(to, dim, r))
        return false;
    }
    return true;
  }
  /// Whether, on every rank, `to`'s indices along `dim` are the k-th of
  /// |group| equal slices of `from`'s, k the rank's place in its group.
  bool slices(Value from, Value to, unsigned dim, const std::vector<std::string> &axes) {
    for (int64_t r = 0; r < mesh.numRanks(); ++r) {
      std::vector<int64_t> group = mesh.group(r, axes);
      int64_t k = std::find(group.begin(), group.end(), r) - group.begin();
      std::vector<int64_t> whole = owned(from, dim, r);
      int64_t n = (int64_t)whole.size() / (int64_t)group.size();
      if (n * (int64_t)group.size() != (int64_t)whole.size())
        return false;
      if (std::vector<int64_t>(whole.begin() + k * n, whole.begin() + (k + 1) * n) !=
          owned(to, dim, r))
        return false;
    }
    return true;
  }
  /// Every dimension but `skip` keeps its indices.
  bool othersKept(Value from, Value to, std::initializer_list<unsigned> skip) {
    for (unsigned d = 0; d < shapeOf(from).size(); ++d)
      if (std::find(skip.begin(), skip.end(), d) == skip.end())
        for (int64_t r = 0; r < mesh.numRanks(); ++r)
          if (owned(from, d, r) != owned(to, d, r))
            return false;
    return true;
  }

  /// Whether the movement from `x` to `y` along `dim` over `axes` is a
  /// concatenation (or, with `gathers` false, an equal split) in grid order,
  /// every other dimension keeping its indices.
  bool alongOneDim(Value x, Value y, unsigned dim, const std::vector<std::string> &axes,
                   bool gathers) {
    return (gathers ? concatenates(x, y, dim, axes) : slices(x, y, dim, axes)) &&
           othersKept(x, y, {dim});
  }

  /// The upstream collective for an sl one, built before retyping (layouts
  /// are still on the types), or null if the movement does not fit one.
  Operation *toShard(Operation *op, OpBuilder &b) {
    b.setInsertionPoint(op);
    Location loc = op->getLoc();
    if (auto g = dyn_cast<AllGatherOp>(op)) {
      std::vector<std::string> axes = strings(g.getAxes());
      if (!alongOneDim(g.getX(), g.getResult(), g.getDim(), axes, /*gathers=*/true))
        return nullptr;
      return shard::AllGatherOp::create(b, loc, localType(g.getResult()), gridName, gridAxes(axes),
                                        g.getX(), APInt(64, g.getDim()));
    }
    if (auto rs = dyn_cast<ReduceScatterOp>(op)) {
      std::vector<std::string> axes = strings(rs.getAxes());
      if (!alongOneDim(rs.getX(), rs.getResult(), rs.getDim(), axes, /*gathers=*/false))
        return nullptr;
      return shard::ReduceScatterOp::create(b, loc, localType(rs.getResult()), gridName,
                                            gridAxes(axes), rs.getX(), shard::ReductionKind::Sum,
                                            APInt(64, rs.getDim()));
    }
    if (auto sl = dyn_cast<SliceOp>(op)) {
      std::vector<std::string> axes = strings(sl.getAxes());
      if (!alongOneDim(sl.getX(), sl.getResult(), sl.getDim(), axes, /*gathers=*/false))
        return nullptr;
      return shard::AllSliceOp::create(b, loc, localType(sl.getResult()), gridName, gridAxes(axes),
                                       sl.getX(), APInt(64, sl.getDim()));
    }
    if (auto ar = dyn_cast<AllReduceOp>(op)) {
      if (!othersKept(ar.getX(), ar.getResult(), {}))
        return nullptr;
      return shard::AllReduceOp::create(b, loc, localType(ar.getResult()), gridName,
                                        gridAxes(strings(ar.getAxes())), ar.getX(),
                                        shard::ReductionKind::Sum);
    }
    if (auto a2a = dyn_cast<AllToAllOp>(op)) {
      unsigned split = a2a.getSplitDim(), concat = a2a.getConcatDim();
      std::vector<std::string> axes = strings(a2a.getAxes());
      if (!slices(a2a.getX(), a2a.getResult(), split, axes) ||
          !concatenates(a2a.getX(), a2a.getResult(), concat, axes) ||
          !othersKept(a2a.getX(), a2a.getResult(), {split, concat}))
        return nullptr;
      return shard::AllToAllOp::create(b, loc, localType(a2a.getResult()), gridName, gridAxes(axes),
                                       a2a.getX(), APInt(64, split), APInt(64, concat));
    }
    return nullptr;
  }

  RankedTensorType localType(Value v) const {
    auto t = cast<RankedTensorType>(v.getType());
    if (!getLayout(v))
      return t;
    return RankedTensorType::get(shardline::localShape(layoutOf(v), mesh, shapeOf(v)),
                                 t.getElementType());
  }

  /// The facts an op needs that depend on the rank, as attributes.
  void resolve(Operation *op) {
    auto set = [&](StringRef name, Attribute a) { op->setAttr(name, a); };
    if (auto e = dyn_cast<EmbeddingOp>(op)) {
      set("sl.vocab_offset",
          IntegerAttr::get(IntegerType::get(ctx, 64), owned(e.getTable(), 0, rank).front()));
    } else if (auto ce = dyn_cast<CrossEntropyOp>(op)) {
      set("sl.vocab_offset",
          IntegerAttr::get(IntegerType::get(ctx, 64), owned(ce.getLogits(), 2, rank).front()));
      if (!ce.getVocabAxes().empty())
        set("sl.group", ranksAttr(mesh.group(rank, strings(ce.getVocabAxes()))));
    } else if (auto rope = dyn_cast<RopeOp>(op)) {
      set("sl.tokens", runsAttr(rope.getX(), 1, rank));
    } else if (auto att = dyn_cast<AttentionOp>(op)) {
      set("sl.tokens", runsAttr(att.getQ(), 1, rank));
      set("sl.key_tokens", runsAttr(att.getK(), 1, rank));
    } else if (auto ring = dyn_cast<RingAttentionOp>(op)) {
      set("sl.tokens", runsAttr(ring.getQ(), 1, rank));
      std::vector<int64_t> members = mesh.group(rank, strings(ring.getAxes()));
      std::rotate(members.begin(), std::find(members.begin(), members.end(), rank), members.end());
      set("sl.ring", ranksAttr(members));
      SmallVector<Attribute> keys;
      for (int64_t m : members)
        keys.push_back(runsAttr(ring.getK(), 1, m));
      set("sl.key_tokens", ArrayAttr::get(ctx, keys));
    } else if (isa<CausalConv1dOp, SSDScanOp, SSDCorrectOp, RGLRUScanOp, RGLRUCorrectOp>(op)) {
      set("sl.tokens", runsAttr(op->getOperand(0), 1, rank));
    } else if (auto halo = dyn_cast<HaloOp>(op)) {
      set("sl.tokens", runsAttr(halo.getX(), 1, rank));
      set("sl.group", ranksAttr(mesh.group(rank, strings(halo.getAxes()))));
    } else if (auto ex = dyn_cast<ScanStateExchangeOp>(op)) {
      set("sl.chunks", runsAttr(ex.getResult(), 0, rank));
      set("sl.group", ranksAttr(mesh.group(rank, strings(ex.getAxes()))));
    } else if (auto ax = op->getAttrOfType<ArrayAttr>("axes");
               ax && isa<sl::SLDialect>(op->getDialect())) {
      set("sl.group", ranksAttr(mesh.group(rank, strings(ax))));
    }
  }

  LogicalResult partition(func::FuncOp fn) {
    OpBuilder b(fn.getContext());
    // Collectives first, while the layouts are on the types.
    SmallVector<Operation *> collectives;
    fn.walk([&](Operation *op) {
      if (isa<AllGatherOp, ReduceScatterOp, AllReduceOp, AllToAllOp, SliceOp>(op))
        collectives.push_back(op);
    });
    for (Operation *op : collectives)
      if (Operation *shardOp = toShard(op, b)) {
        shardOp->setAttr("sl.from", op->getName().getIdentifier());
        if (auto reason = op->getAttr("sl.reason"))
          shardOp->setAttr("sl.reason", reason);
        pending.emplace_back(op, shardOp);
      }
    fn.walk([&](Operation *op) {
      if (isa<sl::SLDialect>(op->getDialect()))
        resolve(op);
    });
    // Then every value gets its local type.
    for (BlockArgument arg : fn.getArguments())
      arg.setType(localType(arg));
    fn.walk([&](Operation *op) {
      for (OpResult r : op->getResults())
        if (isa<RankedTensorType>(r.getType()))
          r.setType(localType(r));
    });
    for (auto [slOp, shardOp] : pending) {
      slOp->getResult(0).replaceAllUsesWith(shardOp->getResult(0));
      slOp->erase();
    }
    pending.clear();
    SmallVector<Type> results;
    fn.walk([&](func::ReturnOp ret) {
      for (Value v : ret.getOperands())
        results.push_back(v.getType());
    });
    fn.setType(FunctionType::get(fn.getContext(), fn.getBody().getArgumentTypes(), results));
    fn->setAttr(kRankAttr, b.getI64IntegerAttr(rank));
    fn->setAttr("sl.ranks", b.getI64IntegerAttr(mesh.numRanks()));
    return success();
  }

  ModuleOp module;
  MLIRContext *ctx;
  int64_t rank;
  MeshOp meshOp;
  Mesh mesh;
  std::string gridName;
  std::vector<std::pair<Operation *, Operation *>> pending;
};

struct SLPartition : mlir::sl::impl::SLPartitionBase<SLPartition> {
  using SLPartitionBase::SLPartitionBase;
  void runOnOperation() override {
    if (failed(Partitioner(getOperation(), rank).run()))
      signalPassFailure();
  }
};

} // namespace
