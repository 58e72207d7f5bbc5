//===- init.cpp - counter-based weight generation --------------------------===//

#include "core/init.h"

#include <cmath>

namespace shardline::rt {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = (uint64_t)M0 * c[0], p1 = (uint64_t)M1 * c[2];
    c = {(uint32_t)(p1 >> 32) ^ c[1] ^ k[0], (uint32_t)p1, (uint32_t)(p0 >> 32) ^ c[3] ^ k[1],
         (uint32_t)p0};
    k = {k[0] + W0, k[1] + W1};
  }
  return c;
}

uint64_t tensorStream(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

// A uniform in (0, 1) from 32 random bits (never exactly 0, for the log).
static double unit(uint32_t bits) { return ((double)bits + 0.5) / 4294967296.0; }

float initValue(const InitSpec &spec, uint64_t seed, uint64_t stream, uint64_t index) {
  if (spec.kind == InitKind::Constant)
    return (float)spec.offset;
  auto r = philox4x32({(uint32_t)index, (uint32_t)(index >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)},
                      {(uint32_t)seed, (uint32_t)(seed >> 32)});
  if (spec.kind == InitKind::Uniform)
    return (float)(spec.offset + spec.scale * unit(r[0]));
  // Box-Muller on two independent uniforms.
  double radius = std::sqrt(-2.0 * std::log(unit(r[0])));
  double angle = 2.0 * M_PI * unit(r[1]);
  return (float)(spec.offset + spec.scale * radius * std::cos(angle));
}

void fillShard(const InitSpec &spec, uint64_t seed, std::string_view name,
               const std::vector<int64_t> &globalShape,
               const std::vector<std::vector<int64_t>> &owned, float *out) {
  uint64_t stream = tensorStream(name);
  size_t rank = globalShape.size();
  std::vector<int64_t> strides(rank, 1);
  for (size_t d = rank; d-- > 1;)
    strides[d - 1] = strides[d] * globalShape[d];
  int64_t total = 1;
  for (const auto &o : owned)
    total *= (int64_t)o.size();
  std::vector<size_t> pos(rank, 0);
  for (int64_t i = 0; i < total; ++i) {
    int64_t global = 0;
    for (size_t d = 0; d < rank; ++d)
      global += owned[d][pos[d]] * strides[d];
    out[i] = initValue(spec, seed, stream, (uint64_t)global);
    for (size_t d = rank; d-- > 0;) {
      if (++pos[d] < owned[d].size())
        break;
      pos[d] = 0;
    }
  }
}

} // namespace shardline::rt
