//===- launch_grad.cpp - launch shapes of the CUDA backward kernels -------===//

#include "kernels/cuda/launch_grad.h"

#include <algorithm>

namespace shardline::rt::cuda {

bool attentionGradTiling(int64_t B, int64_t HKV, int64_t Sk, int64_t D, AttentionGradTiling &tiling,
                         std::string &error) {
  if (D <= 0 || D > 256) {
    error = "the CUDA attention backward takes head dims of 1 to 256, not " + std::to_string(D);
    return false;
  }
  tiling.maxHeadDim = D <= 64 ? 64 : D <= 128 ? 128 : 256;
  tiling.keysPerBlock = Sk > kWarp ? 64 : kWarp;
  // A query's q and dy rows, its position, log-sum-exp and delta.
  int64_t perQuery = 2 * D * 4 + 8 + 4 + 4;
  tiling.queriesPerTile = (int)std::min<int64_t>(64, kDefaultSharedBytes / perQuery);
  tiling.keyBlocks = (Sk + tiling.keysPerBlock - 1) / tiling.keysPerBlock;
  tiling.shape.threads = tiling.keysPerBlock;
  tiling.shape.blocks = B * HKV * tiling.keyBlocks;
  tiling.shape.sharedBytes = tiling.queriesPerTile * perQuery;
  if (tiling.shape.blocks > kMaxGridX) {
    error = "attention's backward over " + std::to_string(B) + " x " + std::to_string(HKV) +
            " kv heads of " + std::to_string(Sk) + " keys needs more blocks than a CUDA grid holds";
    return false;
  }
  return true;
}

GemmLayout gemmLayout(bool transA, bool transB, int64_t M, int64_t N, int64_t K) {
  GemmLayout layout;
  // Row-major B, stored [K, N] (or [N, K]), is column-major [N, K] (or
  // [K, N]): op(B)^T as it is, or transposed.
  layout.first = transB ? GemmMatrix{K, N, K, true} : GemmMatrix{N, K, N, false};
  layout.second = transA ? GemmMatrix{M, K, M, true} : GemmMatrix{K, M, K, false};
  layout.out = {N, M, N, false};
  return layout;
}

GemmTypes gemmTypes(GemmElement a, GemmElement b, GemmElement out) {
  GemmTypes types;
  if (a == b && a != GemmElement::F32) {
    types.factors = a;
    types.out = out == a ? a : GemmElement::F32;
  }
  types.stageA = a != types.factors;
  types.stageB = b != types.factors;
  types.stageOut = out != types.out;
  return types;
}

LaunchShape embeddingGradShape(int64_t H) { return elementwiseShape(H); }

LaunchShape sumShape(int64_t n) {
  LaunchShape shape;
  shape.threads = 256;
  shape.blocks = std::max<int64_t>(1, std::min<int64_t>(1024, (n + 255) / 256));
  shape.sharedBytes = (shape.threads / kWarp) * 8;
  return shape;
}

bool f32GemmsOnTensorCores(const char *setting, bool &tf32, std::string &error) {
  return switchSetting("SHARDLINE_CUDA_TF32", setting, false,
                       "multiplies f32 GEMMs' factors as TF32 on the tensor cores", "in f32", tf32,
                       error);
}

} // namespace shardline::rt::cuda
