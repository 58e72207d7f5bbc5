//===- dense.cpp - Embedding, norms, GEMM, elementwise --------------------===//

#include "exec/verify.h"
#include "kernels/cpu/internal.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/table.h"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstring>

namespace shardline::rt::cpu {

void detail::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
  if (M == 0 || N == 0)
    return;
  if (K == 0) {
    // BLAS would scale C too, but rejects K == 0 leading dimensions.
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  auto bi = [](int64_t v) {
    assert(v >= 0 && v <= INT_MAX && "GEMM dimension exceeds BLAS int");
    return static_cast<blasint>(v);
  };
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, bi(M), bi(N), bi(K), alpha, A, bi(lda), B,
              bi(ldb), beta, C, bi(ldc));
}

void embedding(const int32_t *ids, int64_t T, const float *table, int64_t Vl, int64_t H,
               int64_t vocab_offset, float *out) {
  for (int64_t t = 0; t < T; ++t) {
    int64_t row = static_cast<int64_t>(ids[t]) - vocab_offset;
    float *dst = out + t * H;
    if (row >= 0 && row < Vl)
      std::memcpy(dst, table + row * H, sizeof(float) * H);
    else
      std::fill(dst, dst + H, 0.0f);
  }
}

bool ids_in_range(const int32_t *ids, int64_t T, int64_t V) {
  return std::all_of(ids, ids + T, [V](int32_t id) { return id >= 0 && id < V; });
}

void rms_norm(const float *x, const float *w, int64_t T, int64_t H, float eps, float *y) {
  for (int64_t t = 0; t < T; ++t) {
    const float *row = x + t * H;
    double ss = 0.0;
    for (int64_t h = 0; h < H; ++h)
      ss += static_cast<double>(row[h]) * row[h];
    double inv = 1.0 / std::sqrt(ss / H + eps);
    for (int64_t h = 0; h < H; ++h)
      y[t * H + h] = static_cast<float>(row[h] * inv * w[h]);
  }
}

void gated_rms_norm(const float *y, const float *z, const float *w, int64_t T, int64_t C,
                    int64_t groups, float eps, float *out) {
  assert(groups > 0 && C % groups == 0);
  int64_t gs = C / groups;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g = 0; g < groups; ++g) {
      int64_t base = t * C + g * gs;
      double ss = 0.0;
      for (int64_t c = 0; c < gs; ++c)
        ss += static_cast<double>(y[base + c]) * y[base + c];
      double inv = 1.0 / std::sqrt(ss / gs + eps);
      for (int64_t c = 0; c < gs; ++c)
        out[base + c] =
            static_cast<float>(y[base + c] * inv * w[g * gs + c] * detail::silu(z[base + c]));
    }
  }
}

void linear(const float *x, const float *w, int64_t T, int64_t K, int64_t N, float *out,
            bool accumulate) {
  detail::gemm(false, false, T, N, K, 1.0f, x, K, w, N, accumulate ? 1.0f : 0.0f, out, N);
}

namespace {
template <typename F> void map1(const float *x, int64_t n, float *out, F f) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(f(static_cast<double>(x[i])));
}
} // namespace

void add(const float *a, const float *b, int64_t n, float *out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

void mul(const float *a, const float *b, int64_t n, float *out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] * b[i];
}

void silu(const float *x, int64_t n, float *out) { map1(x, n, out, detail::silu); }

void gelu(const float *x, int64_t n, float *out) {
  constexpr double kInvSqrt2 = 0.70710678118654752440;
  map1(x, n, out, [](double v) { return 0.5 * v * (1.0 + std::erf(v * kInvSqrt2)); });
}

void sigmoid(const float *x, int64_t n, float *out) { map1(x, n, out, detail::sigmoid); }

void softplus(const float *x, int64_t n, float *out) { map1(x, n, out, detail::softplus); }

void swiglu(const float *g, const float *u, int64_t n, float *out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(detail::silu(g[i]) * u[i]);
}

} // namespace shardline::rt::cpu

// -- the kernel table's entries ---------------------------------------------

namespace shardline::rt {

namespace {

template <void (*Fn)(const float *, int64_t, float *)> void unary(const Step &s, Frame &f) {
  Fn(f.f(s.in[0]), f.n(s.out[0]), f.f(s.out[0]));
}

void embedding(const Step &s, Frame &f) {
  int32_t ids = s.in[0], table = s.in[1];
  requireIdsInRange(f, ids, f.global(table)[0], "the embedding table's rows");
  cpu::embedding(f.ids(ids), f.n(ids), f.f(table), f.local(table)[0], f.local(table)[1],
                 s.facts.vocabOffset, f.f(s.out[0]));
}

void rmsNorm(const Step &s, Frame &f) {
  int64_t h = f.local(s.in[0]).back();
  cpu::rms_norm(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]) / h, h, (float)s.attrs[0].f,
                f.f(s.out[0]));
}

