//===- launch.cpp - grid, block and shared-memory sizes ---------------------===//

#include "kernels/cuda/launch.h"
#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/ssd_arith.h"
#include "kernels/cuda/ssd_grad_arith.h"

#include <algorithm>

namespace shardline::rt::cuda {

namespace {
constexpr int kElementThreads = 256;
/// Enough blocks to fill any current GPU several times over; beyond it the
/// threads stride.
constexpr int64_t kMaxElementBlocks = 65536;
} // namespace

LaunchShape elementwiseShape(int64_t n) {
  LaunchShape shape;
  shape.threads = kElementThreads;
  shape.blocks = std::min<int64_t>(kMaxElementBlocks, (n + kElementThreads - 1) / kElementThreads);
  return shape;
}

LaunchShape rowShape(int64_t rows, int64_t width, bool wide) {
  LaunchShape shape;
  shape.blocks = rows;
  int threads = kWarp;
  while (threads < 256 && threads < width)
    threads *= 2;
  shape.threads = threads;
  shape.sharedBytes = (threads / kWarp) * (wide ? 8 : 4);
  return shape;
}

bool attentionTiling(int64_t B, int64_t HQ, int64_t Sq, int64_t D, AttentionTiling &tiling,
                     std::string &error) {
  if (D <= 0 || D > 256) {
    error = "the CUDA attention kernel takes head dims of 1 to 256, not " + std::to_string(D);
    return false;
  }
  tiling.maxHeadDim = D <= 64 ? 64 : D <= 128 ? 128 : 256;
  // Fewer queries a block for short sequences, so that small problems still
  // spread over many blocks.
  tiling.queriesPerBlock = Sq > kWarp ? 64 : kWarp;
  // K and V rows of D floats and an int64 position per key; the tile is as
  // long as the default shared memory allows, up to 64 keys.
  int64_t perKey = 2 * D * 4 + 8;
  tiling.keysPerTile = (int)std::min<int64_t>(64, kDefaultSharedBytes / perKey);
  tiling.queryBlocks = (Sq + tiling.queriesPerBlock - 1) / tiling.queriesPerBlock;
  tiling.shape.threads = tiling.queriesPerBlock;
  tiling.shape.blocks = B * HQ * tiling.queryBlocks;
  tiling.shape.sharedBytes = tiling.keysPerTile * perKey;
  if (tiling.shape.blocks > kMaxGridX) {
    error = "attention over " + std::to_string(B) + " x " + std::to_string(HQ) + " heads of " +
            std::to_string(Sq) + " queries needs more blocks than a CUDA grid holds";
    return false;
  }
  return true;
}

bool switchSetting(const char *name, const char *value, bool unset, const char *on, const char *off,
                   bool &result, std::string &error) {
  std::string given = value ? value : "";
  if (given.empty() || given == "0" || given == "1") {
    result = given.empty() ? unset : given == "1";
    return true;
  }
  error = std::string(name) + " is '" + given + "': 1" + (unset ? " (or unset) " : " ") + on +
          ", 0" + (unset ? " " : " (or unset) ") + off;
  return false;
}

int attentionTcMaxHeadDim(int64_t D) {
  return D <= 0 || D > 256 ? 0 : D <= 64 ? 64 : D <= 128 ? 128 : 256;
}

int64_t attentionTcSharedBytes(int64_t D) {
  // Both 16-bit types are two bytes: one layout for each head-dim bound.
  switch (attentionTcMaxHeadDim(D)) {
  case 64:
    return (int64_t)sizeof(arith::TcShared<arith::Bf16, 64>);
  case 128:
    return (int64_t)sizeof(arith::TcShared<arith::Bf16, 128>);
  case 256:
    return (int64_t)sizeof(arith::TcShared<arith::Bf16, 256>);
  default:
    return 0;
  }
}

bool attentionTcTiling(int64_t B, int64_t HQ, int64_t Sq, int64_t D, AttentionTcTiling &tiling,
                       std::string &error) {
  tiling = AttentionTcTiling();
  tiling.maxHeadDim = attentionTcMaxHeadDim(D);
  if (tiling.maxHeadDim == 0) {
    error = "the CUDA tensor-core attention takes head dims of 1 to 256, not " + std::to_string(D);
    return false;
  }
  tiling.queryBlocks = (Sq + arith::kTcRows - 1) / arith::kTcRows;
  tiling.shape.threads = arith::kTcThreads;
  tiling.shape.blocks = B * HQ * tiling.queryBlocks;
  tiling.shape.sharedBytes = attentionTcSharedBytes(D);
  if (tiling.shape.blocks > kMaxGridX) {
    error = "attention over " + std::to_string(B) + " x " + std::to_string(HQ) + " heads of " +
            std::to_string(Sq) + " queries needs more blocks than a CUDA grid holds";
    return false;
  }
  return true;
}

bool ssdLaunch(int64_t sequences, int64_t length, int64_t NH, int64_t P, int64_t N,
               SsdLaunch &launch, std::string &error) {
  if (P < 1 || N < 1) {
    error = "the CUDA SSD scan takes a head dim and a state size of at least 1, not " +
            std::to_string(P) + " and " + std::to_string(N);
    return false;
  }
  launch = SsdLaunch();
  launch.chunks = arith::ssdChunksOf(length);
  launch.items = sequences * launch.chunks * NH;
  if (launch.items > kMaxGridX) {
    error = "the CUDA SSD scan over " + std::to_string(sequences) + " sequences of " +
            std::to_string(length) + " tokens and " + std::to_string(NH) +
            " heads needs more blocks than a CUDA grid holds";
    return false;
  }
  launch.cum = elementwiseShape(launch.items);
  launch.chunk.blocks = launch.items;
  launch.chunk.threads = arith::kSsdThreads;
  launch.chunk.sharedBytes = (int64_t)sizeof(arith::SsdShared);
  launch.carry = elementwiseShape(sequences * NH * P * N);
  auto rounded = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  int64_t perItem = launch.items * arith::kSsdChunk;
  launch.cumOffset = 0;
  launch.stepOffset = rounded(perItem * 8);
  launch.statesOffset = launch.stepOffset + rounded(perItem * 4);
  launch.scratchBytes = launch.statesOffset + rounded(launch.items * P * N * 4);
  launch.partialBytes = rounded(sequences * length * NH * P * 4);
  return true;
}

bool ssdGradLaunch(int64_t sequences, int64_t length, int64_t NH, int64_t P, int64_t G, int64_t N,
                   SsdGradLaunch &launch, std::string &error) {
  launch = SsdGradLaunch();
  if (G < 1 || NH % G != 0) {
    error = "the CUDA SSD scan's backward takes heads in whole groups, not " + std::to_string(NH) +
            " heads in " + std::to_string(G) + " groups";
    return false;
  }
  if (!ssdLaunch(sequences, length, NH, P, N, launch.fwd, error))
    return false;
  const int64_t items = launch.fwd.items, tokens = sequences * length;
  launch.block.blocks = items;
  launch.block.threads = arith::kSsdThreads;
  launch.block.sharedBytes = (int64_t)sizeof(arith::SsdGradShared);
  launch.carry = launch.fwd.carry;
  if (NH != G)
    launch.heads = elementwiseShape(tokens * G * N);
  launch.rates = elementwiseShape(NH);
  auto rounded = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  const int64_t perHead = NH != G ? rounded(tokens * NH * N * 4) : 0;
  launch.cotOffset = launch.fwd.scratchBytes;
  launch.dBhOffset = launch.cotOffset + rounded(items * P * N * 4);
  launch.dChOffset = launch.dBhOffset + perHead;
  launch.partAOffset = launch.dChOffset + perHead;
  launch.partDOffset = launch.partAOffset + rounded(items * 8);
  launch.decayCotOffset = launch.partDOffset + rounded(items * 8);
  launch.scratchBytes = launch.decayCotOffset + rounded(sequences * NH * 8);
  return true;
}

} // namespace shardline::rt::cuda
