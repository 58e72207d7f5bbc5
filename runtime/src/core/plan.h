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
// schema), then the plan's own consistency (indices, mesh, layouts, ops).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_PLAN_H
#define SHARDLINE_RUNTIME_CORE_PLAN_H

#include "core/layout.h"
#include "plan_generated.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

constexpr uint32_t kPlanVersion = 1;
constexpr size_t kPlanHeaderBytes = 32;

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

/// A standalone executable is shardline-run with a plan file appended, then
/// the plan's size (u64) and this 8-byte marker.
constexpr char kExecutableMarker[9] = "SLEXEC01";

/// The plan appended to the executable at `path`, or an empty vector when it
/// carries none.
std::vector<uint8_t> embeddedPlan(const std::string &path);

/// The layout of a plan tensor in the terms of core/layout.h.
Layout layoutOf(const plan::Tensor &tensor);

/// Bytes of one element of `t` as the plan counts them.
int64_t elementBytes(plan::DType t);

/// The op kinds this runtime knows (the sl ops a plan may contain).
bool knownOpKind(const std::string &kind);

} // namespace shardline::rt

#endif
