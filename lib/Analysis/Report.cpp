//===- Report.cpp - collectives, bytes and residency per rank -------------===//

#include "shardline/Analysis/Report.h"
#include "core/layout.h"
#include "shardline/Analysis/MemoryPlan.h"
#include "shardline/Dialect/SL/IR/SL.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <functional>
#include <optional>

using namespace mlir;
using namespace mlir::sl;

namespace shardline {

namespace {

/// The mesh of the op's first operand whose layout names one (an empty mesh
/// when none does: nothing is distributed).
Mesh meshFor(Operation *op) {
  for (Value v : op->getOperands())
    if (LayoutAttr l = getLayout(v))
      if (MeshOp m = lookupMesh(op, l))
        return toMesh(m);
  return Mesh{};
}

} // namespace

int64_t collectiveBytesPerRank(Operation *op) {
  auto spmd = dyn_cast<SPMDOpInterface>(op);
  return spmd ? spmd.sentBytesPerRank(meshFor(op)) : -1;
}

std::string describeLocation(Location loc) {
  std::string s;
  llvm::raw_string_ostream os(s);
  std::function<void(Location)> print = [&](Location l) {
    if (auto n = dyn_cast<NameLoc>(l)) {
      os << n.getName().getValue();
      if (!isa<UnknownLoc>(n.getChildLoc())) {
        os << " at ";
        print(n.getChildLoc());
      }
    } else if (auto f = dyn_cast<FileLineColLoc>(l)) {
      os << f.getFilename().getValue() << ":" << f.getLine() << ":" << f.getColumn();
    } else if (auto fused = dyn_cast<FusedLoc>(l); fused && !fused.getLocations().empty()) {
      print(fused.getLocations().front());
    } else if (auto c = dyn_cast<CallSiteLoc>(l)) {
      print(c.getCallee());
    } else {
      l.print(os);
    }
  };
  print(loc);
  return s;
}

BlockPlacement::BlockPlacement(func::FuncOp fn) {
  for (Operation &op : fn.getBody().front())
    if (auto stamp = stampOf(&op))
      byLocation.try_emplace(op.getLoc(), *stamp);
}

std::pair<int64_t, std::string> BlockPlacement::of(Operation *op) const {
  if (auto stamp = stampOf(op))
    return *stamp;
  auto it = byLocation.find(op->getLoc());
  return it == byLocation.end() ? std::pair<int64_t, std::string>{-1, ""} : it->second;
}

std::optional<std::pair<int64_t, std::string>> BlockPlacement::stampOf(Operation *op) {
  auto block = op->getAttrOfType<IntegerAttr>(mlir::sl::kBlockAttr);
  auto family = op->getAttrOfType<StringAttr>(mlir::sl::kFamilyAttr);
  if (!block && !family)
    return std::nullopt;
  return std::pair<int64_t, std::string>{block ? block.getInt() : -1, family ? family.str() : ""};
}

Report analyze(ModuleOp module) {
  Report report;
  Mesh mesh;
  for (auto m : module.getOps<MeshOp>()) {
    mesh = toMesh(m);
    break;
  }
  report.mesh = mesh.axes;
  report.ranks = mesh.numRanks();
  auto summaryOf = [&](int64_t block, const std::string &family) -> BlockSummary & {
    for (auto &b : report.blocks)
      if (b.block == block && b.family == family)
        return b;
    report.blocks.push_back(BlockSummary{block, family, 0, 0, 0});
    return report.blocks.back();
  };

  for (auto fn : module.getOps<func::FuncOp>()) {
    if (fn.isExternal())
      continue;
    if (report.model.empty())
      report.model = fn.getSymName().str();
    ArenaPlan arena = planArena(fn, mesh);
    report.peakActivationBytesPerRank =
        std::max(report.peakActivationBytesPerRank, arena.highWater);
    report.liveBytesLowerBound = std::max(report.liveBytesLowerBound, arena.liveBound());
    BlockPlacement placement(fn);
    // A training step's backward starts at its first sl.backward op; forward
    // results it reads are saved for it.
    DenseMap<Operation *, int64_t> position;
    int64_t backwardStart = -1;
    for (Operation &op : fn.getBody().front()) {
      position[&op] = (int64_t)position.size();
      if (backwardStart < 0 && op.hasAttr(mlir::sl::kBackwardAttr))
        backwardStart = position[&op];
    }
    report.training = report.training || backwardStart >= 0;
    int64_t index = 0;
    for (Operation &opRef : fn.getBody().front()) {
      Operation *op = &opRef;
      int64_t live = arena.liveAt[index++];
      auto [block, family] = placement.of(op);
      bool backward = backwardStart >= 0 && index - 1 >= backwardStart;
      if (auto w = dyn_cast<WeightOp>(op)) {
        int64_t bytes = localBytes(w.getResult(), mesh);
        report.weightBytesPerRank = saturatingAdd(report.weightBytesPerRank, bytes);
        if (w->hasAttr(mlir::sl::kBackwardAttr))
          report.optimizerStateBytesPerRank =
              saturatingAdd(report.optimizerStateBytesPerRank, bytes);
        if (w.getInit() == "copy")
          report.mainCopyBytesPerRank = saturatingAdd(report.mainCopyBytesPerRank, bytes);
      } else if (backwardStart >= 0 && !backward) {
        for (Value r : op->getResults())
          if (llvm::any_of(r.getUsers(), [&](Operation *user) {
                return !isa<func::ReturnOp>(user) && position.lookup(user) >= backwardStart;
              })) {
            int64_t bytes = localBytes(r, mesh);
            report.savedForBackwardBytesPerRank =
                saturatingAdd(report.savedForBackwardBytesPerRank, bytes);
            int64_t &saved = summaryOf(block, family).savedForBackwardBytes;
            saved = saturatingAdd(saved, bytes);
          }
      }
      if (!isa<WeightOp, func::ReturnOp>(op)) {
        BlockSummary &summary = summaryOf(block, family);
        summary.peakLiveBytes = std::max(summary.peakLiveBytes, live);
      }

      int64_t bytes = collectiveBytesPerRank(op);
      if (bytes < 0)
        continue;
      CollectiveEntry entry;
      entry.block = block;
      entry.family = family;
      entry.location = describeLocation(op->getLoc());
      entry.backward = backward;
      if (backward)
        report.backwardCommBytesPerRank = saturatingAdd(report.backwardCommBytesPerRank, bytes);
      if (op->hasAttr(mlir::sl::kRecomputeAttr))
        report.regatherBytesPerRank = saturatingAdd(report.regatherBytesPerRank, bytes);
      if (auto reason = op->getAttrOfType<StringAttr>(mlir::sl::kReasonAttr))
        entry.why = reason.str();
      // Vocab-parallel cross-entropy exchanges small per-token vectors over its
      // vocab axes: one all-reduce entry per vector.
      auto perToken = [&](ArrayAttr axes, ArrayRef<const char *> vectors, StringRef what) {
        for (const char *v : vectors) {
          CollectiveEntry e = entry;
          e.op = "all_reduce";
          e.axes = axisNames(axes);
          e.bytesPerRank = bytes / (int64_t)vectors.size();
          e.why = (what + ": per-token " + v).str();
          report.collectives.push_back(e);
        }
      };
      if (auto ce = dyn_cast<CrossEntropyOp>(op)) {
        perToken(ce.getVocabAxes(), {"max", "sum of exponentials", "target logit"},
                 "vocab-parallel cross-entropy");
      } else if (auto grad = dyn_cast<CrossEntropyGradOp>(op)) {
        perToken(grad.getVocabAxes(), {"max", "sum of exponentials"},
                 "vocab-parallel cross-entropy backward");
      } else {
        entry.op = op->getName().stripDialect().str();
        entry.bytesPerRank = bytes;
        if (auto axes = op->getAttrOfType<ArrayAttr>("axes"))
          entry.axes = axisNames(axes);
        if (isa<MoEDroplessOp, MoEDroplessGradOp>(op)) {
          // How many rows cross depends on the routing: the entry states the
          // balanced figure and the rows a rank must be able to receive. Its
          // axes are the expert group's, then (expert tensor parallelism)
          // the expert-tensor group's it also gathers over.
          entry.axes = axisNames(op->getAttrOfType<ArrayAttr>("expert_axes"));
          if (auto tensor = op->getAttrOfType<ArrayAttr>("tensor_axes"))
            for (const std::string &a : axisNames(tensor))
              entry.axes.push_back(a);
          entry.balancedRouting = true;
          std::vector<int64_t> routing = localShapeOf(op->getOperand(2), mesh);
          int64_t bound = (int64_t)mesh.product(entry.axes) * routing[0] * routing[1] * routing[2];
          entry.why += (entry.why.empty() ? "" : "; ") +
                       std::string("bytes at balanced routing (a run measures its own); receive "
                                   "bound ") +
                       std::to_string(bound) + " rows (every routed row of the group)";
        }
        report.collectives.push_back(entry);
      }
      int64_t &commBytes = summaryOf(block, family).commBytes;
      commBytes = saturatingAdd(commBytes, bytes);
    }
  }
  for (const auto &c : report.collectives) {
    report.commBytesPerRank = saturatingAdd(report.commBytesPerRank, c.bytesPerRank);
    ++report.collectiveCounts[c.op];
  }
  if (auto elided = module->getAttrOfType<ArrayAttr>(mlir::sl::kElidedAttr))
    for (Attribute a : elided)
      if (auto d = dyn_cast<DictionaryAttr>(a)) {
        auto get = [&](StringRef key) {
          auto s = d.getAs<StringAttr>(key);
          return s ? s.str() : std::string();
        };
        report.elided.push_back({get("op"), get("location"), get("how")});
      }
  return report;
}

std::string toJson(const Report &r) {
  llvm::json::Object mesh;
  for (const auto &[axis, size] : r.mesh)
    mesh[axis] = size;
  llvm::json::Array collectives;
  for (const auto &c : r.collectives) {
    llvm::json::Array axes;
    for (const auto &a : c.axes)
      axes.push_back(a);
    collectives.push_back(llvm::json::Object{{"op", c.op},
                                             {"axes", std::move(axes)},
                                             {"bytes_per_rank", c.bytesPerRank},
                                             {"block", c.block},
                                             {"family", c.family},
                                             {"location", c.location},
                                             {"why", c.why},
                                             {"backward", c.backward},
                                             {"balanced_routing", c.balancedRouting}});
  }
  llvm::json::Array elided;
  for (const auto &e : r.elided)
    elided.push_back(llvm::json::Object{{"op", e.op}, {"location", e.location}, {"how", e.how}});
  llvm::json::Object counts;
  for (const auto &[op, n] : r.collectiveCounts)
    counts[op] = n;
  llvm::json::Object root{
      {"model", r.model},
      {"mesh", std::move(mesh)},
      {"ranks", r.ranks},
      {"collectives", std::move(collectives)},
      {"elided", std::move(elided)},
      {"totals",
       llvm::json::Object{{"comm_bytes_per_rank", r.commBytesPerRank},
                          {"collective_counts", std::move(counts)},
                          {"weight_bytes_per_rank", r.weightBytesPerRank},
                          {"peak_activation_bytes_per_rank", r.peakActivationBytesPerRank}}}};
  if (r.training) {
    llvm::json::Array saved;
    for (const auto &b : r.blocks)
      if (b.savedForBackwardBytes)
        saved.push_back(llvm::json::Object{
            {"block", b.block}, {"family", b.family}, {"bytes_per_rank", b.savedForBackwardBytes}});
    root["training"] = llvm::json::Object{
        {"backward_comm_bytes_per_rank", r.backwardCommBytesPerRank},
        {"forward_comm_bytes_per_rank", r.commBytesPerRank - r.backwardCommBytesPerRank},
        {"regather_bytes_per_rank", r.regatherBytesPerRank},
        {"saved_for_backward_bytes_per_rank", r.savedForBackwardBytesPerRank},
        {"saved_for_backward_by_block", std::move(saved)},
        {"optimizer_state_bytes_per_rank", r.optimizerStateBytesPerRank},
        {"main_copy_bytes_per_rank", r.mainCopyBytesPerRank}};
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(root)));
  return s;
}

