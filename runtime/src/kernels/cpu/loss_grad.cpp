//===- loss_grad.cpp - Backward of vocab-parallel cross-entropy -----------===//

#include "exec/verify.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <cmath>
#include <vector>

namespace shardline::rt::cpu {

void xent_combine_sum(const float *const *sums, int64_t shards, int64_t T, float *sum) {
  for (int64_t t = 0; t < T; ++t) {
    double s = 0.0;
    for (int64_t m = 0; m < shards; ++m)
      s += sums[m][t];
    sum[t] = static_cast<float>(s);
  }
}

void xent_grad(const float *logits, const int32_t *labels, const float *gmax, const float *sum,
               int64_t T, int64_t Vl, int64_t vocab_offset, int64_t count, float *dlogits) {
  double inv = 1.0 / static_cast<double>(count);
  for (int64_t t = 0; t < T; ++t) {
    int64_t target = static_cast<int64_t>(labels[t]) - vocab_offset;
    for (int64_t v = 0; v < Vl; ++v) {
      double p = std::exp(static_cast<double>(logits[t * Vl + v]) - gmax[t]) / sum[t];
      dlogits[t * Vl + v] = static_cast<float>((p - (v == target ? 1.0 : 0.0)) * inv);
    }
  }
}

void cross_entropy_grad(const float *logits, const int32_t *labels, int64_t T, int64_t V,
                        float *dlogits) {
  std::vector<float> max(T), sum(T);
  xent_local_max(logits, T, V, max.data());
  xent_local_sumexp(logits, max.data(), T, V, sum.data());
  xent_grad(logits, labels, max.data(), sum.data(), T, V, 0, T, dlogits);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// The forward's maximum and sum of exponentials, combined over the
/// vocabulary's shards, then each shard's own columns of the gradient of
/// the mean over the whole batch's tokens.
void crossEntropyGrad(const Step &s, Frame &f) {
  XentStart x = xentStart(s, f);
  std::vector<float> local(x.T), sum(x.T);
  cpu::xent_local_sumexp(x.logits, x.gmax.data(), x.T, x.V, local.data());
  Mail sums = f.collectives->allGather(s.attrs[0].strings, local, 4);
  cpu::xent_combine_sum(memberPieces(s, sums).data(), (int64_t)s.facts.members.size(), x.T,
                        sum.data());
  const std::vector<int64_t> &global = f.global(s.in[0]);
  cpu::xent_grad(x.logits, f.ids(s.in[1]), x.gmax.data(), sum.data(), x.T, x.V, s.facts.vocabOffset,
                 global[0] * global[1], f.f(s.out[0]));
}

/// Cross-entropy's operands and dlogits of the logits' shape.
void checkCrossEntropyGrad(Contract &c) {
  checkCrossEntropy(c);
  c.sameShape(result(0), operand(0));
}

} // namespace

SHARDLINE_CPU_KERNELS(loss_grad) {
  addKernel(t, "cross_entropy_grad",
            {{"logits", "labels"},
             {"dlogits"},
             {{"vocab_axes", AttrKind::Strings}},
             crossEntropyGrad,
             resolveCrossEntropy,
             checkCrossEntropyGrad});
}

} // namespace shardline::rt
