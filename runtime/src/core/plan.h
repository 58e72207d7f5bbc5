//===- plan.h - the plan container: checked on load ------------------------===//
//
// A plan file is a 32-byte header followed by a FlatBuffers payload
// (schema/plan.fbs):
//   bytes 0-7   magic "SLPLAN\0\1"
//   bytes 8-11  format version (little-endian u32), kPlanVersion
//   bytes 12-15 zero
//   bytes 16-23 payload size in bytes (u64)
//   bytes 24-31 FNV-1a 64 of the payload: the plan's content hash, which
//               ranks compare before they run
// Loading checks each in turn, then the FlatBuffers verifier (bounds,
// schema), then the plan's own consistency: the mesh (distinct named axes,
// at most kMaxRanks ranks), every tensor (dtype, role, a bounded shape, a
// layout that fits the mesh and the shape, arena offsets inside the arena),
// every op's operand and result indices and names (each value defined once,
// before it is read), the model facts. Whether the runtime has a kernel for
// every op, and whether the op meets that kernel's contract, is the
// executor's check (exec/verify.h).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_PLAN_H
#define SHARDLINE_RUNTIME_CORE_PLAN_H

#include "core/buffer.h"
#include "core/layout.h"
#include "plan_generated.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

/// 2: ops carry operand and result names and every attribute (defaults
/// included); the plan states the model's vocabulary.
constexpr uint32_t kPlanVersion = 2;
constexpr size_t kPlanHeaderBytes = 32;

/// Bounds a plan must keep so that no count of ranks, elements or bytes the
/// runtime forms overflows, and no loop over ranks runs for long: the ranks
/// of the mesh and a tensor's bytes are the compiler's own limits (core/layout.h),
/// so every plan the compiler writes loads; a tensor's rank is at most 8.
constexpr int64_t kMaxRanks = kMaxMeshRanks;
constexpr size_t kMaxTensorRank = 8;
/// Elements of 8 bytes (the widest dtype) within kMaxTensorBytes.
constexpr int64_t kMaxTensorElements = kMaxTensorBytes / 8;

uint64_t fnv1a64(const void *data, size_t size);

/// Header + payload, ready to write to a .slp file.
std::vector<uint8_t> wrapPlan(const uint8_t *payload, size_t size);

struct LoadedPlan {
  std::vector<uint8_t> bytes;
  uint64_t hash = 0;
  const plan::Plan *root() const { return plan::GetPlan(bytes.data() + kPlanHeaderBytes); }
  int64_t ranks() const;
};

/// Checks and loads a plan; on failure returns nullopt and says why in `error`.
std::optional<LoadedPlan> loadPlan(std::vector<uint8_t> bytes, std::string &error);
std::optional<LoadedPlan> loadPlanFile(const std::string &path, std::string &error);

/// A standalone executable is shardline-run followed by this tail: the plan
/// file, its size (u64) and an 8-byte marker. shardline-compile --emit exe
/// writes it, embeddedPlan reads it back.
std::vector<uint8_t> executableTail(const std::vector<uint8_t> &planFile);

/// The plan appended to the executable at `path`, or an empty vector when it
/// carries none.
std::vector<uint8_t> embeddedPlan(const std::string &path);

/// The layout of a plan tensor in the terms of core/layout.h.
Layout layoutOf(const plan::Tensor &tensor);

/// Bytes of one element of `t` as the plan counts them.
int64_t elementBytes(plan::DType t);

/// The runtime's element type of a plan tensor's.
DType dtypeOf(plan::DType t);

} // namespace shardline::rt

#endif
