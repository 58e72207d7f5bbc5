//===- cpu_kernels.cpp - the CPU backend's kernel table ---------------------===//
//
// The table of every op kind the CPU backend runs, assembled from the files
// under kernels/cpu/ (each adds the entries of its ops; the build lists the
// files in cpu_kernel_files.inc) and the layout transitions, which are the
// collectives' own.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/table.h"

#include <cstdio>
#include <cstdlib>

namespace shardline::rt {

#define SHARDLINE_CPU_KERNEL_FILE(file) SHARDLINE_CPU_KERNELS(file);
#include "cpu_kernel_files.inc"
#undef SHARDLINE_CPU_KERNEL_FILE

void addKernel(KernelTable &t, const char *kind, KernelSpec spec) {
  if (!t.emplace(kind, std::move(spec)).second) {
    std::fprintf(stderr, "shardline: two CPU kernel files add op kind '%s'\n", kind);
    std::abort();
  }
}

namespace {

// -- layout transitions ---------------------------------------------------

void transition(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]], &out = f.tensors[s.out[0]];
  f.collectives->transition(2 * s.index, out.shape, x.layout, out.layout, f.moved(s.in[0]),
                            f.moved(s.out[0]), x.elementBytes());
}

void allReduce(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]], &out = f.tensors[s.out[0]];
  if (x.layout.partial.empty())
    return transition(s, f);
  f.collectives->allReduce(s.index, x.shape, x.layout, out.layout, f.f(s.in[0]), f.f(s.out[0]),
                           x.elementBytes());
}

KernelTable makeTable() {
  KernelTable t;
#define SHARDLINE_CPU_KERNEL_FILE(file) addCpuKernels_##file(t);
#include "cpu_kernel_files.inc"
#undef SHARDLINE_CPU_KERNEL_FILE
  // The sums (reduce_scatter, all_reduce) take float tensors only: an integer
  // tensor carries no pending sum.
  for (const char *kind : {"all_gather", "all_to_all", "slice", "reorder", "relayout"})
    addKernel(t, kind, {{"x"}, kResult, {}, transition, nullptr, checkTransition, true});
  addKernel(t, "reduce_scatter", {{"x"}, kResult, {}, transition, nullptr, checkTransition});
  addKernel(t, "all_reduce", {{"x"}, kResult, {}, allReduce, nullptr, checkTransition});
  return t;
}

} // namespace

const Backend &cpuBackend() {
  static const KernelTable table = makeTable();
  static const Backend backend{"cpu", table, [](int64_t) -> std::unique_ptr<Device> {
                                 return std::make_unique<CpuDevice>();
                               }};
  return backend;
}

} // namespace shardline::rt