static std::string blockName(int64_t block, const std::string &family) {
  if (block < 0)
    return family.empty() ? "-" : family;
  return std::to_string(block) + (family.empty() ? "" : " " + family);
}

void printTable(const Report &r, llvm::raw_ostream &os) {
  os << "model " << r.model << " on " << r.ranks << " ranks (";
  for (size_t i = 0; i < r.mesh.size(); ++i)
    os << (i ? " " : "") << r.mesh[i].first << "=" << r.mesh[i].second;
  os << ")\n";
  // The collective column is as wide as its longest name (the backward's
  // duals are longer than the forward's), at least 20.
  unsigned width = 20;
  for (const auto &c : r.collectives)
    width = std::max<unsigned>(width, c.op.size());
  os << llvm::formatv("{0,-10} {1} {2,-12} {3,14}  {4}\n", "block",
                      llvm::left_justify("collective", width), "axes", "bytes/rank", "why");
  for (const auto &c : r.collectives) {
    std::string axes = "[";
    for (size_t i = 0; i < c.axes.size(); ++i)
      axes += (i ? "," : "") + c.axes[i];
    axes += "]";
    os << llvm::formatv("{0,-10} {1} {2,-12} {3,14}  {4}\n",
                        blockName(c.block, c.family) + (c.backward ? " bwd" : ""),
                        llvm::left_justify(c.op, width), axes, c.bytesPerRank, c.why);
  }
  for (const auto &e : r.elided)
    os << "elided     " << e.op << ": " << e.how << " (" << e.location << ")\n";
  os << "totals: " << r.commBytesPerRank << " bytes sent per rank in " << r.collectives.size()
     << " collectives (";
  bool first = true;
  for (const auto &[op, n] : r.collectiveCounts) {
    os << (first ? "" : ", ") << op << " " << n;
    first = false;
  }
  os << "); weights " << r.weightBytesPerRank << " bytes per rank; peak activations "
     << r.peakActivationBytesPerRank << " bytes per rank (arena; at least " << r.liveBytesLowerBound
     << " live)\n";
  if (r.training)
    os << "training step: forward " << r.commBytesPerRank - r.backwardCommBytesPerRank
       << " bytes, backward " << r.backwardCommBytesPerRank << " bytes per rank (re-gathers of "
       << "saved shards " << r.regatherBytesPerRank << "); saved for the backward "
       << r.savedForBackwardBytesPerRank << " bytes per rank; optimizer state "
       << r.optimizerStateBytesPerRank << " bytes per rank (AdamW moments "
       << r.optimizerStateBytesPerRank - r.mainCopyBytesPerRank << ", f32 main copies "
       << r.mainCopyBytesPerRank << "; in the weights)\n";
}

