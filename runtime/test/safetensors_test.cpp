//===- safetensors_test.cpp - weight files in 16-bit types -----------------===//

#include "core/safetensors.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace shardline::rt;

namespace {

/// A safetensors file by hand: header length (u64), JSON header, data.
std::string writeFile(const std::string &header, const std::vector<uint8_t> &data) {
  std::string path = testing::TempDir() + "/sl_safetensors_test.safetensors";
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out.put((char)(n >> (8 * i)));
  out << header;
  out.write(reinterpret_cast<const char *>(data.data()), (std::streamsize)data.size());
  return path;
}

} // namespace

// F16 and BF16 values decode by their bit patterns (little-endian), normal,
// subnormal and signed alike.
TEST(SafeTensors, ReadsSixteenBitFloats) {
  std::vector<uint8_t> data = {
      0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, // f16: 1, -2, 2^-24
      0x80, 0x3f, 0x40, 0xc0,             // bf16: 1, -3
  };
  std::string path = writeFile(R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
                               R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]}})",
                               data);
  std::string error;
  auto file = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(file) << error;
  const SafeTensor *h = file->find("h"), *b = file->find("b");
  ASSERT_TRUE(h && b);
  EXPECT_EQ(file->at(*h, 0), 1.0f);
  EXPECT_EQ(file->at(*h, 1), -2.0f);
  EXPECT_EQ(file->at(*h, 2), 0x1p-24f);
  EXPECT_EQ(file->at(*b, 0), 1.0f);
  EXPECT_EQ(file->at(*b, 1), -3.0f);
  std::remove(path.c_str());
}

// Token ids: I32 written and read back exactly, next to F32; U16 and U32 read
// as the unsigned integers they hold.
TEST(SafeTensors, WritesAndReadsIntegers) {
  std::string path = testing::TempDir() + "/sl_safetensors_ints.safetensors";
  std::map<std::string, TensorToWrite> all;
  all["ids"] = {{2, 2}, {0, 7, 16777215, 3}, true};
  all["x"] = {{1}, {-1.5f}, false};
  std::string error;
  ASSERT_TRUE(writeSafeTensors(path, all, error)) << error;
  auto file = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(file) << error;
  const SafeTensor *ids = file->find("ids"), *x = file->find("x");
  ASSERT_TRUE(ids && x);
  EXPECT_EQ(ids->dtype, "I32");
  EXPECT_EQ(ids->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_TRUE(SafeTensorsFile::isInteger(*ids));
  EXPECT_FALSE(SafeTensorsFile::isInteger(*x));
  EXPECT_EQ(file->intAt(*ids, 2), 16777215);
  EXPECT_EQ(file->intAt(*ids, 1), 7);
  EXPECT_EQ(file->at(*x, 0), -1.5f);
  std::remove(path.c_str());

  std::vector<uint8_t> data = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  path = writeFile(R"({"u":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},)"
                   R"("w":{"dtype":"U32","shape":[1],"data_offsets":[2,6]}})",
                   data);
  file = SafeTensorsFile::open(path, error);
  ASSERT_TRUE(file) << error;
  EXPECT_EQ(file->intAt(*file->find("u"), 0), 65535);
  EXPECT_EQ(file->intAt(*file->find("w"), 0), 4294967295LL);
  std::remove(path.c_str());
}
