//===- group.cpp - what every backend's group collectives share ------------===//
//
// The argument checks, this member's own part, the byte counts and the sums;
// the backends (comm.cpp, mpi.cpp) move the data.
//
//===----------------------------------------------------------------------===//

#include "comm/group.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shardline::rt {

namespace {

/// Sums element by element, so `dst` may be one of the terms.
template <typename T, typename Acc, typename Load, typename Store>
void sumElements(const std::vector<const void *> &terms, int64_t count, void *dst, Load load,
                 Store store) {
  T *out = static_cast<T *>(dst);
  for (int64_t k = 0; k < count; ++k) {
    Acc acc = load(static_cast<const T *>(terms[0])[k]);
    for (size_t j = 1; j < terms.size(); ++j)
      acc += load(static_cast<const T *>(terms[j])[k]);
    out[k] = store(acc);
  }
}

} // namespace

void sumTerms(DType dtype, const std::vector<const void *> &terms, int64_t count, void *dst) {
  if (terms.empty() || count == 0)
    return;
  auto same = [](auto v) { return v; };
  switch (dtype) {
  case DType::F32:
    return sumElements<float, float>(terms, count, dst, same, same);
  case DType::BF16:
    return sumElements<uint16_t, float>(terms, count, dst, bf16ToFloat, floatToBf16);
  case DType::F16:
    return sumElements<uint16_t, float>(terms, count, dst, f16ToFloat, floatToF16);
  case DType::I32:
    // Unsigned, so an overflow wraps instead of being undefined.
    return sumElements<int32_t, uint32_t>(
        terms, count, dst, [](int32_t v) { return (uint32_t)v; },
        [](uint32_t v) { return (int32_t)v; });
  }
}

namespace {

std::string checkView(const std::string &what, const BufferView &v) {
  if (v.count < 0)
    return what + " has a negative count (" + std::to_string(v.count) + ")";
  if (v.count > 0 && !v.data)
    return what + " has " + std::to_string(v.count) + " elements but no data";
  return "";
}

std::string checkPair(const BufferView &send, const BufferView &recv) {
  std::string error = checkView("the send buffer", send);
  if (error.empty())
    error = checkView("the receive buffer", recv);
  if (error.empty() && send.dtype != recv.dtype)
    error = std::string("the send buffer is ") + dtypeName(send.dtype) + ", the receive buffer " +
            dtypeName(recv.dtype);
  return error;
}

bool overlap(const BufferView &a, const BufferView &b) {
  if (a.count == 0 || b.count == 0)
    return false;
  auto begin = [](const BufferView &v) { return (uintptr_t)v.data; };
  return begin(a) < begin(b) + b.bytes() && begin(b) < begin(a) + a.bytes();
}

/// Places this member's own part: the copy no other member makes.
void copyOwn(const BufferView &from, const BufferView &to) {
  if (from.data != to.data && from.count > 0)
    std::memcpy(to.data, from.data, from.bytes());
}

CommStatus finish(const char *op, bool ok, const std::string &error, int64_t bytesSent) {
  if (!ok)
    return {false, error.empty() ? error : op + (": " + error), 0};
  return {true, "", bytesSent};
}

} // namespace

int64_t Group::partBegin(int64_t count, int64_t part) const {
  int64_t g = size();
  return part * (count / g) + std::min(part, count % g);
}

std::string Group::checkPartOfWhole(const std::string &partName, const BufferView &part,
                                    const std::string &wholeName, const BufferView &whole) const {
  int64_t g = size();
  if (whole.count != g * part.count)
    return wholeName + " holds " + std::to_string(whole.count) + " elements, " + std::to_string(g) +
           " members' parts of " + std::to_string(part.count) + " make " +
           std::to_string(g * part.count);
  if (overlap(part, whole) && part.data != whole.slice(self * part.count, part.count).data)
    return partName + " overlaps " + wholeName + " but is not this member's part of it";
  return "";
}

