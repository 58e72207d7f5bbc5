//===- table.h - How a CPU kernel file adds its table entries ---*- C++ -*-===//
//
// Each file under kernels/cpu/ holds the reference numerics of some ops and,
// below them, those ops' entries in the CPU kernel table: the operand, result
// and attribute names each binds, the adapter from a step to the numerics,
// and the rank facts it resolves at load. The file ends with
//
//   SHARDLINE_CPU_KERNELS(<file name>) { addKernel(t, "<kind>", {...}); ... }
//
// and the build lists the files, so a new file joins the table without an
// edit anywhere else (exec/cpu_kernels.cpp assembles it).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_TABLE_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_TABLE_H

#include "exec/collectives.h"
#include "exec/program.h"

#include <string>
#include <vector>

/// Defines the function through which kernels/cpu/<file>.cpp adds its
/// entries to the table `t`.
#define SHARDLINE_CPU_KERNELS(file) void addCpuKernels_##file(KernelTable &t)

namespace shardline::rt {

/// Adds the entry of op kind `kind`; a kind two files claim is a build
/// mistake that every run reports at startup.
void addKernel(KernelTable &t, const char *kind, KernelSpec spec);

/// The result name of the ops with one result.
inline const std::vector<std::string> kResult = {"result"};

/// Sequence chunks of a local [batch, seq, ...] value: two per rank in zigzag
/// order, else one.
inline int64_t chunksOf(const TensorInfo &t) { return chunksPerRank(t.layout, 1); }

/// Calls fn(row, b, c) for every sequence chunk c of every batch entry b of
/// a local [batch, seq, ...] value: its chunks (when `chunked`, else the whole
/// local sequence) and the first row of each. Chunk summaries (states, halos)
/// are indexed by (b, c).
template <typename Fn> void forEachChunk(const TensorInfo &x, bool chunked, Fn fn) {
  int64_t k = chunked ? chunksOf(x) : 1, length = x.local[1] / k;
  for (int64_t b = 0; b < x.local[0]; ++b)
    for (int64_t c = 0; c < k; ++c)
      fn(b * x.local[1] + c * length, b, c);
}

/// This rank's group over the mesh axes an attribute names.
inline std::vector<int64_t> group(const Frame &f, const AttrValue &axes) {
  return f.mesh.group(f.self, axes.strings);
}

class Contract;
/// The contract of an attention op (attention.cpp) whose operands start with
/// q[B, Sq, HQ*D], k and v [B, Sk, HKV*D] and whose attribute 0 is `heads`:
/// the heads divide q's width, and the kv heads (per rank) divide the query
/// heads. Windowed attention adds its own checks to it.
void checkAttention(Contract &c);

} // namespace shardline::rt

#endif
