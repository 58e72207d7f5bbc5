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

// The dual of scan_combine_states: each chunk's initial-state gradient
// flows to the summaries of the chunks before it, from the last chunk to the
// first.
void scan_combine_states_grad(const float *decay, const float *chunk_init, const float *dchunk_init,
                              const float *dtotal_final, int64_t chunks, int64_t nd, int64_t bcast,
                              float *dfinal, float *ddecay, float *dinit) {
  const int64_t size = nd * bcast;
  // g: the gradient of the state entering chunk i + 1 (after the last chunk:
  // the total final state's).
  std::vector<double> g(size, 0.0);
  if (dtotal_final)
    for (int64_t j = 0; j < size; ++j)
      g[j] = dtotal_final[j];
  for (int64_t i = chunks - 1; i >= 0; --i) {
    for (int64_t e = 0; e < nd; ++e) {
      const double a = decay[i * nd + e];
      double acc = 0.0;
      for (int64_t j = e * bcast; j < (e + 1) * bcast; ++j) {
        dfinal[i * size + j] = static_cast<float>(g[j]);
        acc += g[j] * chunk_init[i * size + j];
        g[j] = dchunk_init[i * size + j] + a * g[j];
      }
      ddecay[i * nd + e] = static_cast<float>(acc);
    }
  }
  if (dinit)
    for (int64_t j = 0; j < size; ++j)
      dinit[j] = static_cast<float>(g[j]);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// The group, the chunks each member holds of operand `Gathered` (what the
/// exchange all-gathers), and this rank's chunks of the result.
template <int Gathered> void resolveStateExchange(Step &s, const Frame &f) {
  s.facts.members = group(f, s.attrs[0]);
  for (int64_t m : s.facts.members)
    s.facts.memberPositions.push_back(f.owned(s.in[Gathered], 0, m));
  s.facts.positions = f.owned(s.out[0], 0, f.self);
}

/// All chunks of `gathered` and `dec` (the decays), in sequence order, from
/// every member's local chunks: one all-gather over the group, counted at
/// the tensors' element sizes as the report counts them. Returns the
/// chunks' values and decays, `chunkSize` and `decaySize` per chunk.
std::pair<std::vector<float>, std::vector<float>> gatherChunks(const Step &s, Frame &f,
                                                               int32_t gathered, int32_t dec,
                                                               int64_t &chunkSize,
                                                               int64_t &decaySize) {
  int64_t chunks = f.global(gathered)[0];
  chunkSize = f.n(gathered) / f.local(gathered)[0];
  decaySize = f.n(dec) / f.local(gathered)[0];
  std::vector<float> mine(f.f(gathered), f.f(gathered) + f.n(gathered));
  mine.insert(mine.end(), f.f(dec), f.f(dec) + f.n(dec));
  Mail all = f.collectives->allGather(s.attrs[0].strings, mine, 0);
  f.collectives->count(((int64_t)s.facts.members.size() - 1) *
                       (f.n(gathered) * f.tensors[gathered].elementBytes() +
                        f.n(dec) * f.tensors[dec].elementBytes()));
  std::vector<float> values(chunks * chunkSize), decays(chunks * decaySize);
  for (size_t i = 0; i < s.facts.members.size(); ++i) {
    const std::vector<float> &theirs = all[s.facts.members[i]];
    const std::vector<int64_t> &slots = s.facts.memberPositions[i];
    for (size_t j = 0; j < slots.size(); ++j) {
      std::copy_n(theirs.data() + j * chunkSize, chunkSize, values.data() + slots[j] * chunkSize);
      std::copy_n(theirs.data() + f.n(gathered) + j * decaySize, decaySize,
                  decays.data() + slots[j] * decaySize);
    }
  }
  return {std::move(values), std::move(decays)};
}

/// Every chunk's true initial state from all chunks' (state, decay)
/// summaries, in sequence order.
void stateExchange(const Step &s, Frame &f) {
  int64_t stateSize, decaySize;
  auto [states, decays] = gatherChunks(s, f, s.in[0], s.in[1], stateSize, decaySize);
  int64_t chunks = f.global(s.in[0])[0];
  std::vector<float> init(chunks * stateSize);
  cpu::scan_combine_states(decays.data(), states.data(), nullptr, chunks, decaySize,
                           stateSize / decaySize, init.data(), nullptr);
  for (size_t i = 0; i < s.facts.positions.size(); ++i)
    std::copy_n(init.data() + s.facts.positions[i] * stateSize, stateSize,
                f.f(s.out[0]) + i * stateSize);
}

/// The dual (decays, init, dinit -> dstates, ddecays): every chunk's dinit
/// and decay gathered, the reverse recurrence run over all chunks, this
/// rank's chunks kept. A chunk's decay gradient reads only its own initial
/// state, so the others' are left zero rather than sent.
void stateExchangeGrad(const Step &s, Frame &f) {
  int32_t init = s.in[1];
  int64_t stateSize, decaySize;
  auto [dinit, decays] = gatherChunks(s, f, s.in[2], s.in[0], stateSize, decaySize);
  int64_t chunks = f.global(init)[0];
  std::vector<float> inits(chunks * stateSize, 0.0f), dstates(chunks * stateSize),
      ddecays(chunks * decaySize);
  for (size_t i = 0; i < s.facts.positions.size(); ++i)
    std::copy_n(f.f(init) + i * stateSize, stateSize,
                inits.data() + s.facts.positions[i] * stateSize);
  cpu::scan_combine_states_grad(decays.data(), inits.data(), dinit.data(), nullptr, chunks,
                                decaySize, stateSize / decaySize, dstates.data(), ddecays.data(),
                                nullptr);
  for (size_t i = 0; i < s.facts.positions.size(); ++i) {
    int64_t c = s.facts.positions[i];
    std::copy_n(dstates.data() + c * stateSize, stateSize, f.f(s.out[0]) + i * stateSize);
    std::copy_n(ddecays.data() + c * decaySize, decaySize, f.f(s.out[1]) + i * decaySize);
  }
}

// -- contracts --------------------------------------------------------------

/// states[chunks, ...] and decays[chunks, ...] chunk by chunk, a decay entry
/// scaling a whole block of state entries; `out` is states' shape.
void checkSummaries(Contract &c, Contract::Arg states, Contract::Arg decays, Contract::Arg out) {
  c.rankAtLeast(states, 1).rankAtLeast(decays, 1).sameDim(decays, 0, states, 0);
  c.sameShape(out, states);
  if (!c.ok())
    return;
  c.require(c.global(out)[0] == c.global(states)[0],
            "the result has " + std::to_string(c.global(out)[0]) + " chunks, " + c.name(states) +
                " has " + std::to_string(c.global(states)[0]));
  int64_t chunks = c.dim(states, 0), stateSize = c.count(states) / chunks,
          decaySize = c.count(decays) / chunks;
  c.require(stateSize % decaySize == 0, "a chunk's " + std::to_string(decaySize) +
                                            " decays do not divide its " +
                                            std::to_string(stateSize) + " state entries");
}

void checkStateExchange(Contract &c) { checkSummaries(c, operand(0), operand(1), result(0)); }

/// decays, init and dinit as the forward's decays, result and result;
/// dstates init's shape, ddecays the decays'.
void checkStateExchangeGrad(Contract &c) {
  checkSummaries(c, operand(1), operand(0), result(0));
  c.sameShape(operand(2), operand(1)).sameShape(result(1), operand(0));
}

} // namespace

SHARDLINE_CPU_KERNELS(scan) {
  addKernel(t, "scan_state_exchange",
            {{"states", "decays"},
             kResult,
             {{"axes", AttrKind::Strings}},
             stateExchange,
             resolveStateExchange<0>,
             checkStateExchange});
  addKernel(t, "scan_state_exchange_grad",
            {{"decays", "init", "dinit"},
             {"dstates", "ddecays"},
             {{"axes", AttrKind::Strings}},
             stateExchangeGrad,
             resolveStateExchange<2>,
             checkStateExchangeGrad});
}

} // namespace shardline::rt
