//===- optimizer.cpp - AdamW with global-norm gradient clipping -----------===//

#include "core/buffer.h"
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

enum { kWeight, kGrad, kM, kV, kSumsq, kMain };

/// A step with a main copy reads its 16-bit weight and gradient as stored
/// (KernelSpec::keeps16): the weight is written in place, which the
/// executor's widened copy of an operand would not carry back.
bool keepsMainStep(const Step &s, const Frame &) { return s.has(kMain); }

/// Updates this rank's part of the weight and its moments in place; the
/// hyperparameters and the step come from the run (Frame::train), and a run
/// that does not train leaves them as they are. With a main copy the update
/// applies to it, and the 16-bit weight becomes it rounded to nearest even.
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
  int64_t n = f.n(s.in[kWeight]);
  if (!s.has(kMain)) {
    cpu::adamw(f.f(s.in[kWeight]), f.f(s.in[kGrad]), f.f(s.in[kM]), f.f(s.in[kV]), n, p);
    return;
  }
  // The gradient as stored: f32 (sl-autodiff's), or the weight's type widened.
  const BufferView &stored = f.stored(s.in[kGrad]);
  std::vector<float> wide;
  if (stored.dtype != DType::F32) {
    wide.resize(n);
    convertOnHost(stored, BufferView(wide.data(), n));
  }
  const float *grad = wide.empty() ? stored.f32() : wide.data();
  float *main = f.f(s.in[kMain]);
  cpu::adamw(main, grad, f.f(s.in[kM]), f.f(s.in[kV]), n, p);
  convertOnHost(BufferView(main, n), f.stored(s.in[kWeight]));
}

/// weight, grad, m, v (and main) of one shape, sumsq a scalar. m and v are
/// f32; so is the weight, updated in place, unless the step has its main
/// copy: then the weight is 16-bit, the main copy f32 and the gradient of
/// the weight's type or f32.
void checkAdamW(Contract &c) {
  for (size_t i : {kGrad, kM, kV})
    c.sameShape(operand(i), operand(kWeight));
  c.elements(operand(kSumsq), 1, "the scalar sum of squares");
  auto dtype = [&](size_t i) { return c.tensor(operand(i)).dtype; };
  auto is = [&](size_t i) { return c.name(operand(i)) + " is " + dtypeName(dtype(i)); };
  for (size_t i : {kM, kV})
    c.require(dtype(i) == DType::F32, is(i) + ": AdamW's moments are f32");
  if (!c.has(operand(kMain))) {
    for (size_t i : {kWeight, kGrad})
      c.require(dtype(i) == DType::F32,
                is(i) + ": sl.adamw without a main copy updates an f32 weight from an f32 gradient "
                        "(a 16-bit weight needs its f32 main copy, operand main)");
    return;
  }
  c.sameShape(operand(kMain), operand(kWeight));
  c.require(dtype(kMain) == DType::F32, is(kMain) + ": the main copy is f32");
  c.require(dtype(kWeight) == DType::BF16 || dtype(kWeight) == DType::F16,
            is(kWeight) + ": a main copy is for a 16-bit weight");
  c.require(dtype(kGrad) == dtype(kWeight) || dtype(kGrad) == DType::F32,
            is(kGrad) + ": the gradient is of the weight's type or f32");
}

} // namespace

SHARDLINE_CPU_KERNELS(optimizer) {
  addKernel(t, "adamw",
            {{"weight", "grad", "m", "v", "sumsq", "main?"},
             {},
             {{"decay", AttrKind::Int}},
             adamW,
             nullptr,
             checkAdamW,
             false,
             keepsMainStep});
}

} // namespace shardline::rt
