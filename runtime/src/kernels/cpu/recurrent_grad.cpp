//===- recurrent_grad.cpp - Backward of the RG-LRU scan -------------------===//
//
// The vector-Jacobian product of rglru_gates followed by rglru_scan over a
// whole sequence (no state passed in): the scan is recomputed forward, in
// double as the forward kernel runs it, and the cotangent of each state is
// carried backward through the decays.
//
//===----------------------------------------------------------------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace shardline::rt::cpu {

void rglru_scan_grad(const float *x, const float *wa, const float *ba, const float *wx,
                     const float *bx, const float *lambda, const float *dy, int64_t B, int64_t S,
                     int64_t W, float *dx, const RglruParamGrads &dp, float c) {
  std::vector<float> gateA(B * S * W), gateX(B * S * W);
  rglru_gates(x, wa, ba, wx, bx, B * S, W, gateA.data(), gateX.data());
  std::vector<double> base(W), dbase(W, 0.0), dwa(W, 0.0), dba(W, 0.0), dwx(W, 0.0), dbx(W, 0.0);
  for (int64_t w = 0; w < W; ++w)
    base[w] = c * detail::log_sigmoid(lambda[w]);
  // h[t] is the state after token t; h[-1] = 0.
  std::vector<double> h(S * W), carry(W);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row0 = b * S * W;
    for (int64_t t = 0; t < S; ++t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        const double la = detail::sigmoid(gateA[i]) * base[w];
        const double prev = t ? h[(t - 1) * W + w] : 0.0;
        h[t * W + w] = std::exp(la) * prev +
                       std::sqrt(-std::expm1(2.0 * la)) * detail::sigmoid(gateX[i]) * x[i];
      }
    std::fill(carry.begin(), carry.end(), 0.0);
    for (int64_t t = S - 1; t >= 0; --t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        const double r = detail::sigmoid(gateA[i]), in = detail::sigmoid(gateX[i]);
        const double la = r * base[w], a = std::exp(la), n = std::sqrt(-std::expm1(2.0 * la));
        const double prev = t ? h[(t - 1) * W + w] : 0.0;
        const double g = carry[w] + dy[i]; // the cotangent of h[t]
        const double du = g * n, dn = g * in * x[i];
        // n = sqrt(1 - a^2): dn/dla = -a^2 / n.
        const double dla = g * prev * a - dn * a * a / n;
        dbase[w] += dla * r;
        const double dga = dla * base[w] * r * (1.0 - r), dgx = du * x[i] * in * (1.0 - in);
        dx[i] = static_cast<float>(du * in + dga * wa[w] + dgx * wx[w]);
        dwa[w] += dga * x[i];
        dba[w] += dga;
        dwx[w] += dgx * x[i];
        dbx[w] += dgx;
        carry[w] = g * a;
      }
  }
  for (int64_t w = 0; w < W; ++w) {
    // d log(sigmoid(l)) / dl = 1 - sigmoid(l).
    const double dl = dbase[w] * c * (1.0 - detail::sigmoid(lambda[w]));
    const std::pair<float *, double> out[] = {
        {dp.wa, dwa[w]}, {dp.ba, dba[w]}, {dp.wx, dwx[w]}, {dp.bx, dbx[w]}, {dp.lambda, dl}};
    for (auto [p, v] : out)
      if (p)
        p[w] = static_cast<float>(v);
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { X, Wa, Ba, Wx, Bx, Lambda, Dy };

/// x, wa, ba, wx, bx, lambda, dy -> dx, or dwa, dba, dwx, dbx, dlambda.
template <bool Weights> void rglruScanGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &xl = f.local(s.in[X]);
  const int64_t W = xl[2];
  std::vector<float> dx(Weights ? f.n(s.in[X]) : 0);
  cpu::RglruParamGrads dp;
  if constexpr (Weights)
    dp = {f.f(s.out[0]), f.f(s.out[1]), f.f(s.out[2]), f.f(s.out[3]), f.f(s.out[4])};
  cpu::rglru_scan_grad(f.f(s.in[X]), f.f(s.in[Wa]), f.f(s.in[Ba]), f.f(s.in[Wx]), f.f(s.in[Bx]),
                       f.f(s.in[Lambda]), f.f(s.in[Dy]), xl[0], xl[1], W,
                       Weights ? dx.data() : f.f(s.out[0]), dp);
}

/// x and dy [B, S, W], the gate parameters and lambda [W]; dx like x or the
/// parameters' gradients like the parameters.
void checkRglruScanGrad(Contract &c) {
  Contract::Arg x = operand(X);
  c.rank(x, 3).sameShape(operand(Dy), x);
  for (size_t p : {Wa, Ba, Wx, Bx, Lambda})
    c.rank(operand(p), 1).sameDim(operand(p), 0, x, 2);
  if (c.step.out.size() == 1) {
    c.sameShape(result(0), x);
    return;
  }
  for (size_t r = 0; r < 5; ++r)
    c.sameShape(result(r), operand(Wa + r));
}

} // namespace

SHARDLINE_CPU_KERNELS(recurrent_grad) {
  const std::vector<std::string> operands = {"x", "wa", "ba", "wx", "bx", "lambda", "dy"};
  addKernel(t, "rglru_scan_grad",
            {operands, {"dx"}, {}, rglruScanGrad<false>, nullptr, checkRglruScanGrad});
  addKernel(t, "rglru_scan_grad_weights",
            {operands,
             {"dwa", "dba", "dwx", "dbx", "dlambda"},
             {},
             rglruScanGrad<true>,
             nullptr,
             checkRglruScanGrad});
}

} // namespace shardline::rt
