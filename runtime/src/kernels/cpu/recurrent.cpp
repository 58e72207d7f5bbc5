//===- recurrent.cpp - The RG-LRU gates, scan and correction --------------===//

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

void rglru_log_decay_base(const float *lambda, int64_t W, float c, double *base) {
  for (int64_t w = 0; w < W; ++w)
    base[w] = c * detail::log_sigmoid(lambda[w]);
}

void rglru_scan(const float *x, const float *gate_a, const float *gate_x, const float *lambda,
                const float *state_in, int64_t B, int64_t S, int64_t W, float *y, float *state_out,
                float *decay_out, float c) {
  std::vector<double> base(W);
  rglru_log_decay_base(lambda, W, c, base.data());
  std::vector<double> h(W), logsum(W);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t w = 0; w < W; ++w)
      h[w] = state_in ? state_in[b * W + w] : 0.0;
    std::fill(logsum.begin(), logsum.end(), 0.0);
    for (int64_t t = 0; t < S; ++t) {
      const int64_t off = (b * S + t) * W;
      for (int64_t w = 0; w < W; ++w) {
        const double la = detail::sigmoid(gate_a[off + w]) * base[w];
        // sqrt(1 - a^2) via expm1 keeps precision when a is close to 1.
        const double norm = std::sqrt(-std::expm1(2.0 * la));
        h[w] = std::exp(la) * h[w] + norm * detail::sigmoid(gate_x[off + w]) * x[off + w];
        logsum[w] += la;
        y[off + w] = static_cast<float>(h[w]);
      }
    }
    for (int64_t w = 0; w < W; ++w) {
      if (state_out)
        state_out[b * W + w] = static_cast<float>(h[w]);
      if (decay_out)
        decay_out[b * W + w] = static_cast<float>(std::exp(logsum[w]));
    }
  }
}

void rglru_state_correct(const float *gate_a, const float *lambda, const float *h0, int64_t B,
                         int64_t S, int64_t W, float *y, float *state_out, float c) {
  std::vector<double> base(W);
  rglru_log_decay_base(lambda, W, c, base.data());
  std::vector<double> cum(W);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(cum.begin(), cum.end(), 0.0);
    for (int64_t t = 0; t < S; ++t) {
      const int64_t off = (b * S + t) * W;
      for (int64_t w = 0; w < W; ++w) {
        cum[w] += detail::sigmoid(gate_a[off + w]) * base[w];
        y[off + w] = static_cast<float>(y[off + w] + std::exp(cum[w]) * h0[b * W + w]);
      }
    }
    if (state_out)
      for (int64_t w = 0; w < W; ++w)
        state_out[b * W + w] =
            static_cast<float>(state_out[b * W + w] + std::exp(cum[w]) * h0[b * W + w]);
  }
}

void rglru_gates(const float *x, const float *wa, const float *ba, const float *wx, const float *bx,
                 int64_t T, int64_t W, float *gate_a, float *gate_x) {
  for (int64_t i = 0; i < T * W; ++i) {
    int64_t c = i % W;
    gate_a[i] = wa[c] * x[i] + ba[c];
    if (gate_x)
      gate_x[i] = wx[c] * x[i] + bx[c];
  }
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

/// rglru_scan (x, wa, ba, wx, bx, lambda[, state_in] -> y, state, decay) and
/// rglru_correct (y0, init, x, wa, ba, lambda -> result).
template <bool Correct> void rglru(const Step &s, Frame &f) {
  enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn };
  enum { Y0, Init, XC, WaC, BaC, LambdaC };
  int32_t x = s.in[Correct ? XC : X], wa = s.in[Correct ? WaC : Wa], ba = s.in[Correct ? BaC : Ba],
          lambda = s.in[Correct ? LambdaC : Lambda];
  const TensorInfo &xt = f.tensors[x];
  bool chunked = !s.attrs[0].strings.empty();
  int64_t k = chunked ? chunksOf(xt) : 1, S = xt.local[1] / k, B = xt.local[0], W = xt.local[2];
  std::vector<float> gateA(f.n(x)), gateX(Correct ? 0 : f.n(x));
  cpu::rglru_gates(f.f(x), f.f(wa), f.f(ba), Correct ? nullptr : f.f(s.in[Wx]),
                   Correct ? nullptr : f.f(s.in[Bx]), f.n(x) / W, W, gateA.data(),
                   Correct ? nullptr : gateX.data());
  float *y = f.f(s.out[0]);
  if constexpr (Correct) {
    std::copy_n(f.f(s.in[Y0]), f.n(s.in[Y0]), y);
    std::vector<float> state(W);
    const float *init = f.f(s.in[Init]);
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      cpu::rglru_state_correct(gateA.data() + rows * W, f.f(lambda), init + (c * B + bi) * W, 1, S,
                               W, y + rows * W, state.data());
    });
  } else {
    float *state = f.f(s.out[1]), *decay = f.f(s.out[2]);
    const float *stateIn = s.has(StateIn) ? f.f(s.in[StateIn]) : nullptr;
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      int64_t slot = c * B + bi;
      cpu::rglru_scan(f.f(x) + rows * W, gateA.data() + rows * W, gateX.data() + rows * W,
                      f.f(lambda), stateIn ? stateIn + slot * W : nullptr, 1, S, W, y + rows * W,
                      state + slot * W, decay + slot * W);
    });
  }
}

// -- contracts --------------------------------------------------------------

/// x (and y0) [B, S, W], the gate parameters and lambda [W]; the states and
/// decays hold (at least) W values per chunk and batch entry.
template <bool Correct> void checkRglru(Contract &c) {
  enum { X, Wa, Ba, Wx, Bx, Lambda, StateIn };
  enum { Y0, Init, XC, WaC, BaC, LambdaC };
  Contract::Arg x = operand(Correct ? XC : X);
  c.rank(x, 3);
  std::vector<size_t> params = Correct ? std::vector<size_t>{WaC, BaC, LambdaC}
                                       : std::vector<size_t>{Wa, Ba, Wx, Bx, Lambda};
  for (size_t p : params)
    c.rank(operand(p), 1).sameDim(operand(p), 0, x, 2);
  int64_t k = c.step.attrs[0].strings.empty() ? 1 : c.chunks(x);
  c.require(c.dim(x, 1) % k == 0, c.dimText(x, 1) + ", not " + std::to_string(k) + " equal chunks");
  int64_t states = Contract::product({k, c.dim(x, 0), c.dim(x, 2)});
  const char *what = "chunks x batch x width";
  c.sameShape(result(0), x);
  if constexpr (Correct) {
    c.sameShape(operand(Y0), x).elementsAtLeast(operand(Init), states, what);
  } else {
    c.elementsAtLeast(result(1), states, what).elementsAtLeast(result(2), states, what);
    c.elementsAtLeast(operand(StateIn), states, what);
  }
}

} // namespace

SHARDLINE_CPU_KERNELS(recurrent) {
  const AttrSpec chunkAxes{"chunk_axes", AttrKind::Strings};
  addKernel(t, "rglru_scan",
            {{"x", "wa", "ba", "wx", "bx", "lambda", "state_in?"},
             {"y", "state", "decay"},
             {chunkAxes},
             rglru<false>,
             nullptr,
             checkRglru<false>});
  addKernel(t, "rglru_correct",
            {{"y0", "init", "x", "wa", "ba", "lambda"},
             kResult,
             {chunkAxes},
             rglru<true>,
             nullptr,
             checkRglru<true>});
}

} // namespace shardline::rt
