//===- collectives_check.h - one check of every group collective -*- C++ -*-===//
//
// The same values and byte counts checked on thread ranks
// (collectives_test.cpp) and on MPI processes (mpi_collectives_test.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_TEST_COLLECTIVES_CHECK_H
#define SHARDLINE_RUNTIME_TEST_COLLECTIVES_CHECK_H

#include "comm/group.h"
#include "core/layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace shardline::rt::test {

/// Values in `dtype`'s bytes; every value the tests use is exact in bf16.
inline std::vector<char> encode(DType dtype, const std::vector<double> &values) {
  std::vector<char> out(values.size() * dtypeSize(dtype));
  for (size_t k = 0; k < values.size(); ++k) {
    char *at = out.data() + k * dtypeSize(dtype);
    float f = (float)values[k];
    int32_t i = (int32_t)values[k];
    uint16_t h = dtype == DType::BF16 ? floatToBf16(f) : floatToF16(f);
    if (dtype == DType::F32)
      std::memcpy(at, &f, 4);
    else if (dtype == DType::I32)
      std::memcpy(at, &i, 4);
    else
      std::memcpy(at, &h, 2);
  }
  return out;
}

inline std::vector<double> decode(DType dtype, const std::vector<char> &bytes) {
  std::vector<double> out(bytes.size() / dtypeSize(dtype));
  for (size_t k = 0; k < out.size(); ++k) {
    const char *at = bytes.data() + k * dtypeSize(dtype);
    float f;
    int32_t i;
    uint16_t h;
    if (dtype == DType::F32) {
      std::memcpy(&f, at, 4);
      out[k] = f;
    } else if (dtype == DType::I32) {
      std::memcpy(&i, at, 4);
      out[k] = i;
    } else {
      std::memcpy(&h, at, 2);
      out[k] = dtype == DType::BF16 ? bf16ToFloat(h) : f16ToFloat(h);
    }
  }
  return out;
}

inline BufferView viewOf(std::vector<char> &bytes, DType dtype) {
  return BufferView(bytes.data(), (int64_t)bytes.size() / dtypeSize(dtype), dtype);
}

/// What world rank `rank` holds at element k: a distinct small integer.
inline double held(int64_t rank, int64_t k) { return (double)(rank * 16 + k % 16); }
/// What it contributes to a sum at element k (sums over 8 ranks stay exact).
inline double term(int64_t rank, int64_t k) { return (double)((rank + 1) * (k % 4 + 1)); }

/// at(0), ..., at(count - 1).
inline std::vector<double> series(int64_t count, const std::function<double(int64_t)> &at) {
  std::vector<double> out;
  for (int64_t k = 0; k < count; ++k)
    out.push_back(at(k));
  return out;
}

/// The bytes this rank has sent each world rank so far, as the backend saw
/// them move; empty where it cannot tell (MPI).
using SentProbe = std::function<std::vector<int64_t>()>;

