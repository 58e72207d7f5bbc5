//===- cuda_kernels_test.cpp - CUDA kernels against the CPU reference ----===//
//
// Exits 77 (skipped) on a machine without a CUDA device or driver.
//
//===----------------------------------------------------------------------===//

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace cpu = shardline::rt::cpu;
namespace gpu = shardline::rt::cuda;

namespace {
std::vector<float> randomVector(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.5f);
  std::vector<float> v(n);
  for (auto &x : v)
    x = dist(gen);
  return v;
}

struct DeviceBuffer {
  explicit DeviceBuffer(const std::vector<float> &host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&ptr), n * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceBuffer(size_t n) : n(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&ptr), n * sizeof(float)), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<float> read() const {
    std::vector<float> out(n);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  float *ptr = nullptr;
  size_t n;
};

void expectClose(const std::vector<float> &got, const std::vector<float> &want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + std::fabs(want[i]))) << "at " << i;
}
} // namespace

TEST(CudaKernels, ElementwiseMatchTheReference) {
  const int64_t n = 100003;
  auto a = randomVector(n, 1), b = randomVector(n, 2);
  DeviceBuffer da(a), db(b), out(n);
  std::vector<float> want(n);
  ASSERT_EQ(gpu::add(da.ptr, db.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::add(a.data(), b.data(), n, want.data());
  expectClose(out.read(), want, 1e-6f);
  ASSERT_EQ(gpu::silu(da.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::silu(a.data(), n, want.data());
  expectClose(out.read(), want, 1e-5f);
  ASSERT_EQ(gpu::swiglu(da.ptr, db.ptr, n, out.ptr, nullptr), cudaSuccess);
  cpu::swiglu(a.data(), b.data(), n, want.data());
  expectClose(out.read(), want, 1e-5f);
}

TEST(CudaKernels, RmsNormMatchesTheReference) {
  const int64_t T = 37, H = 1000;
  auto x = randomVector(T * H, 3), w = randomVector(H, 4);
  DeviceBuffer dx(x), dw(w), dy(T * H);
  ASSERT_EQ(gpu::rms_norm(dx.ptr, dw.ptr, T, H, 1e-5f, dy.ptr, nullptr), cudaSuccess);
  std::vector<float> want(T * H);
  cpu::rms_norm(x.data(), w.data(), T, H, 1e-5f, want.data());
  expectClose(dy.read(), want, 1e-5f);
}

int main(int argc, char **argv) {
  int devices = 0;
  cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
