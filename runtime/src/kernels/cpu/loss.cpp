//===- loss.cpp - Vocab-parallel cross-entropy ----------------------------===//

#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace shardline::rt::cpu {

void xent_local_max(const float *logits, int64_t T, int64_t Vl, float *max) {
  for (int64_t t = 0; t < T; ++t)
    max[t] = Vl ? *std::max_element(logits + t * Vl, logits + (t + 1) * Vl)
                : -std::numeric_limits<float>::infinity();
}

void xent_local_sumexp(const float *logits, const float *gmax, int64_t T,
                       int64_t Vl, float *sum) {
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0;
    for (int64_t v = 0; v < Vl; ++v)
      s += std::exp(static_cast<double>(logits[t * Vl + v]) - gmax[t]);
    sum[t] = static_cast<float>(s);
  }
}

void xent_local_target(const float *logits, const int32_t *labels, int64_t T,
                       int64_t Vl, int64_t vocab_offset, float *target) {
  for (int64_t t = 0; t < T; ++t) {
    int64_t v = static_cast<int64_t>(labels[t]) - vocab_offset;
    target[t] = v >= 0 && v < Vl ? logits[t * Vl + v] : 0.0f;
  }
}

float xent_loss(const float *gmax, const float *sum, const float *target,
                int64_t T) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t)
    total += std::log(static_cast<double>(sum[t])) + gmax[t] - target[t];
  return T ? static_cast<float>(total / T) : 0.0f;
}

void xent_combine_max(const float *const *maxes, int64_t shards, int64_t T,
                      float *gmax) {
  std::fill(gmax, gmax + T, -std::numeric_limits<float>::infinity());
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T; ++t)
      gmax[t] = std::max(gmax[t], maxes[m][t]);
}

double xent_combine_total(const float *const *pieces, int64_t shards,
                          const float *gmax, int64_t T) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0, target = 0.0;
    for (int64_t m = 0; m < shards; ++m) {
      s += pieces[m][t];
      target += pieces[m][T + t];
    }
    total += std::log(s) + gmax[t] - target;
  }
  return total;
}

float cross_entropy(const float *logits, const int32_t *labels, int64_t T,
                    int64_t V) {
  std::vector<float> max(T), sum(T), target(T);
  xent_local_max(logits, T, V, max.data());
  xent_local_sumexp(logits, max.data(), T, V, sum.data());
  xent_local_target(logits, labels, T, V, 0, target.data());
  return xent_loss(max.data(), sum.data(), target.data(), T);
}

} // namespace shardline::rt::cpu