void gatedRmsNorm(const Step &s, Frame &f) {
  int32_t y = s.in[0];
  int64_t c = f.local(y).back(), groups = s.attrs[0].i * c / f.global(y).back();
  cpu::gated_rms_norm(f.f(y), f.f(s.in[1]), f.f(s.in[2]), f.n(s.out[0]) / c, c, groups,
                      (float)s.attrs[1].f, f.f(s.out[0]));
}

void linear(const Step &s, Frame &f) {
  const std::vector<int64_t> &w = f.local(s.in[1]);
  cpu::linear(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]) / w[1], w[0], w[1], f.f(s.out[0]));
}

// -- contracts --------------------------------------------------------------

/// Elementwise ops read every operand at the result's element count.
void checkElementwise(Contract &c) {
  for (size_t i = 0; i < c.step.in.size(); ++i)
    c.sameShape(operand(i), result(0));
}

void checkEmbedding(Contract &c) {
  Contract::Arg ids = operand(0), table = operand(1), out = result(0);
  c.rank(ids, 2).rank(table, 2).rank(out, 3);
  c.sameDim(out, 0, ids, 0).sameDim(out, 1, ids, 1).sameDim(out, 2, table, 1);
}

void checkEps(Contract &c, size_t attr) {
  c.require(c.floatAttr(attr) >= 0, "attribute 'eps' is negative");
}

void checkRmsNorm(Contract &c) {
  Contract::Arg x = operand(0), weight = operand(1);
  c.rankAtLeast(x, 1).rank(weight, 1).sameDim(weight, 0, x, -1).sameShape(result(0), x);
  checkEps(c, 0);
}

/// The kernel normalises within groups of the local channels: the groups
/// divide the channels, and a rank's share of them holds whole groups.
void checkGatedRmsNorm(Contract &c) {
  Contract::Arg y = operand(0), weight = operand(2);
  c.rankAtLeast(y, 1).sameShape(operand(1), y).sameShape(result(0), y);
  c.rank(weight, 1).sameDim(weight, 0, y, -1);
  if (!c.ok())
    return;
  int64_t channels = c.global(y).back(), local = c.dim(y, -1);
  c.attrIn(0, 1, channels);
  if (!c.ok())
    return;
  int64_t groups = c.intAttr(0), localGroups = Contract::product({groups, local}) / channels;
  c.require(channels % groups == 0, "attribute 'groups' (" + std::to_string(groups) +
                                        ") does not divide y's " + std::to_string(channels) +
                                        " channels");
  c.require(localGroups >= 1 &&
                Contract::product({localGroups, channels}) == Contract::product({groups, local}) &&
                local % localGroups == 0,
            "y's " + std::to_string(local) + " channels per rank are not whole groups of " +
                std::to_string(channels / groups));
  checkEps(c, 1);
}

/// x[..., K] . weight[K, N] -> result[..., N].
void checkLinear(Contract &c) {
  Contract::Arg x = operand(0), weight = operand(1), out = result(0);
  c.rankAtLeast(x, 1).rank(weight, 2).sameDim(weight, 0, x, -1).rank(out, c.local(x).size());
  for (int d = 0; d + 1 < (int)c.local(x).size(); ++d)
    c.sameDim(out, d, x, d);
  c.sameDim(out, -1, weight, 1);
}

} // namespace

SHARDLINE_CPU_KERNELS(dense) {
  const std::vector<std::string> x = {"x"}, pair = {"lhs", "rhs"};
  const AttrSpec eps{"eps", AttrKind::Float};
  addKernel(t, "add", {pair, kResult, {}, binary<cpu::add>, nullptr, checkElementwise});
  addKernel(t, "mul", {pair, kResult, {}, binary<cpu::mul>, nullptr, checkElementwise});
  addKernel(t, "swiglu", {pair, kResult, {}, binary<cpu::swiglu>, nullptr, checkElementwise});
  addKernel(t, "silu", {x, kResult, {}, unary<cpu::silu>, nullptr, checkElementwise});
  addKernel(t, "gelu", {x, kResult, {}, unary<cpu::gelu>, nullptr, checkElementwise});
  addKernel(t, "sigmoid", {x, kResult, {}, unary<cpu::sigmoid>, nullptr, checkElementwise});
  addKernel(t, "softplus", {x, kResult, {}, unary<cpu::softplus>, nullptr, checkElementwise});
  addKernel(t, "embedding",
            {{"ids", "table"}, kResult, {}, embedding, resolveTableOffset<1>, checkEmbedding});
  addKernel(t, "rms_norm", {{"x", "weight"}, kResult, {eps}, rmsNorm, nullptr, checkRmsNorm});
  addKernel(t, "gated_rms_norm",
            {{"y", "z", "weight"},
             kResult,
             {{"groups", AttrKind::Int}, eps},
             gatedRmsNorm,
             nullptr,
             checkGatedRmsNorm});
  addKernel(t, "linear", {{"x", "weight"}, kResult, {}, linear, nullptr, checkLinear});
  addKernel(t, "lm_head", {{"x", "weight"}, {"logits"}, {}, linear, nullptr, checkLinear});
}

} // namespace shardline::rt
