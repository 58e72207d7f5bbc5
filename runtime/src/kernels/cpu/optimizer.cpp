//===- optimizer.cpp - AdamW with global-norm gradient clipping -----------===//

#include "exec/verify.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>

namespace shardline::rt::cpu {

double clip_scale(double sumsq, double clip) {
  return clip > 0 ? std::min(1.0, clip / (std::sqrt(sumsq) + 1e-6)) : 1.0;
}

void adamw(float *w, const float *grad, float *m, float *v, int64_t n, const AdamWStep &p) {
  double t = static_cast<double>(p.step);
  double c1 = 1.0 - std::pow(p.beta1, t), c2 = 1.0 - std::pow(p.beta2, t);
  for (int64_t i = 0; i < n; ++i) {
    double g = p.grad_scale * grad[i], wi = w[i];
    double mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    double vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    w[i] = static_cast<float>(
        wi - p.lr * (mi / c1 / (std::sqrt(vi / c2) + p.eps) + p.weight_decay * wi));
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { kWeight, kGrad, kM, kV, kSumsq };

/// Updates this rank's part of the weight and its moments in place; the
/// hyperparameters and the step come from the run (Frame::train), and a run
/// that does not train leaves them as they are.
void adamW(const Step &s, Frame &f) {
  if (!f.train)
    return;
  const TrainOptions &o = *f.train;
  if (f.trainStep < 1)
    throw adamwStepStop(f.trainStep);
  double sumsq = f.f(s.in[kSumsq])[0];
  if (!std::isfinite(sumsq))
    throw adamwSumsqStop(f.tensors[s.in[kSumsq]].name, sumsq, f.trainStep);
  cpu::AdamWStep p{o.lrAt(f.trainStep - 1),
                   o.beta1,
                   o.beta2,
                   o.eps,
                   s.attrs[0].i ? o.weightDecay : 0.0,
                   f.trainStep,
                   cpu::clip_scale(sumsq, o.clipGrad)};
  cpu::adamw(f.f(s.in[kWeight]), f.f(s.in[kGrad]), f.f(s.in[kM]), f.f(s.in[kV]), f.n(s.in[kWeight]),
             p);
}

/// weight, grad, m and v of one shape, sumsq a scalar; the values updated
/// in place are f32, since a 16-bit tensor's view is a copy that the
/// executor does not store back for an operand.
void checkAdamW(Contract &c) {
  for (size_t i : {kGrad, kM, kV})
    c.sameShape(operand(i), operand(kWeight));
  c.elements(operand(kSumsq), 1, "the scalar sum of squares");
  for (size_t i : {kWeight, kM, kV})
    c.require(c.tensor(operand(i)).dtype == DType::F32,
              c.name(operand(i)) + " is " + dtypeName(c.tensor(operand(i)).dtype) +
                  ": sl.adamw updates f32 weights and moments only (training is f32 for now)");
}

} // namespace

SHARDLINE_CPU_KERNELS(optimizer) {
  addKernel(t, "adamw",
            {{"weight", "grad", "m", "v", "sumsq"},
             {},
             {{"decay", AttrKind::Int}},
             adamW,
             nullptr,
             checkAdamW});
}

} // namespace shardline::rt
