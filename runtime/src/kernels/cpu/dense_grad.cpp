//===- dense_grad.cpp - Backward of norms, GEMMs, elementwise, embedding --===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace shardline::rt::cpu {

void rms_norm_grad(const float *x, const float *w, const float *dy, int64_t T, int64_t H, float eps,
                   float *dx) {
  for (int64_t t = 0; t < T; ++t) {
    const float *xr = x + t * H, *dyr = dy + t * H;
    double r = detail::inverse_rms(xr, H, eps), dot = 0.0;
    for (int64_t h = 0; h < H; ++h)
      dot += static_cast<double>(xr[h]) * w[h] * dyr[h];
    double coupling = r * r * r * dot / H;
    for (int64_t h = 0; h < H; ++h)
      dx[t * H + h] = static_cast<float>(r * w[h] * dyr[h] - xr[h] * coupling);
  }
}

void rms_norm_grad_weight(const float *x, const float *dy, int64_t T, int64_t H, float eps,
                          float *dw) {
  std::vector<double> acc(H, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const float *xr = x + t * H, *dyr = dy + t * H;
    double r = detail::inverse_rms(xr, H, eps);
    for (int64_t h = 0; h < H; ++h)
      acc[h] += static_cast<double>(dyr[h]) * xr[h] * r;
  }
  for (int64_t h = 0; h < H; ++h)
    dw[h] = static_cast<float>(acc[h]);
}

void linear_grad(const float *dy, const float *w, int64_t T, int64_t K, int64_t N, float *dx) {
  detail::gemm(false, true, T, K, N, 1.0f, dy, N, w, N, 0.0f, dx, K);
}

void linear_grad_weight(const float *x, const float *dy, int64_t T, int64_t K, int64_t N,
                        float *dw) {
  detail::gemm(true, false, K, N, T, 1.0f, x, K, dy, N, 0.0f, dw, N);
}

namespace {
/// dx = dy * f'(x), f' evaluated in double.
template <typename F> void mapGrad(const float *x, const float *dy, int64_t n, float *dx, F df) {
  for (int64_t i = 0; i < n; ++i)
    dx[i] = static_cast<float>(static_cast<double>(dy[i]) * df(static_cast<double>(x[i])));
}

double siluDerivative(double x) {
  double s = detail::sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}
} // namespace

void swiglu_grad(const float *lhs, const float *rhs, const float *dy, int64_t n, float *dlhs,
                 float *drhs) {
  for (int64_t i = 0; i < n; ++i) {
    double g = lhs[i], u = rhs[i], d = dy[i];
    dlhs[i] = static_cast<float>(d * u * siluDerivative(g));
    drhs[i] = static_cast<float>(d * detail::silu(g));
  }
}

void silu_grad(const float *x, const float *dy, int64_t n, float *dx) {
  mapGrad(x, dy, n, dx, siluDerivative);
}

void gelu_grad(const float *x, const float *dy, int64_t n, float *dx) {
  constexpr double kInvSqrt2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
  mapGrad(x, dy, n, dx, [](double v) {
    return 0.5 * (1.0 + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5 * v * v);
  });
}

void sigmoid_grad(const float *x, const float *dy, int64_t n, float *dx) {
  mapGrad(x, dy, n, dx, [](double v) {
    double s = detail::sigmoid(v);
    return s * (1.0 - s);
  });
}

void softplus_grad(const float *x, const float *dy, int64_t n, float *dx) {
  mapGrad(x, dy, n, dx, detail::sigmoid);
}

double sum_squares(const float *x, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i)
    total += static_cast<double>(x[i]) * x[i];
  return total;
}

void embedding_grad(const int32_t *ids, const float *dy, int64_t T, int64_t Vl, int64_t H,
                    int64_t vocab_offset, float *dtable) {
  std::vector<double> acc(Vl * H, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    int64_t row = static_cast<int64_t>(ids[t]) - vocab_offset;
    if (row < 0 || row >= Vl)
      continue;
    for (int64_t h = 0; h < H; ++h)
      acc[row * H + h] += dy[t * H + h];
  }
  std::transform(acc.begin(), acc.end(), dtable, [](double v) { return static_cast<float>(v); });
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

void rmsNormGrad(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back();
  cpu::rms_norm_grad(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.n(s.out[0]) / h, h,
                     (float)s.attrs[0].f, f.f(s.out[0]));
}

void rmsNormGradWeight(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back();
  cpu::rms_norm_grad_weight(f.f(s.in[0]), f.f(s.in[1]), f.n(s.in[0]) / h, h, (float)s.attrs[0].f,
                            f.f(s.out[0]));
}

void linearGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.in[1]);
  cpu::linear_grad(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]) / w[0], w[0], w[1], f.f(s.out[0]));
}

void linearGradWeight(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.out[0]);
  cpu::linear_grad_weight(f.f(s.in[0]), f.f(s.in[1]), f.n(s.in[0]) / w[0], w[0], w[1],
                          f.f(s.out[0]));
}

void swigluGrad(const Step &s, Frame &f) {
  cpu::swiglu_grad(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), f.n(s.in[0]), f.f(s.out[0]),
                   f.f(s.out[1]));
}

void sumSquares(const Step &s, Frame &f) {
  f.f(s.out[0])[0] = static_cast<float>(cpu::sum_squares(f.f(s.in[0]), f.n(s.in[0])));
}

