//===- MemoryPlan.cpp - one arena per rank for the activations -------------===//

#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Dialect/SL/IR/SL.h"

#include <map>

using namespace mlir;

namespace shardline {

namespace {
/// Free gaps below the top of the arena, by offset; neighbours coalesce.
class Arena {
public:
  int64_t allocate(int64_t size) {
    for (auto it = free.begin(); it != free.end(); ++it) {
      if (it->second < size)
        continue;
      int64_t offset = it->first, left = it->second - size;
      free.erase(it);
      if (left > 0)
        free[saturatingAdd(offset, size)] = left;
      return offset;
    }
    // Grow, reusing a free gap that ends at the top.
    int64_t offset = top;
    if (!free.empty()) {
      auto last = std::prev(free.end());
      if (saturatingAdd(last->first, last->second) == top) {
        offset = last->first;
        free.erase(last);
      }
    }
    top = saturatingAdd(offset, size);
    highWater = std::max(highWater, top);
    return offset;
  }

  void release(int64_t offset, int64_t size) {
    auto next = free.lower_bound(offset);
    if (next != free.end() && saturatingAdd(offset, size) == next->first) {
      size = saturatingAdd(size, next->second);
      next = free.erase(next);
    }
    if (next != free.begin()) {
      auto prev = std::prev(next);
      if (saturatingAdd(prev->first, prev->second) == offset) {
        prev->second = saturatingAdd(prev->second, size);
        return;
      }
    }
    free[offset] = size;
  }

  int64_t highWater = 0;

private:
  std::map<int64_t, int64_t> free;
  int64_t top = 0;
};

} // namespace

ArenaPlan planArena(func::FuncOp fn, const Mesh &mesh) {
  ArenaPlan plan;
  Block &body = fn.getBody().front();
  llvm::DenseMap<Value, int64_t> lastUse;
  std::vector<Operation *> ops;
  for (Operation &op : body) {
    for (Value v : op.getOperands())
      lastUse[v] = (int64_t)ops.size();
    ops.push_back(&op);
  }
  Arena arena;
  std::vector<std::vector<Value>> dying(ops.size() + 1);
  int64_t live = 0;
  auto place = [&](Value v, int64_t defined) {
    if (!isa<RankedTensorType>(v.getType()))
      return;
    int64_t bytes = mlir::sl::localBytes(v, mesh);
    plan.offsets[v] = arena.allocate(arenaSlotBytes(bytes));
    live = saturatingAdd(live, bytes);
    auto it = lastUse.find(v);
    dying[it == lastUse.end() ? defined : it->second].push_back(v);
  };
  for (BlockArgument arg : body.getArguments())
    place(arg, 0);
  for (int64_t i = 0; i < (int64_t)ops.size(); ++i) {
    if (!isa<sl::WeightOp>(ops[i]))
      for (Value r : ops[i]->getResults())
        place(r, i);
    plan.liveAt.push_back(live);
    for (Value v : dying[i]) {
      int64_t bytes = mlir::sl::localBytes(v, mesh);
      arena.release(plan.offsets[v], arenaSlotBytes(bytes));
      live -= bytes;
    }
  }
  plan.highWater = arena.highWater;
  return plan;
}

} // namespace shardline
