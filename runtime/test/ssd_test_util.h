//===- ssd_test_util.h - SSD scan shapes, inputs and the CPU's walk -------===//
//
// What the CUDA SSD scan's tests share (cuda_arith_test.cpp on the host,
// cuda_kernels_test.cpp on a GPU): the shapes they run, random inputs for
// one, and the CPU kernels run over it as the CPU table walks a sequence
// cut into chunks.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_TEST_SSD_TEST_UTIL_H
#define SHARDLINE_RUNTIME_TEST_SSD_TEST_UTIL_H

#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"

#include <cstdint>
#include <vector>

namespace shardline::rt::test {

/// A shape of the SSD scan: B batch entries of S tokens cut into `chunks`
/// sequences (the state slots of context parallelism), NH heads of head
/// dim P in G groups of state size N, with or without state_in and D.
struct SsdShape {
  int64_t B, S, chunks, NH, P, G, N;
  bool withState, withD;
};

/// Sequences not a multiple of the 64-token chunk, a chunk exactly full,
/// three sequences of a batch entry in their own slots, one group for
/// several heads, P and N not powers of two, below one 32-wide tile and just
/// over one or two, state_in and D present and absent; and one of a model's
/// sizes (P 64, N 128).
inline std::vector<SsdShape> ssdShapes() {
  return {{2, 200, 1, 4, 24, 2, 40, true, true}, {1, 70, 1, 3, 5, 1, 7, false, false},
          {2, 270, 3, 2, 33, 2, 65, true, true}, {1, 128, 2, 2, 32, 1, 32, false, true},
          {2, 6, 2, 2, 1, 2, 1, true, true},     {2, 300, 1, 8, 64, 2, 128, true, true}};
}

/// The scan's inputs: x [B, S, NH*P], dt [B, S, NH] before the prelude,
/// dt_bias, a_log and D [NH], B and C [B, S, G*N], state_in
/// [chunks*B, NH, P, N].
struct SsdData {
  Vec x, dt, dtBias, aLog, Bm, Cm, D, stateIn;
};

inline SsdData ssdData(const SsdShape &c, unsigned seed) {
  return {normalVector(c.B * c.S * c.NH * c.P, seed),
          normalVector(c.B * c.S * c.NH, seed + 1),
          normalVector(c.NH, seed + 2, 0.5f),
          normalVector(c.NH, seed + 3, 0.5f),
          normalVector(c.B * c.S * c.G * c.N, seed + 4, 0.5f),
          normalVector(c.B * c.S * c.G * c.N, seed + 5, 0.5f),
          normalVector(c.NH, seed + 6),
          normalVector(c.chunks * c.B * c.NH * c.P * c.N, seed + 7)};
}

/// y [B, S, NH*P], the states [chunks*B, NH, P, N] and decays [chunks*B, NH].
struct SsdResult {
  Vec y, state, decay;
};

/// The CPU table's walk (kernels/cpu/mamba.cpp, ssd<false>): the prelude,
/// then each sequence from its slot (c*B + b), with cpu::ssd_scan in chunks
/// of `chunk` tokens and with its step-by-step reference.
struct SsdOnCpu {
  SsdResult chunked, reference;
};
inline SsdOnCpu ssdOnCpu(const SsdShape &c, const SsdData &in, int64_t chunk) {
  const int64_t L = c.S / c.chunks, PN = c.P * c.N;
  Vec step(in.dt.size()), A(c.NH);
  cpu::ssd_prelude(in.dt.data(), in.dtBias.data(), in.aLog.data(), c.B * c.S, c.NH, step.data(),
                   A.data());
  SsdResult empty{Vec(in.x.size()), Vec(c.chunks * c.B * c.NH * PN), Vec(c.chunks * c.B * c.NH)};
  SsdOnCpu out{empty, empty};
  cpu::SsdDims dims{1, L, c.NH, c.P, c.G, c.N};
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t k = 0; k < c.chunks; ++k) {
      int64_t rows = b * c.S + k * L, slot = k * c.B + b;
      const float *x = in.x.data() + rows * c.NH * c.P, *dt = step.data() + rows * c.NH,
                  *Bm = in.Bm.data() + rows * c.G * c.N, *Cm = in.Cm.data() + rows * c.G * c.N,
                  *D = c.withD ? in.D.data() : nullptr,
                  *stateIn = c.withState ? in.stateIn.data() + slot * c.NH * PN : nullptr;
      auto y = [&](SsdResult &r) { return r.y.data() + rows * c.NH * c.P; };
      auto state = [&](SsdResult &r) { return r.state.data() + slot * c.NH * PN; };
      auto decay = [&](SsdResult &r) { return r.decay.data() + slot * c.NH; };
      cpu::ssd_scan(x, dt, A.data(), Bm, Cm, D, stateIn, dims, y(out.chunked), state(out.chunked),
                    decay(out.chunked), chunk);
      cpu::ssd_scan_reference(x, dt, A.data(), Bm, Cm, D, stateIn, dims, y(out.reference),
                              state(out.reference), decay(out.reference));
    }
  return out;
}

} // namespace shardline::rt::test

#endif