static std::string escape(const std::string &s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '&':
      out += "&amp;";
      break;
    case '"':
      out += "&quot;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::string toHtml(const Report &r) {
  std::string s;
  llvm::raw_string_ostream os(s);
  int64_t maxComm = 1, maxLive = 1;
  for (const auto &b : r.blocks) {
    maxComm = std::max(maxComm, b.commBytes);
    maxLive = std::max(maxLive, b.peakLiveBytes);
  }
  const int barWidth = 26, gap = 8, height = 160, left = 70, labels = 60;
  int width = left + (int)r.blocks.size() * (barWidth + gap) + 20;
  os << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Shardline report: "
     << escape(r.model) << "</title>\n<style>body{font-family:sans-serif;margin:2em}"
     << "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
     << "font-size:13px}th{background:#eee}.n{text-align:right}</style></head><body>\n";
  os << "<h1>" << escape(r.model) << "</h1>\n<p>" << r.ranks << " ranks (";
  for (size_t i = 0; i < r.mesh.size(); ++i)
    os << (i ? " " : "") << escape(r.mesh[i].first) << "=" << r.mesh[i].second;
  os << "). Per rank: " << r.commBytesPerRank << " bytes sent, weights " << r.weightBytesPerRank
     << " bytes, peak activations " << r.peakActivationBytesPerRank << " bytes.</p>\n";
  auto chart = [&](const char *title, const char *color, auto value, int64_t maxValue) {
    os << "<h2>" << title << "</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
       << "\" height=\"" << height + labels << "\">\n";
    os << "<text x=\"0\" y=\"12\" font-size=\"11\">" << maxValue << " B</text>\n";
    os << "<line x1=\"" << left - 4 << "\" y1=\"" << height << "\" x2=\"" << width << "\" y2=\""
       << height << "\" stroke=\"#888\"/>\n";
    for (size_t i = 0; i < r.blocks.size(); ++i) {
      const BlockSummary &b = r.blocks[i];
      int64_t v = value(b);
      int h = (int)((double)v / (double)maxValue * (height - 20));
      int x = left + (int)i * (barWidth + gap);
      os << "<rect x=\"" << x << "\" y=\"" << height - h << "\" width=\"" << barWidth
         << "\" height=\"" << h << "\" fill=\"" << color << "\"><title>"
         << escape(blockName(b.block, b.family)) << ": " << v << " bytes</title></rect>\n";
      // Labels slanted so that long ones (embedding, lm_head) do not overlap.
      int lx = x + barWidth / 2, ly = height + 12;
      os << "<text x=\"" << lx << "\" y=\"" << ly << "\" font-size=\"10\" text-anchor=\"end\" "
         << "transform=\"rotate(-40 " << lx << " " << ly << ")\">"
         << escape(blockName(b.block, b.family)) << "</text>\n";
    }
    os << "</svg>\n";
  };
  chart(
      "Bytes sent per rank, by block", "#4a78b5", [](const BlockSummary &b) { return b.commBytes; },
      maxComm);
  chart(
      "Live activation bytes per rank (peak while the block runs)", "#c2703d",
      [](const BlockSummary &b) { return b.peakLiveBytes; }, maxLive);
  os << "<h2>Collectives</h2>\n<table><tr><th>block</th><th>op</th><th>axes</th>"
     << "<th>bytes/rank</th><th>why</th></tr>\n";
  for (const auto &c : r.collectives) {
    std::string axes;
    for (size_t i = 0; i < c.axes.size(); ++i)
      axes += (i ? "," : "") + c.axes[i];
    os << "<tr><td>" << escape(blockName(c.block, c.family)) << "</td><td>" << escape(c.op)
       << "</td><td>" << escape(axes) << "</td><td class=\"n\">" << c.bytesPerRank << "</td><td>"
       << escape(c.why) << "</td></tr>\n";
  }
  os << "</table>\n";
  if (!r.elided.empty()) {
    os << "<h2>Elided</h2>\n<ul>\n";
    for (const auto &e : r.elided)
      os << "<li>" << escape(e.op) << ": " << escape(e.how) << " (" << escape(e.location)
         << ")</li>\n";
    os << "</ul>\n";
  }
  os << "</body></html>\n";
  return s;
}

} // namespace shardline
