//===- launch.h - grid, block and shared-memory sizes of the CUDA kernels -===//
//
// How each CUDA kernel is cut into blocks and threads for given shapes, in
// plain C++ so that a CPU unit test checks it (every element covered once,
// the hardware's limits kept) on machines without a GPU; the kernels launch
// exactly what these functions say.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CUDA_LAUNCH_H
#define SHARDLINE_RUNTIME_KERNELS_CUDA_LAUNCH_H

#include "kernels/cuda/arith.h"

#include <cstdint>
#include <string>

namespace shardline::rt::cuda {

/// The limits every launch keeps (those of compute capability 8.0 and up).
inline constexpr int64_t kMaxGridX = 2147483647;
inline constexpr int kMaxThreads = 1024;
/// Shared memory a block may use without opting in to more.
inline constexpr int64_t kDefaultSharedBytes = 48 * 1024;
inline constexpr int kWarp = 32;

/// A switch the CUDA backend reads from the environment variable `name`
/// whose value is `value` (nullptr when unset): unset or empty gives
/// `unset`, "1" true, "0" false, into `result`. Any other value returns
/// false with `error` naming the variable and saying what 1 (`on`) and 0
/// (`off`) do, e.g. "SHARDLINE_CUDA_TF32 is 'yes': 1 ..., 0 (or unset) ...".
bool switchSetting(const char *name, const char *value, bool unset, const char *on, const char *off,
                   bool &result, std::string &error);

struct LaunchShape {
  int64_t blocks = 0;
  int threads = 0;
  int64_t sharedBytes = 0;
};

/// n independent elements: 256 threads a block, each thread striding over
/// the grid when n needs more blocks than the grid takes.
LaunchShape elementwiseShape(int64_t n);

/// One block per row of `width` values (norms, softmax rows): a power of two
/// of threads, at least a warp, at most 256, no more than the row needs; the
/// shared memory holds one partial sum per warp (f32, or f64 when `wide`).
LaunchShape rowShape(int64_t rows, int64_t width, bool wide = false);

/// The tiling of causal attention: each block takes `queriesPerBlock`
/// queries of one (batch, query head), one query a thread; it walks the keys
/// in tiles of `keysPerTile` rows of K and V (and their positions) staged in
/// shared memory. `maxHeadDim` is the per-thread accumulator's length the
/// kernel is instantiated for (64, 128 or 256).
struct AttentionTiling {
  int queriesPerBlock = 0, keysPerTile = 0, maxHeadDim = 0;
  int64_t queryBlocks = 0; ///< blocks along the queries of one head
  LaunchShape shape;
};

/// The tiling for batch B, query heads HQ, Sq queries and head dim D; false
/// with the reason in `error` when the kernel cannot run them (D above 256,
/// a grid larger than the hardware's).
bool attentionTiling(int64_t B, int64_t HQ, int64_t Sq, int64_t D, AttentionTiling &tiling,
                     std::string &error);

/// The tiling of attention on the tensor cores (attention_tc.h): a block of
/// kTcThreads threads per kTcRows queries of one (batch, query head),
/// blocks along the queries fastest; `maxHeadDim` (64, 128 or 256) is the
/// shared-memory layout the kernel is instantiated for, `shape.sharedBytes`
/// its size (dynamic, above the default: the kernel opts in).
struct AttentionTcTiling {
  int maxHeadDim = 0;
  int64_t queryBlocks = 0;
  LaunchShape shape;
};

/// Shared memory a block may opt in to on compute capability 9.0, an SM's
/// in all, and what the hardware keeps aside for each resident block.
inline constexpr int64_t kMaxSharedBytes = 227 * 1024;
inline constexpr int64_t kSharedPerSm = 228 * 1024;
inline constexpr int64_t kSharedReservedPerBlock = 1024;

/// How many blocks of `sharedBytes` an SM of compute capability 9.0 holds
/// at once as far as shared memory goes.
inline int64_t blocksPerSmByShared(int64_t sharedBytes) {
  return kSharedPerSm / (sharedBytes + kSharedReservedPerBlock);
}

/// The head-dim bound of the tensor-core attention's layout for head dim D:
/// the smallest of 64, 128 and 256 that holds D, 0 for D outside 1..256.
int attentionTcMaxHeadDim(int64_t D);

/// The shared memory of that layout (arith::TcShared<T, bound>), 0 for D
/// outside 1..256. The 256 layout (192.6 KiB, one block an SM) needs a device
/// that lets a block opt in to that much (compute capability 9.0 and 10.0
/// do, kMaxSharedBytes; 12.0 allows 99 KiB, which holds only the 64 layout);
/// the CUDA backend widens attention whose layout the GPU cannot hold to f32
/// (backends/cuda/backend.cpp, keepsAttention).
int64_t attentionTcSharedBytes(int64_t D);

/// Whether 16-bit attention of head dim D runs on the tensor cores of a GPU
/// whose blocks may opt in to `sharedOptIn` bytes of shared memory: its
/// layout exists (D up to 256) and fits; otherwise the CUDA backend runs it
/// widened on the f32 kernel (keepsAttention).
inline bool attentionOnTensorCores(int64_t D, int64_t sharedOptIn) {
  int64_t shared = attentionTcSharedBytes(D);
  return shared > 0 && shared <= sharedOptIn;
}

/// The tensor-core tiling for batch B, query heads HQ, Sq queries and head
/// dim D; false with the reason in `error` for head dims above 256 (those
/// the CUDA backend refuses, as attention's f32 kernel does) or a grid
/// larger than the hardware's.
bool attentionTcTiling(int64_t B, int64_t HQ, int64_t Sq, int64_t D, AttentionTcTiling &tiling,
                       std::string &error);

/// The chunked SSD scan's launches (kernels/cuda/ssd_arith.h) over
/// `sequences` sequences of `length` tokens, NH heads, head dim P and state
/// size N, and its scratch: the steps (f32) and running log decays (f64)
/// of every (sequence, chunk, head), kSsdChunk each, and a state [P, N] per
/// (sequence, chunk, head), each array at a 256-byte boundary; with 16-bit
/// activations also y's f32 share from each chunk's own tokens,
/// `partialBytes` from scratchBytes on (arith::SsdArgsOf::partial).
struct SsdLaunch {
  int64_t chunks = 0; ///< chunks of a sequence
  int64_t items = 0;  ///< (sequence, chunk, head) triples
  LaunchShape cum;    ///< (a) a thread an item
  LaunchShape chunk;  ///< (b) and (d) a block an item, its shared memory static
  LaunchShape carry;  ///< (c) a thread a (sequence, head, state entry)
  int64_t cumOffset = 0, stepOffset = 0, statesOffset = 0, scratchBytes = 0;
  int64_t partialBytes = 0;
  /// The scratch a scan whose y is stored as `y` takes.
  int64_t bytesFor(arith::Type y) const {
    return scratchBytes + (y == arith::Type::F32 ? 0 : partialBytes);
  }
};

/// The launches for these sizes; false with the reason in `error` when the
/// kernels cannot run them (P or N below 1, a grid larger than the
/// hardware's).
bool ssdLaunch(int64_t sequences, int64_t length, int64_t NH, int64_t P, int64_t N,
               SsdLaunch &launch, std::string &error);

/// The chunked SSD backward's launches (kernels/cuda/ssd_grad_arith.h) over
/// `sequences` sequences of `length` tokens, NH heads in G groups, head dim
/// P and state size N, and its scratch: the forward's (ssdLaunch's, first),
/// then a cotangent state [P, N] an item, the per-head dB and dC [tokens, NH,
/// N] each (none with one head a group: the block writes dB and dC), a
/// double an item for dA and one for dD, and one a (sequence, head) for the
/// decay's cotangent, each array at a 256-byte boundary.
struct SsdGradLaunch {
  SsdLaunch fwd;     ///< (a)-(c), their scratch at offset 0
  LaunchShape block; ///< (e) and (g): a block an item, SsdGradShared dynamic
  LaunchShape carry; ///< (f): a thread a (sequence, head, state entry)
  LaunchShape
      heads; ///< (h): a thread a (token, group, state entry); 0 blocks with one head a group
  LaunchShape rates; ///< (i): a thread a head
  int64_t cotOffset = 0, dBhOffset = 0, dChOffset = 0, partAOffset = 0, partDOffset = 0;
  int64_t decayCotOffset = 0, scratchBytes = 0;
};

/// The launches for these sizes; false with the reason in `error` when the
/// kernels cannot run them (ssdLaunch's refusals, G not dividing NH).
bool ssdGradLaunch(int64_t sequences, int64_t length, int64_t NH, int64_t P, int64_t G, int64_t N,
                   SsdGradLaunch &launch, std::string &error);

} // namespace shardline::rt::cuda

#endif
