//===- kernel_test_util.h - Random data and comparisons for kernel tests --===//

#ifndef SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H
#define SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace shardline::rt::test {

using Vec = std::vector<float>;

/// splitmix64: tiny, seeded and identical on every platform.
class Rng {
public:
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>((next() >> 40) * 0x1p-24);
  }
  Vec vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    Vec v(n);
    for (float &x : v)
      x = uniform(lo, hi);
    return v;
  }

private:
  uint64_t state;
};

/// Columns [start, start+len) of m[R,C].
inline Vec sliceCols(const Vec &m, int64_t R, int64_t C, int64_t start, int64_t len) {
  Vec out(R * len);
  for (int64_t r = 0; r < R; ++r)
    std::copy(m.begin() + r * C + start, m.begin() + r * C + start + len, out.begin() + r * len);
  return out;
}

/// |got - want| <= atol + rtol |want| elementwise; -inf must match exactly.
template <typename W>
void expectClose(const Vec &got, const std::vector<W> &want, double rtol, double atol,
                 const char *what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = got[i], w = static_cast<double>(want[i]);
    if (std::isinf(w)) {
      ASSERT_EQ(g, w) << what << " [" << i << "]";
      continue;
    }
    ASSERT_NEAR(g, w, atol + rtol * std::abs(w)) << what << " [" << i << "]";
  }
}

/// The finite-difference step and tolerance of the backward kernels' tests
/// (grad_kernels_test.cpp's header says why these).
constexpr double kStep = 1e-2, kTol = 5e-4;

/// Σ r·y in double: the objective J = r·forward(θ) of a gradient check.
inline double dot(const Vec &r, const Vec &y) {
  double s = 0.0;
  for (size_t i = 0; i < r.size(); ++i)
    s += static_cast<double>(r[i]) * y[i];
  return s;
}

/// `grad` is dJ/dtheta: checked element by element against central
/// differences of `objective`, which reads `theta` (perturbed in place and
/// restored). The step is the one f32 actually takes.
template <typename J>
void expectGradient(Vec &theta, const Vec &grad, J objective, const char *what) {
  ASSERT_EQ(theta.size(), grad.size()) << what;
  double largest = 0.0;
  for (float g : grad)
    largest = std::max(largest, (double)std::abs(g));
  for (size_t i = 0; i < theta.size(); ++i) {
    float saved = theta[i], up = saved + (float)kStep, down = saved - (float)kStep;
    theta[i] = up;
    double jUp = objective();
    theta[i] = down;
    double jDown = objective();
    theta[i] = saved;
    double fd = (jUp - jDown) / ((double)up - (double)down);
    ASSERT_NEAR(grad[i], fd, kTol * (largest + std::abs(fd)) + 1e-6) << what << " [" << i << "]";
  }
}

/// n normal values of mean 0 and deviation `sigma`, the same for a seed on
/// every platform's std::mt19937 (the CUDA tests compare kernels on them).
inline std::vector<float> normalVector(size_t n, unsigned seed, float sigma = 1.5f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto &x : v)
    x = dist(gen);
  return v;
}

} // namespace shardline::rt::test

#endif // SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H
