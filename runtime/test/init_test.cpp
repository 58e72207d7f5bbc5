//===- init_test.cpp - counter-based weight generation ---------------------===//

#include "core/init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

using namespace shardline::rt;

// Known-answer vectors of Philox4x32-10 (Random123's kat_vectors).
TEST(Philox, KnownAnswers) {
  EXPECT_EQ(philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                       {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                       {0xa4093822u, 0x299f31d0u}),
            (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Init, ShardsReproduceTheFullTensor) {
  InitSpec spec{InitKind::Normal, 0.02, 0.0};
  std::vector<int64_t> shape{6, 4};
  std::vector<int64_t> rows(6), cols(4);
  std::iota(rows.begin(), rows.end(), 0);
  std::iota(cols.begin(), cols.end(), 0);
  std::vector<float> full(24);
  fillShard(spec, 7, "w", shape, {rows, cols}, full.data());
  // A zigzag-like row shard and a column shard.
  std::vector<float> shard(2 * 2);
  fillShard(spec, 7, "w", shape, {{1, 4}, {2, 3}}, shard.data());
  EXPECT_EQ(shard[0], full[1 * 4 + 2]);
  EXPECT_EQ(shard[1], full[1 * 4 + 3]);
  EXPECT_EQ(shard[2], full[4 * 4 + 2]);
  EXPECT_EQ(shard[3], full[4 * 4 + 3]);
}

TEST(Init, SeedAndNameSelectTheStream) {
  InitSpec spec;
  uint64_t a = tensorStream("blocks.0.attn.wq"), b = tensorStream("blocks.0.attn.wk");
  EXPECT_NE(a, b);
  EXPECT_NE(initValue(spec, 1, a, 0), initValue(spec, 2, a, 0));
  EXPECT_NE(initValue(spec, 1, a, 0), initValue(spec, 1, b, 0));
  EXPECT_EQ(initValue(spec, 1, a, 5), initValue(spec, 1, a, 5));
}

TEST(Init, DistributionsHaveTheirMoments) {
  const int n = 200000;
  double sum = 0, sq = 0, lo = 1e9, hi = -1e9;
  InitSpec normal{InitKind::Normal, 2.0, 1.0};
  for (int i = 0; i < n; ++i) {
    double v = initValue(normal, 3, 11, i);
    sum += v;
    sq += v * v;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 1.0, 0.02);
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.02);
  InitSpec uniform{InitKind::Uniform, 4.7, 2.2};
  sum = 0;
  for (int i = 0; i < n; ++i) {
    double v = initValue(uniform, 3, 12, i);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  EXPECT_GE(lo, 2.2);
  EXPECT_LT(hi, 6.9);
  EXPECT_NEAR(sum / n, 2.2 + 4.7 / 2, 0.02);
  EXPECT_EQ(initValue({InitKind::Constant, 0, 1.5}, 3, 12, 99), 1.5f);
}
