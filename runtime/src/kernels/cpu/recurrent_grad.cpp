//===- recurrent_grad.cpp - Backward of the RG-LRU scan and its correction ===//
//
// The vector-Jacobian products of rglru_gates followed by rglru_scan (from a
// state, with the cotangents of the final state and the total decay, so that
// a chunk of a split sequence is differentiated as the forward scanned it)
// and of rglru_state_correct: the scan is recomputed forward, in double as
// the forward kernel runs it, and the cotangent of each state is carried
// backward through the decays.
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

namespace {

/// The per-channel sums of a backward, in double until they are added to
/// the caller's buffers once.
struct ParamSums {
  explicit ParamSums(int64_t W) : wa(W), ba(W), wx(W), bx(W), base(W) {}
  std::vector<double> wa, ba, wx, bx, base;

  /// Takes the cotangent `dla` of log a = r base (r = sigmoid(gate_a)) of
  /// a token with input `x` in channel `w` to the gate's pre-activation:
  /// adds to the sums and returns what reaches x through wa.
  double decay(double dla, double r, double baseW, double x, double waW, int64_t w) {
    base[w] += dla * r;
    const double dga = dla * baseW * r * (1.0 - r);
    wa[w] += dga * x;
    ba[w] += dga;
    return dga * waW;
  }

  void addTo(const RglruParamGrads &dp, const float *lambda, float c) const {
    for (int64_t w = 0; w < (int64_t)base.size(); ++w) {
      // d log(sigmoid(l)) / dl = 1 - sigmoid(l).
      const double dl = base[w] * c * (1.0 - detail::sigmoid(lambda[w]));
      const std::pair<float *, double> out[] = {
          {dp.wa, wa[w]}, {dp.ba, ba[w]}, {dp.wx, wx[w]}, {dp.bx, bx[w]}, {dp.lambda, dl}};
      for (auto [p, v] : out)
        if (p)
          p[w] = static_cast<float>(p[w] + v);
    }
  }
};

} // namespace

void rglru_scan_grad(const float *x, const float *wa, const float *ba, const float *wx,
                     const float *bx, const float *lambda, const float *state_in, const float *dy,
                     const float *dstate, const float *ddecay, int64_t B, int64_t S, int64_t W,
                     float *dx, float *dstate_in, const RglruParamGrads &dp, float c) {
  std::vector<float> gateA(B * S * W), gateX(B * S * W);
  rglru_gates(x, wa, ba, wx, bx, B * S, W, gateA.data(), gateX.data());
  std::vector<double> base(W);
  rglru_log_decay_base(lambda, W, c, base.data());
  ParamSums sums(W);
  // h[t] is the state after token t; h[-1] = state_in (or 0).
  std::vector<double> h(S * W), h0(W), carry(W), dLogDecay(W);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row0 = b * S * W;
    for (int64_t w = 0; w < W; ++w) {
      h0[w] = state_in ? state_in[b * W + w] : 0.0;
      dLogDecay[w] = 0.0;
    }
    for (int64_t t = 0; t < S; ++t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        const double la = detail::sigmoid(gateA[i]) * base[w];
        const double prev = t ? h[(t - 1) * W + w] : h0[w];
        h[t * W + w] = std::exp(la) * prev +
                       std::sqrt(-std::expm1(2.0 * la)) * detail::sigmoid(gateX[i]) * x[i];
        dLogDecay[w] += la;
      }
    // decay = exp(sum_t log a_t): its cotangent reaches every log a_t.
    for (int64_t w = 0; w < W; ++w) {
      dLogDecay[w] = ddecay ? ddecay[b * W + w] * std::exp(dLogDecay[w]) : 0.0;
      carry[w] = dstate ? dstate[b * W + w] : 0.0;
    }
    for (int64_t t = S - 1; t >= 0; --t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        const double r = detail::sigmoid(gateA[i]), in = detail::sigmoid(gateX[i]);
        const double la = r * base[w], a = std::exp(la), n = std::sqrt(-std::expm1(2.0 * la));
        const double prev = t ? h[(t - 1) * W + w] : h0[w];
        const double g = carry[w] + dy[i]; // the cotangent of h[t]
        const double du = g * n, dn = g * in * x[i];
        // n = sqrt(1 - a^2): dn/dla = -a^2 / n.
        const double dla = g * prev * a - dn * a * a / n + dLogDecay[w];
        const double dgx = du * x[i] * in * (1.0 - in);
        dx[i] =
            static_cast<float>(du * in + sums.decay(dla, r, base[w], x[i], wa[w], w) + dgx * wx[w]);
        sums.wx[w] += dgx * x[i];
        sums.bx[w] += dgx;
        carry[w] = g * a;
      }
    if (dstate_in)
      for (int64_t w = 0; w < W; ++w)
        dstate_in[b * W + w] = static_cast<float>(carry[w]);
  }
  sums.addTo(dp, lambda, c);
}

