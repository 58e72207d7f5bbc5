//===- ssd_contract.h - The SSD scan ops' shared operand contract -*- C++ -*-===//
//
// The forward scan, its correction and its backward ops read the same
// operands (x or y0, dt, a_log, C, dt_bias) with the attributes heads and
// groups first; one check of their shapes serves them all (mamba.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_SSD_CONTRACT_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_SSD_CONTRACT_H

#include "exec/verify.h"

#include <cstdint>

namespace shardline::rt {

/// A rank's local extents of an SSD scan op.
struct SsdLocal {
  int64_t heads = 0, headDim = 0, groups = 0, state = 0;
};

/// x [B, S, NH*P], dt [B, S, NH], C [B, S, G*N], a_log and dt_bias [NH],
/// attributes 0 (heads) and 1 (groups) dividing x's and C's widths, the
/// rank's heads in whole groups. Returns the local extents when they hold.
SsdLocal checkSsdOperands(Contract &c, Contract::Arg x, Contract::Arg dt, Contract::Arg aLog,
                          Contract::Arg cm, Contract::Arg dtBias);

} // namespace shardline::rt

#endif // SHARDLINE_RUNTIME_KERNELS_CPU_SSD_CONTRACT_H