void embeddingGrad(const Step &s, Frame &f) {
  int32_t ids = s.in[0], dy = s.in[1], table = s.in[2];
  requireIdsInRange(f, ids, f.global(table)[0], "the embedding table's rows");
  cpu::embedding_grad(f.ids(ids), f.f(dy), f.n(ids), f.local(table)[0], f.local(table)[1],
                      s.facts.vocabOffset, f.f(s.out[0]));
}

// -- contracts --------------------------------------------------------------

/// Every operand and result of an elementwise gradient has operand 0's
/// shape.
void checkElementwiseGrad(Contract &c) {
  for (size_t i = 1; i < c.step.in.size(); ++i)
    c.sameShape(operand(i), operand(0));
  for (size_t i = 0; i < c.step.out.size(); ++i)
    c.sameShape(result(i), operand(0));
}

void checkEpsAttr(Contract &c) { c.require(c.floatAttr(0) >= 0, "attribute 'eps' is negative"); }

/// x[.., H], weight[H], dy and dx of x's shape.
void checkRmsNormGrad(Contract &c) {
  Contract::Arg x = operand(0), weight = operand(1);
  c.rankAtLeast(x, 1).rank(weight, 1).sameDim(weight, 0, x, -1);
  c.sameShape(operand(2), x).sameShape(result(0), x);
  checkEpsAttr(c);
}

/// x[.., H], dy of x's shape, dweight[H].
void checkRmsNormGradWeight(Contract &c) {
  Contract::Arg x = operand(0), dweight = result(0);
  c.rankAtLeast(x, 1).sameShape(operand(1), x).rank(dweight, 1).sameDim(dweight, 0, x, -1);
  checkEpsAttr(c);
}

/// a[.., *] and b[.., *] of one rank with the same leading dimensions.
void checkSameLead(Contract &c, Contract::Arg a, Contract::Arg b) {
  c.rankAtLeast(a, 1).rank(b, c.local(a).size());
  for (int d = 0; d + 1 < (int)c.local(a).size(); ++d)
    c.sameDim(b, d, a, d);
}

/// dy[.., N] . weight[K, N]^T -> dx[.., K].
void checkLinearGrad(Contract &c) {
  Contract::Arg dy = operand(0), weight = operand(1), dx = result(0);
  checkSameLead(c, dy, dx);
  c.rank(weight, 2).sameDim(weight, 1, dy, -1).sameDim(dx, -1, weight, 0);
}

/// x[.., K]^T . dy[.., N] -> dweight[K, N].
void checkLinearGradWeight(Contract &c) {
  Contract::Arg x = operand(0), dy = operand(1), dweight = result(0);
  checkSameLead(c, x, dy);
  c.rank(dweight, 2).sameDim(dweight, 0, x, -1).sameDim(dweight, 1, dy, -1);
}

void checkSumSquares(Contract &c) { c.elements(result(0), 1, "a scalar"); }

/// ids[B, S], dy[B, S, H], table and dtable [V, H]; the table's values are
/// not read, its shape is dtable's.
void checkEmbeddingGrad(Contract &c) {
  Contract::Arg ids = operand(0), dy = operand(1), table = operand(2);
  c.rank(ids, 2).rank(dy, 3).sameDim(dy, 0, ids, 0).sameDim(dy, 1, ids, 1);
  c.rank(table, 2).sameDim(dy, 2, table, 1).sameShape(result(0), table);
}

} // namespace

SHARDLINE_CPU_KERNELS(dense_grad) {
  const std::vector<std::string> xdy = {"x", "dy"}, dx = {"dx"}, dweight = {"dweight"};
  const AttrSpec eps{"eps", AttrKind::Float};
  addKernel(t, "rms_norm_grad",
            {{"x", "weight", "dy"}, dx, {eps}, rmsNormGrad, nullptr, checkRmsNormGrad});
  addKernel(t, "rms_norm_grad_weight",
            {xdy, dweight, {eps}, rmsNormGradWeight, nullptr, checkRmsNormGradWeight});
  addKernel(t, "linear_grad", {{"dy", "weight"}, dx, {}, linearGrad, nullptr, checkLinearGrad});
  addKernel(t, "linear_grad_weight",
            {xdy, dweight, {}, linearGradWeight, nullptr, checkLinearGradWeight});
  addKernel(
      t, "swiglu_grad",
      {{"lhs", "rhs", "dy"}, {"dlhs", "drhs"}, {}, swigluGrad, nullptr, checkElementwiseGrad});
  addKernel(t, "silu_grad", {xdy, dx, {}, binary<cpu::silu_grad>, nullptr, checkElementwiseGrad});
  addKernel(t, "gelu_grad", {xdy, dx, {}, binary<cpu::gelu_grad>, nullptr, checkElementwiseGrad});
  addKernel(t, "sigmoid_grad",
            {xdy, dx, {}, binary<cpu::sigmoid_grad>, nullptr, checkElementwiseGrad});
  addKernel(t, "softplus_grad",
            {xdy, dx, {}, binary<cpu::softplus_grad>, nullptr, checkElementwiseGrad});
  addKernel(t, "sum_squares", {{"x"}, kResult, {}, sumSquares, nullptr, checkSumSquares});
  addKernel(t, "embedding_grad",
            {{"ids", "dy", "table"},
             {"dtable"},
             {},
             embeddingGrad,
             resolveTableOffset<2>,
             checkEmbeddingGrad});
}

} // namespace shardline::rt