void rglru_state_correct_grad(const float *x, const float *wa, const float *ba, const float *lambda,
                              const float *h0, const float *dy, int64_t B, int64_t S, int64_t W,
                              float *dh0, float *dx, const RglruParamGrads &dp, float c) {
  std::vector<float> gateA(B * S * W);
  rglru_gates(x, wa, ba, nullptr, nullptr, B * S, W, gateA.data(), nullptr);
  std::vector<double> base(W);
  rglru_log_decay_base(lambda, W, c, base.data());
  ParamSums sums(W);
  // q[t] = F_t h0 dy_t: what token t's output makes of the initial state.
  std::vector<double> cum(W), q(S * W), acc(W), suffix(W);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row0 = b * S * W;
    std::fill(cum.begin(), cum.end(), 0.0);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t t = 0; t < S; ++t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        cum[w] += detail::sigmoid(gateA[i]) * base[w];
        const double fdy = std::exp(cum[w]) * dy[i];
        acc[w] += fdy;
        q[t * W + w] = fdy * h0[b * W + w];
      }
    for (int64_t w = 0; w < W; ++w)
      dh0[b * W + w] = static_cast<float>(acc[w]);
    std::fill(suffix.begin(), suffix.end(), 0.0);
    for (int64_t t = S - 1; t >= 0; --t)
      for (int64_t w = 0; w < W; ++w) {
        const int64_t i = row0 + t * W + w;
        suffix[w] += q[t * W + w];
        dx[i] = static_cast<float>(
            sums.decay(suffix[w], detail::sigmoid(gateA[i]), base[w], x[i], wa[w], w));
      }
  }
  sums.addTo(dp, lambda, c);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn, Dy, DState, DDecay };

/// A chunked op's summaries hold (chunk, batch entry) slots of W values, in
/// forEachChunk's (b, c) terms.
struct Slots {
  int64_t B, W;
  const float *at(const float *p, int64_t b, int64_t c) const {
    return p ? p + (c * B + b) * W : nullptr;
  }
  float *at(float *p, int64_t b, int64_t c) const { return p ? p + (c * B + b) * W : nullptr; }
};

/// Where the kernels add the parameters' gradients: the results `order`
/// names in RglruParamGrads order (-1 where the op has no such result),
/// zeroed.
cpu::RglruParamGrads paramResults(const Step &s, Frame &f, std::initializer_list<int> order) {
  std::vector<float *> out;
  for (int r : order) {
    float *p = r < 0 ? nullptr : f.f(s.out[r]);
    if (p)
      std::fill_n(p, f.n(s.out[r]), 0.0f);
    out.push_back(p);
  }
  return {out[0], out[1], out[2], out[3], out[4]};
}

/// x, wa, ba, wx, bx, lambda[, state_in], dy[, dstate][, ddecay] -> dx[,
/// dstate_in], or dwa, dba, dwx, dbx, dlambda: chunk by chunk as the forward
/// scanned them, each from its own state with its own summaries' cotangents.
template <bool Weights> void rglruScanGrad(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[X]];
  bool chunked = !s.attrs[0].strings.empty();
  int64_t k = chunked ? chunksOf(xt) : 1, S = xt.local[1] / k, W = xt.local[2];
  Slots slots{xt.local[0], W};
  auto in = [&](int i) -> const float * { return s.has(i) ? f.f(s.in[i]) : nullptr; };
  std::vector<float> scratch(Weights ? f.n(s.in[X]) : 0);
  float *dx = Weights ? scratch.data() : f.f(s.out[0]);
  float *dstateIn = !Weights && s.out.size() > 1 && s.out[1] >= 0 ? f.f(s.out[1]) : nullptr;
  cpu::RglruParamGrads dp;
  if constexpr (Weights)
    dp = paramResults(s, f, {0, 1, 2, 3, 4});
  forEachChunk(xt, chunked, [&](int64_t rows, int64_t b, int64_t c) {
    cpu::rglru_scan_grad(f.f(s.in[X]) + rows * W, in(Wa), in(Ba), in(Wx), in(Bx), in(Lambda),
                         slots.at(in(StateIn), b, c), in(Dy) + rows * W, slots.at(in(DState), b, c),
                         slots.at(in(DDecay), b, c), 1, S, W, dx + rows * W,
                         slots.at(dstateIn, b, c), dp);
  });
}

