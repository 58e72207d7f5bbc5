//===- loss.cpp - Vocab-parallel cross-entropy ----------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace shardline::rt::cpu {

void xent_local_max(const float *logits, int64_t T, int64_t Vl, float *max) {
  for (int64_t t = 0; t < T; ++t)
    max[t] = Vl ? *std::max_element(logits + t * Vl, logits + (t + 1) * Vl)
                : -std::numeric_limits<float>::infinity();
}

void xent_local_sumexp(const float *logits, const float *gmax, int64_t T, int64_t Vl, float *sum) {
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0;
    for (int64_t v = 0; v < Vl; ++v)
      s += std::exp(static_cast<double>(logits[t * Vl + v]) - gmax[t]);
    sum[t] = static_cast<float>(s);
  }
}

void xent_local_target(const float *logits, const int32_t *labels, int64_t T, int64_t Vl,
                       int64_t vocab_offset, float *target) {
  for (int64_t t = 0; t < T; ++t) {
    int64_t v = static_cast<int64_t>(labels[t]) - vocab_offset;
    target[t] = v >= 0 && v < Vl ? logits[t * Vl + v] : 0.0f;
  }
}

float xent_loss(const float *gmax, const float *sum, const float *target, int64_t T) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t)
    total += std::log(static_cast<double>(sum[t])) + gmax[t] - target[t];
  return T ? static_cast<float>(total / T) : 0.0f;
}

void xent_combine_max(const float *const *maxes, int64_t shards, int64_t T, float *gmax) {
  std::fill(gmax, gmax + T, -std::numeric_limits<float>::infinity());
  for (int64_t m = 0; m < shards; ++m)
    for (int64_t t = 0; t < T; ++t)
      gmax[t] = std::max(gmax[t], maxes[m][t]);
}

double xent_combine_total(const float *const *pieces, int64_t shards, const float *gmax,
                          int64_t T) {
  double total = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0, target = 0.0;
    for (int64_t m = 0; m < shards; ++m) {
      s += pieces[m][t];
      target += pieces[m][T + t];
    }
    total += std::log(s) + gmax[t] - target;
  }
  return total;
}

float cross_entropy(const float *logits, const int32_t *labels, int64_t T, int64_t V) {
  std::vector<float> max(T), sum(T), target(T);
  xent_local_max(logits, T, V, max.data());
  xent_local_sumexp(logits, max.data(), T, V, sum.data());
  xent_local_target(logits, labels, T, V, 0, target.data());
  return xent_loss(max.data(), sum.data(), target.data(), T);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

void resolveCrossEntropy(Step &s, const Frame &f) {
  s.facts.vocabOffset = f.owned(s.in[0], 2, f.self).front();
  s.facts.members = group(f, s.attrs[0]);
}

std::vector<const float *> memberPieces(const Step &s, const Mail &mail) {
  std::vector<const float *> out;
  for (int64_t m : s.facts.members)
    out.push_back(mail[m].data());
  return out;
}

XentStart xentStart(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]);
  XentStart x{l[0] * l[1], l[2], f.f(s.in[0]), std::vector<float>(l[0] * l[1])};
  requireIdsInRange(f, s.in[1], f.global(s.in[0])[2], "the vocabulary");
  std::vector<float> mx(x.T);
  cpu::xent_local_max(x.logits, x.T, x.V, mx.data());
  // The maxima travel as f32 whatever the logits are.
  Mail maxes = f.collectives->allGather(s.attrs[0].strings, mx, 4);
  cpu::xent_combine_max(memberPieces(s, maxes).data(), (int64_t)s.facts.members.size(), x.T,
                        x.gmax.data());
  return x;
}

namespace {

/// Vocabulary-parallel cross-entropy: per token, the maximum, then the sum of
/// exponentials and the target logit, each combined over the vocabulary's
/// shards. The per-token pieces travel as f32 whatever the logits are.
void crossEntropy(const Step &s, Frame &f) {
  XentStart x = xentStart(s, f);
  int64_t T = x.T;
  std::vector<float> sumTarget(2 * T);
  cpu::xent_local_sumexp(x.logits, x.gmax.data(), T, x.V, sumTarget.data());
  cpu::xent_local_target(x.logits, f.ids(s.in[1]), T, x.V, s.facts.vocabOffset,
                         sumTarget.data() + T);
  Mail pieces = f.collectives->allGather(s.attrs[0].strings, sumTarget, 4);
  double total = cpu::xent_combine_total(memberPieces(s, pieces).data(),
                                         (int64_t)s.facts.members.size(), x.gmax.data(), T);
  const std::vector<int64_t> &global = f.global(s.in[0]);
  f.f(s.out[0])[0] = (float)(total / (double)(global[0] * global[1]));
}

} // namespace

// -- contracts --------------------------------------------------------------

/// logits[B, S, V] and labels[B, S].
void checkCrossEntropy(Contract &c) {
  Contract::Arg logits = operand(0), labels = operand(1);
  c.rank(logits, 3).rank(labels, 2).sameDim(labels, 0, logits, 0).sameDim(labels, 1, logits, 1);
}

SHARDLINE_CPU_KERNELS(loss) {
  addKernel(t, "cross_entropy",
            {{"logits", "labels"},
             {"loss"},
             {{"vocab_axes", AttrKind::Strings}},
             crossEntropy,
             resolveCrossEntropy,
             checkCrossEntropy});
}

} // namespace shardline::rt
