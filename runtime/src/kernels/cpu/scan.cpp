//===- scan.cpp - State passing between sequence chunks of a scan ---------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

namespace shardline::rt::cpu {

void scan_combine_states(const float *decay, const float *final, const float *init, int64_t chunks,
                         int64_t nd, int64_t bcast, float *chunk_init, float *total_final) {
  int64_t size = nd * bcast;
  std::vector<double> cur(size, 0.0);
  if (init)
    std::copy(init, init + size, cur.begin());
  auto store = [&](float *dst) {
    for (int64_t j = 0; j < size; ++j)
      dst[j] = static_cast<float>(cur[j]);
  };
  for (int64_t i = 0; i < chunks; ++i) {
    store(chunk_init + i * size);
    for (int64_t e = 0; e < nd; ++e) {
      const double a = decay[i * nd + e];
      for (int64_t j = e * bcast; j < (e + 1) * bcast; ++j)
        cur[j] = a * cur[j] + final[i * size + j];
    }
  }
  if (total_final)
    store(total_final);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// The group, the chunks each member holds, and this rank's chunks of the
/// result.
void resolveStateExchange(Step &s, const Frame &f) {
  s.facts.members = group(f, s.attrs[0]);
  for (int64_t m : s.facts.members)
    s.facts.memberPositions.push_back(f.owned(s.in[0], 0, m));
  s.facts.positions = f.owned(s.out[0], 0, f.self);
}

/// Every chunk's true initial state from all chunks' (state, decay)
/// summaries, in sequence order.
void stateExchange(const Step &s, Frame &f) {
  int32_t st = s.in[0], dec = s.in[1];
  int64_t chunks = f.global(st)[0];
  int64_t stateSize = f.n(st) / f.local(st)[0], decaySize = f.n(dec) / f.local(st)[0];
  std::vector<float> mine(f.f(st), f.f(st) + f.n(st));
  mine.insert(mine.end(), f.f(dec), f.f(dec) + f.n(dec));
  // The report counts the summaries at their element sizes.
  Mail all = f.collectives->allGather(s.attrs[0].strings, mine, 0);
  f.collectives->count(
      ((int64_t)s.facts.members.size() - 1) *
      (f.n(st) * f.tensors[st].elementBytes() + f.n(dec) * f.tensors[dec].elementBytes()));
  std::vector<float> allStates(chunks * stateSize), allDecays(chunks * decaySize);
  for (size_t i = 0; i < s.facts.members.size(); ++i) {
    const std::vector<float> &theirs = all[s.facts.members[i]];
    const std::vector<int64_t> &slots = s.facts.memberPositions[i];
    for (size_t j = 0; j < slots.size(); ++j) {
      std::copy_n(theirs.data() + j * stateSize, stateSize,
                  allStates.data() + slots[j] * stateSize);
      std::copy_n(theirs.data() + f.n(st) + j * decaySize, decaySize,
                  allDecays.data() + slots[j] * decaySize);
    }
  }
  std::vector<float> init(chunks * stateSize);
  cpu::scan_combine_states(allDecays.data(), allStates.data(), nullptr, chunks, decaySize,
                           stateSize / decaySize, init.data(), nullptr);
  for (size_t i = 0; i < s.facts.positions.size(); ++i)
    std::copy_n(init.data() + s.facts.positions[i] * stateSize, stateSize,
                f.f(s.out[0]) + i * stateSize);
}

// -- contracts --------------------------------------------------------------

/// states[chunks, ...] and decays[chunks, ...] chunk by chunk, a decay entry
/// scaling a whole block of state entries; the result is states' shape.
void checkStateExchange(Contract &c) {
  Contract::Arg states = operand(0), decays = operand(1), out = result(0);
  c.rankAtLeast(states, 1).rankAtLeast(decays, 1).sameDim(decays, 0, states, 0);
  c.sameShape(out, states);
  if (!c.ok())
    return;
  c.require(c.global(out)[0] == c.global(states)[0],
            "the result has " + std::to_string(c.global(out)[0]) + " chunks, states has " +
                std::to_string(c.global(states)[0]));
  int64_t chunks = c.dim(states, 0), stateSize = c.count(states) / chunks,
          decaySize = c.count(decays) / chunks;
  c.require(stateSize % decaySize == 0, "a chunk's " + std::to_string(decaySize) +
                                            " decays do not divide its " +
                                            std::to_string(stateSize) + " state entries");
}

} // namespace

SHARDLINE_CPU_KERNELS(scan) {
  addKernel(t, "scan_state_exchange",
            {{"states", "decays"},
             kResult,
             {{"axes", AttrKind::Strings}},
             stateExchange,
             resolveStateExchange,
             checkStateExchange});
}

} // namespace shardline::rt