/// x, wa, ba, wx, bx, lambda, dy: x and dy [B, S, W], the gate parameters
/// and lambda [W], the summaries and dstate_in (at least) W values per chunk
/// and batch entry; dx like x or the parameters' gradients like the
/// parameters.
void checkRglruScanGrad(Contract &c) {
  Contract::Arg x = operand(X);
  c.rank(x, 3).sameShape(operand(Dy), x);
  for (size_t p : {Wa, Ba, Wx, Bx, Lambda})
    c.rank(operand(p), 1).sameDim(operand(p), 0, x, 2);
  int64_t k = c.step.attrs[0].strings.empty() ? 1 : c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  int64_t states = Contract::product({k, c.dim(x, 0), c.dim(x, 2)});
  const char *what = "chunks x batch x width";
  for (size_t o : {StateIn, DState, DDecay})
    c.elementsAtLeast(operand(o), states, what);
  if (c.step.out.size() == 5) {
    for (size_t r = 0; r < 5; ++r)
      c.sameShape(result(r), operand(Wa + r));
    return;
  }
  c.sameShape(result(0), x);
  c.require(c.has(operand(StateIn)) == c.has(result(1)),
            "dstate_in is there exactly when state_in is");
  c.elementsAtLeast(result(1), states, what);
}

enum { CInit, CX, CWa, CBa, CLambda, CDy };

/// init, x, wa, ba, lambda, dy -> dinit, dx, or dwa, dba, dlambda: each
/// chunk from its own initial state, as the forward corrected it.
template <bool Params> void rglruCorrectGrad(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[CX]];
  bool chunked = !s.attrs[0].strings.empty();
  int64_t k = chunked ? chunksOf(xt) : 1, S = xt.local[1] / k, W = xt.local[2];
  Slots slots{xt.local[0], W};
  std::vector<float> scratch(Params ? f.n(s.in[CX]) + f.n(s.in[CInit]) : 0);
  float *dinit = Params ? scratch.data() : f.f(s.out[0]);
  float *dx = Params ? scratch.data() + f.n(s.in[CInit]) : f.f(s.out[1]);
  cpu::RglruParamGrads dp;
  if constexpr (Params)
    dp = paramResults(s, f, {0, 1, -1, -1, 2});
  const float *init = f.f(s.in[CInit]);
  forEachChunk(xt, chunked, [&](int64_t rows, int64_t b, int64_t c) {
    cpu::rglru_state_correct_grad(f.f(s.in[CX]) + rows * W, f.f(s.in[CWa]), f.f(s.in[CBa]),
                                  f.f(s.in[CLambda]), slots.at(init, b, c),
                                  f.f(s.in[CDy]) + rows * W, 1, S, W, slots.at(dinit, b, c),
                                  dx + rows * W, dp);
  });
}

/// init (at least W values per chunk and batch entry), x and dy [B, S, W],
/// wa, ba, lambda [W]; dinit like init and dx like x, or the parameters'
/// gradients like the parameters.
void checkRglruCorrectGrad(Contract &c) {
  Contract::Arg x = operand(CX);
  c.rank(x, 3).sameShape(operand(CDy), x);
  for (size_t p : {CWa, CBa, CLambda})
    c.rank(operand(p), 1).sameDim(operand(p), 0, x, 2);
  int64_t k = c.step.attrs[0].strings.empty() ? 1 : c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  c.elementsAtLeast(operand(CInit), Contract::product({k, c.dim(x, 0), c.dim(x, 2)}),
                    "chunks x batch x width");
  if (c.step.out.size() == 3) {
    for (size_t r : {0, 1})
      c.sameShape(result(r), operand(CWa));
    c.sameShape(result(2), operand(CLambda));
    return;
  }
  c.sameShape(result(0), operand(CInit)).sameShape(result(1), x);
}

} // namespace

SHARDLINE_CPU_KERNELS(recurrent_grad) {
  const std::vector<AttrSpec> chunkAxes = {{"chunk_axes", AttrKind::Strings}};
  const std::vector<std::string> scanIn = {"x",      "wa",        "ba", "wx",      "bx",
                                           "lambda", "state_in?", "dy", "dstate?", "ddecay?"};
  addKernel(
      t, "rglru_scan_grad",
      {scanIn, {"dx", "dstate_in?"}, chunkAxes, rglruScanGrad<false>, nullptr, checkRglruScanGrad});
  addKernel(t, "rglru_scan_grad_weights",
            {scanIn,
             {"dwa", "dba", "dwx", "dbx", "dlambda"},
             chunkAxes,
             rglruScanGrad<true>,
             nullptr,
             checkRglruScanGrad});
  const std::vector<std::string> correctIn = {"init", "x", "wa", "ba", "lambda", "dy"};
  addKernel(t, "rglru_correct_grad",
            {correctIn,
             {"dinit", "dx"},
             chunkAxes,
             rglruCorrectGrad<false>,
             nullptr,
             checkRglruCorrectGrad});
  addKernel(t, "rglru_correct_grad_params",
            {correctIn,
             {"dwa", "dba", "dlambda"},
             chunkAxes,
             rglruCorrectGrad<true>,
             nullptr,
             checkRglruCorrectGrad});
}

} // namespace shardline::rt