/// Every collective on `group` in `dtype`: values, and the bytes sent by the
/// status, by DESIGN §4's formulas and, where `probe` sees them, by what moved.
inline void checkCollectives(Group &group, DType dtype, const SentProbe &probe) {
  const int64_t g = group.size(), i = group.index(), e = dtypeSize(dtype), n = 3;
  const std::vector<int64_t> &members = group.members();
  const int64_t self = members[i];
  std::string where = "rank " + std::to_string(self) + ", group of " + std::to_string(g) + ", " +
                      dtypeName(dtype) + ": ";
  // What the backend saw this rank send must match the status, and go to
  // members only.
  auto expectSent = [&](const char *op, const CommStatus &s, const std::vector<int64_t> &before,
                        int64_t bytes) {
    ASSERT_TRUE(s) << where << op << ": " << s.error;
    EXPECT_EQ(s.bytesSent, bytes) << where << op;
    std::vector<int64_t> after = probe();
    int64_t total = 0;
    for (size_t r = 0; r < after.size(); ++r) {
      total += after[r] - before[r];
      if (std::find(members.begin(), members.end(), (int64_t)r) == members.end())
        EXPECT_EQ(after[r], before[r]) << where << op << " sent rank " << r << ", not a member";
    }
    if (!after.empty())
      EXPECT_EQ(total, bytes) << where << op;
  };

  // The members' sum at element k.
  auto sum = [&](int64_t k) {
    double total = 0;
    for (int64_t j = 0; j < g; ++j)
      total += term(members[j], k);
    return total;
  };

  { // all-gather: every member's n elements in group order
    std::vector<char> send = encode(dtype, series(n, [&](int64_t k) { return held(self, k); }));
    std::vector<char> recv(g * n * e);
    std::vector<int64_t> before = probe();
    CommStatus s = group.allGather(viewOf(send, dtype), viewOf(recv, dtype));
    expectSent("allGather", s, before, (g - 1) * n * e);
    EXPECT_EQ(s.bytesSent, allGatherBytes(g, g * n * e));
    std::vector<double> want =
        series(g * n, [&](int64_t k) { return held(members[k / n], k % n); });
    EXPECT_EQ(decode(dtype, recv), want) << where << "allGather";

    // In place: the send buffer is this member's part of the receive buffer.
    std::vector<char> inPlace(g * n * e);
    std::memcpy(inPlace.data() + i * n * e, send.data(), n * e);
    BufferView all = viewOf(inPlace, dtype);
    s = group.allGather(all.slice(i * n, n), all);
    ASSERT_TRUE(s) << where << s.error;
    EXPECT_EQ(decode(dtype, inPlace), want) << where << "allGather in place";
  }

  { // reduce-scatter: part i of the sum
    std::vector<char> send = encode(dtype, series(g * n, [&](int64_t k) { return term(self, k); }));
    std::vector<char> recv(n * e);
    std::vector<int64_t> before = probe();
    CommStatus s = group.reduceScatter(viewOf(send, dtype), viewOf(recv, dtype));
    expectSent("reduceScatter", s, before, (g - 1) * n * e);
    EXPECT_EQ(s.bytesSent, reduceScatterBytes(g, g * n * e));
    EXPECT_EQ(decode(dtype, recv), series(n, [&](int64_t k) { return sum(i * n + k); }))
        << where << "reduceScatter";
  }

  { // all-reduce over a count g does not divide, then in place over one it does
    for (int64_t count : {2 * g + 1, 4 * g}) {
      std::vector<char> buffer =
          encode(dtype, series(count, [&](int64_t k) { return term(self, k); }));
      std::vector<char> recv(count * e);
      bool inPlace = count % g == 0;
      std::vector<int64_t> before = probe();
      CommStatus s = group.allReduce(viewOf(buffer, dtype), viewOf(inPlace ? buffer : recv, dtype));
      // Part j holds count / g elements, one more for the first count % g.
      int64_t own = count / g + (i < count % g ? 1 : 0);
      expectSent("allReduce", s, before, (count - own + (g - 1) * own) * e);
      if (inPlace)
        EXPECT_EQ(s.bytesSent, allReduceBytes(g, count * e));
      EXPECT_EQ(decode(dtype, inPlace ? buffer : recv), series(count, sum))
          << where << "allReduce " << count;
    }
  }

  { // all-to-all: part j of the send goes to member j
    std::vector<char> send = encode(dtype, series(g * n, [&](int64_t k) { return held(self, k); }));
    std::vector<char> recv(g * n * e);
    std::vector<int64_t> before = probe();
    CommStatus s = group.allToAll(viewOf(send, dtype), viewOf(recv, dtype));
    expectSent("allToAll", s, before, (g - 1) * n * e);
    EXPECT_EQ(s.bytesSent, allToAllBytes(g, g * n * e));
    EXPECT_EQ(decode(dtype, recv),
              series(g * n, [&](int64_t k) { return held(members[k / n], i * n + k % n); }))
        << where << "allToAll";
  }

  { // exchange: member a sends member b (a + 2b + 1) % 4 elements, some none
    auto count = [](int64_t a, int64_t b) { return (a + 2 * b + 1) % 4; };
    std::vector<std::vector<char>> send(g), recv(g);
    std::vector<BufferView> sendTo(g), recvFrom(g);
    int64_t bytes = 0;
    for (int64_t j = 0; j < g; ++j) {
      if (j == i)
        continue;
      send[j] =
          encode(dtype, series(count(i, j), [&](int64_t k) { return held(self, 3 * j + k); }));
      recv[j].resize(count(j, i) * e);
      sendTo[j] = viewOf(send[j], dtype);
      recvFrom[j] = viewOf(recv[j], dtype);
      bytes += count(i, j) * e;
    }
    std::vector<int64_t> before = probe();
    CommStatus s = group.exchange(sendTo, recvFrom);
    expectSent("exchange", s, before, bytes);
    for (int64_t j = 0; j < g; ++j) {
      if (j == i)
        continue;
      EXPECT_EQ(decode(dtype, recv[j]),
                series(count(j, i), [&](int64_t k) { return held(members[j], 3 * i + k); }))
          << where << "exchange from member " << j;
    }
  }
}

} // namespace shardline::rt::test

#endif
