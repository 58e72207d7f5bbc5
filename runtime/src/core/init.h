//===- init.h - weights generated from a seed by global element index ----===//
//
// Every element of a generated parameter is a pure function of (seed, tensor
// name, global element index): Philox4x32-10 keyed by the seed, with the
// counter holding the element index and a hash of the name. A rank that holds
// a shard computes exactly the values the single-device run uses.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_INIT_H
#define SHARDLINE_RUNTIME_CORE_INIT_H

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace shardline::rt {

enum class InitKind { Normal, Uniform, Constant };

/// normal: mean `offset`, standard deviation `scale`; uniform: in
/// [offset, offset + scale); constant: `offset`.
struct InitSpec {
  InitKind kind = InitKind::Normal;
  double scale = 0.02;
  double offset = 0.0;
};

/// Philox4x32 with 10 rounds (Salmon et al., SC'11).
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

/// 64-bit FNV-1a of the tensor name: the tensor's stream id.
uint64_t tensorStream(std::string_view name);

/// The value of global element `index` of the tensor with stream `stream`.
float initValue(const InitSpec &spec, uint64_t seed, uint64_t stream, uint64_t index);

/// Fills a shard: `owned[d]` lists the global indices along dimension d that
/// the shard holds, in local order; `out` is row-major over the local shape.
void fillShard(const InitSpec &spec, uint64_t seed, std::string_view name,
               const std::vector<int64_t> &globalShape,
               const std::vector<std::vector<int64_t>> &owned, float *out);

} // namespace shardline::rt

#endif
