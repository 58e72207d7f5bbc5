//===- device_test.cpp - backends by name, and the host's copies ----------===//
//
// What a trainer that embeds the runtime sees of --device: the backend found
// by name or the reason it is not there (backends/registry.h), and the CPU
// device's upload and download, through which the executor reaches every
// tensor (device/device.h).
//
//===----------------------------------------------------------------------===//

#include "backends/registry.h"
#include "device/device.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace rt = shardline::rt;

TEST(Backends, TheCpuBackendIsBuiltIn) {
  std::string error;
  const rt::Backend *cpu = rt::findBackend("cpu", error);
  ASSERT_EQ(cpu, &rt::cpuBackend());
  EXPECT_STREQ(cpu->name, "cpu");
  EXPECT_EQ(cpu->maxRanks, 0);
  EXPECT_STREQ(cpu->makeDevice(0)->name(), "cpu");
  EXPECT_EQ(error, "");
}

TEST(Backends, AnUnknownNameIsRefused) {
  std::string error;
  EXPECT_EQ(rt::findBackend("tpu", error), nullptr);
  EXPECT_EQ(error, "--device must be one of cpu|cuda, got 'tpu'");
}

TEST(Backends, AMissingLibraryIsNamedWithTheLoadersReason) {
  std::string error;
  ASSERT_EQ(setenv("SHARDLINE_CUDA_BACKEND", "/nonexistent/libshardline-backend-cuda.so", 1), 0);
  EXPECT_EQ(rt::findBackend("cuda", error), nullptr);
  EXPECT_EQ(error, "--device cuda: the CUDA backend is not available "
                   "(/nonexistent/libshardline-backend-cuda.so: cannot open shared object file: "
                   "No such file or directory)");
  // A failed load is not remembered: the next call looks again.
  ASSERT_EQ(setenv("SHARDLINE_CUDA_BACKEND", "/nonexistent/other.so", 1), 0);
  EXPECT_EQ(rt::findBackend("cuda", error), nullptr);
  EXPECT_NE(error.find("/nonexistent/other.so"), std::string::npos) << error;
  unsetenv("SHARDLINE_CUDA_BACKEND");
}

TEST(CpuDevice, UploadAndDownloadConvertTheType) {
  rt::CpuDevice device;
  std::vector<float> host = {1.0f, -2.5f, 3.0f, 65536.0f, 1.0f / 3.0f};
  const int64_t n = (int64_t)host.size();
  void *memory = device.allocate(n * 2);
  rt::BufferView stored(memory, n, rt::DType::BF16);
  device.upload(rt::BufferView(host.data(), n), stored);
  std::vector<float> back(n);
  device.download(stored, rt::BufferView(back.data(), n));
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(back[i], rt::bf16ToFloat(rt::floatToBf16(host[i]))) << i;
  EXPECT_NE(back[4], host[4]); // a third is not a bf16 value
  std::vector<int32_t> ids(n);
  device.download(stored, rt::BufferView(ids.data(), n));
  EXPECT_EQ(ids, (std::vector<int32_t>{1, -2, 3, 65536, 0}));
  device.release(memory);
}