CommStatus Group::allGather(const BufferView &send, const BufferView &recv) {
  std::string error = checkPair(send, recv);
  if (error.empty())
    error = checkPartOfWhole("the send buffer", send, "the receive buffer", recv);
  if (!error.empty())
    return CommStatus::failed("allGather: " + error);
  copyOwn(send, recv.slice(self * send.count, send.count));
  bool ok = doAllGather(send, recv, error);
  return finish("allGather", ok, error, (size() - 1) * send.bytes());
}

CommStatus Group::reduceScatter(const BufferView &send, const BufferView &recv) {
  std::string error = checkPair(send, recv);
  if (error.empty())
    error = checkPartOfWhole("the receive buffer", recv, "the send buffer", send);
  if (!error.empty())
    return CommStatus::failed("reduceScatter: " + error);
  bool ok = doReduceScatter(send, recv, error);
  return finish("reduceScatter", ok, error, (size() - 1) * recv.bytes());
}

CommStatus Group::allReduce(const BufferView &send, const BufferView &recv) {
  int64_t g = size();
  std::string error = checkPair(send, recv);
  if (error.empty() && send.count != recv.count)
    error = "the send buffer holds " + std::to_string(send.count) +
            " elements, the receive buffer " + std::to_string(recv.count);
  if (error.empty() && overlap(send, recv) && send.data != recv.data)
    error = "the send and receive buffers overlap but are not the same";
  if (!error.empty())
    return CommStatus::failed("allReduce: " + error);
  bool ok = doAllReduce(send, recv, error);
  // Reduce-scatter sends every other member its part, all-gather sends this
  // member's part to every other member.
  int64_t ownPart = partBegin(send.count, self + 1) - partBegin(send.count, self);
  int64_t elements = send.count - ownPart + (g - 1) * ownPart;
  return finish("allReduce", ok, error, elements * dtypeSize(send.dtype));
}

CommStatus Group::allToAll(const BufferView &send, const BufferView &recv) {
  int64_t g = size();
  std::string error = checkPair(send, recv);
  if (error.empty() && (send.count != recv.count || send.count % g != 0))
    error = "the send and receive buffers must hold the same number of elements, a multiple of " +
            std::to_string(g) + " members; they hold " + std::to_string(send.count) + " and " +
            std::to_string(recv.count);
  if (error.empty() && overlap(send, recv))
    error = "the send and receive buffers overlap";
  if (!error.empty())
    return CommStatus::failed("allToAll: " + error);
  int64_t part = send.count / g;
  copyOwn(send.slice(self * part, part), recv.slice(self * part, part));
  bool ok = doAllToAll(send, recv, error);
  return finish("allToAll", ok, error, (g - 1) * part * dtypeSize(send.dtype));
}

CommStatus Group::exchange(const std::vector<BufferView> &sendTo,
                           const std::vector<BufferView> &recvFrom) {
  int64_t g = size();
  std::string error;
  if ((int64_t)sendTo.size() != g || (int64_t)recvFrom.size() != g)
    error = "a group of " + std::to_string(g) + " members needs " + std::to_string(g) +
            " send and receive buffers, got " + std::to_string(sendTo.size()) + " and " +
            std::to_string(recvFrom.size());
  int64_t bytes = 0;
  for (int64_t j = 0; j < g && error.empty(); ++j) {
    if (j == self)
      continue;
    std::string to = " for member " + std::to_string(j);
    error = checkView("the send buffer" + to, sendTo[j]);
    if (error.empty())
      error = checkView("the receive buffer" + to, recvFrom[j]);
    for (int64_t m = 0; m < g && error.empty(); ++m) {
      if (m == self)
        continue;
      if (overlap(recvFrom[j], sendTo[m]))
        error = "the receive buffer for member " + std::to_string(j) +
                " overlaps the send buffer for member " + std::to_string(m);
      else if (m != j && overlap(recvFrom[j], recvFrom[m]))
        error = "the receive buffers for members " + std::to_string(std::min(j, m)) + " and " +
                std::to_string(std::max(j, m)) + " overlap";
    }
    bytes += sendTo[j].bytes();
  }
  if (!error.empty())
    return CommStatus::failed("exchange: " + error);
  bool ok = doExchange(sendTo, recvFrom, error);
  return finish("exchange", ok, error, bytes);
}

} // namespace shardline::rt
