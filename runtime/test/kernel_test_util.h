//===- kernel_test_util.h - Random data and comparisons for kernel tests --===//

#ifndef SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H
#define SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H

#include "exec/program.h"
#include "exec/verify.h"
#include "kernels/cpu/kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
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

/// The finite-difference step and tolerance of the backward kernels' checks
/// (grad_kernels_test.cpp explains them).
constexpr double kStep = 1e-2, kTol = 5e-4;

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

/// One step of `kind` from the CPU table over f32 tensors of the given
/// shapes (replicated on a one-rank mesh unless the layouts say otherwise),
/// bound in the entry's operand and result order; ids and labels are i32.
struct StepRig {
  Mesh mesh;
  std::vector<TensorInfo> tensors;
  std::vector<BufferView> views;
  Step step;
  Frame frame{mesh, 0, tensors, views, nullptr};

  StepRig(const std::string &kind, const std::vector<std::vector<int64_t>> &in,
          const std::vector<std::vector<int64_t>> &out, std::vector<AttrValue> attrs,
          Mesh onMesh = Mesh{}, std::vector<Layout> layouts = {})
      : mesh(std::move(onMesh)) {
    step.kernel = &cpuBackend().kernels.at(kind);
    step.kind = kind;
    step.location = "test.mlir:1:1";
    step.attrs = std::move(attrs);
    std::vector<std::vector<int64_t>> shapes = in;
    shapes.insert(shapes.end(), out.begin(), out.end());
    for (size_t i = 0; i < shapes.size(); ++i) {
      bool isIn = i < in.size();
      TensorInfo t;
      t.name = isIn ? step.kernel->operands[i] : step.kernel->results[i - in.size()];
      t.shape = shapes[i];
      t.layout = i < layouts.size() ? layouts[i] : Layout::replicated(shapes[i].size());
      t.local = t.shape;
      for (size_t d = 0; d < t.local.size() && d < t.layout.dims.size(); ++d)
        t.local[d] /= mesh.product(t.layout.dims[d]);
      t.count = 1;
      for (int64_t e : t.local)
        t.count *= e;
      t.dtype = t.name == "ids" || t.name == "labels" ? DType::I32 : DType::F32;
      tensors.push_back(t);
      (isIn ? step.in : step.out).push_back((int32_t)i);
    }
  }
  /// Points the tensors, in order, at f32 buffers.
  void bind(std::initializer_list<Vec *> buffers) {
    views.clear();
    for (Vec *b : buffers)
      views.emplace_back(b->data(), (int64_t)b->size());
  }
  std::string verify() { return verifyProgram({step}, frame); }
};

inline AttrValue intAttr(int64_t v) {
  AttrValue a;
  a.present = true;
  a.i = v;
  return a;
}

inline AttrValue axesAttr(std::vector<std::string> axes) {
  AttrValue a;
  a.present = true;
  a.strings = std::move(axes);
  return a;
}

} // namespace shardline::rt::test

#endif // SHARDLINE_RUNTIME_TEST_KERNEL_TEST_UTIL_H
