//===- cpu_kernels.cpp - the CPU backend's kernel table ---------------------===//
//
// Every op kind the CPU backend runs, with the operand, result and attribute
// names it binds and the rank facts it needs. The numerics are the reference
// kernels' (kernels/cpu); what is here is where each operand's local part
// sits and which exchanges the op needs (through Collectives).
//
//===----------------------------------------------------------------------===//

#include "exec/collectives.h"
#include "exec/program.h"
#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cmath>

namespace shardline::rt {

namespace {

const std::vector<std::string> kResult = {"result"};

/// Sequence chunks of a local [batch, seq, ...] value: two per rank in zigzag
/// order, else one.
int64_t chunksOf(const TensorInfo &t) { return chunksPerRank(t.layout, 1); }

/// Calls fn(row, b, c) for every sequence chunk c of every batch entry b of
/// a local [batch, seq, ...] value: its chunks (when `chunked`, else the whole
/// local sequence) and the first row of each. Chunk summaries (states, halos)
/// are indexed by (b, c).
template <typename Fn> void forEachChunk(const TensorInfo &x, bool chunked, Fn fn) {
  int64_t k = chunked ? chunksOf(x) : 1, length = x.local[1] / k;
  for (int64_t b = 0; b < x.local[0]; ++b)
    for (int64_t c = 0; c < k; ++c)
      fn(b * x.local[1] + c * length, b, c);
}

std::vector<int64_t> group(const Frame &f, const AttrValue &axes) {
  return f.mesh.group(f.self, axes.strings);
}

// -- elementwise, dense -----------------------------------------------------

template <void (*Fn)(const float *, const float *, int64_t, float *)>
void binary(const Step &s, Frame &f) {
  Fn(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]), f.f(s.out[0]));
}
template <void (*Fn)(const float *, int64_t, float *)> void unary(const Step &s, Frame &f) {
  Fn(f.f(s.in[0]), f.n(s.out[0]), f.f(s.out[0]));
}

/// The first vocabulary entry of this rank's rows of the table.
void resolveTableOffset(Step &s, const Frame &f) {
  s.facts.vocabOffset = f.owned(s.in[1], 0, f.self).front();
}

void embedding(const Step &s, Frame &f) {
  int32_t ids = s.in[0], table = s.in[1];
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

/// The global positions of the tokens of the sequence operand (RoPE's x,
/// attention's q) and, for attention, of its keys.
void resolvePositions(Step &s, const Frame &f) { s.facts.positions = f.owned(s.in[0], 1, f.self); }
void resolveQueryKeyPositions(Step &s, const Frame &f) {
  resolvePositions(s, f);
  s.facts.keyPositions = f.owned(s.in[1], 1, f.self);
}

void rope(const Step &s, Frame &f) {
  const std::vector<int64_t> &x = f.local(s.in[0]);
  int64_t d = s.attrs[0].i;
  cpu::rope(f.f(s.in[0]), s.facts.positions.data(), x[0], x[1], x[2] / d, d, (float)s.attrs[1].f,
            f.f(s.out[0]));
}

// -- attention --------------------------------------------------------------

enum { kHeads, kCausal, kScale, kAxes };

cpu::AttentionDims attentionDims(const Step &s, const Frame &f) {
  const std::vector<int64_t> &ql = f.local(s.in[0]), &kl = f.local(s.in[1]);
  int64_t d = f.global(s.in[0])[2] / s.attrs[kHeads].i;
  return {ql[0], ql[1], kl[1], ql[2] / d, kl[2] / d, d};
}
/// An attention op without a scale means the usual 1/sqrt(head_dim).
float attentionScale(const Step &s, const cpu::AttentionDims &dims) {
  return s.attrs[kScale].present ? (float)s.attrs[kScale].f
                                 : (float)(1.0 / std::sqrt((double)dims.D));
}

void attention(const Step &s, Frame &f) {
  cpu::AttentionDims dims = attentionDims(s, f);
  cpu::attention(f.f(s.in[0]), f.f(s.in[1]), f.f(s.in[2]), s.facts.positions.data(),
                 s.facts.keyPositions.data(), dims, s.attrs[kCausal].i != 0,
                 attentionScale(s, dims), f.f(s.out[0]), nullptr);
}

/// The ring in order from this rank, with the key positions each member
/// holds.
void resolveRing(Step &s, const Frame &f) {
  resolvePositions(s, f);
  Ring ring = ringOf(f.mesh, f.self, s.attrs[kAxes].strings);
  std::vector<int64_t> &members = s.facts.members = ring.members;
  std::rotate(members.begin(), members.begin() + ring.position, members.end());
  for (int64_t m : members)
    s.facts.memberPositions.push_back(f.owned(s.in[1], 1, m));
}

/// Every member's keys and values reach every other member once; the partial
/// results are merged by their log-sum-exp, own block first.
void ringAttention(const Step &s, Frame &f) {
  int32_t q = s.in[0], k = s.in[1], v = s.in[2], out = s.out[0];
  cpu::AttentionDims dims = attentionDims(s, f);
  float scale = attentionScale(s, dims);
  bool causal = s.attrs[kCausal].i != 0;
  std::vector<float> kv(f.f(k), f.f(k) + f.n(k));
  kv.insert(kv.end(), f.f(v), f.f(v) + f.n(v));
  Mail blocks = f.collectives->allGather(s.attrs[kAxes].strings, kv, f.tensors[k].elementBytes());
  float *y = f.f(out);
  std::vector<float> lse(dims.B * dims.HQ * dims.Sq), part(f.n(out)), partLse(lse.size());
  for (size_t i = 0; i < s.facts.members.size(); ++i) {
    const float *kb = blocks[s.facts.members[i]].data(), *vb = kb + f.n(k);
    bool first = i == 0;
    cpu::attention(f.f(q), kb, vb, s.facts.positions.data(), s.facts.memberPositions[i].data(),
                   dims, causal, scale, first ? y : part.data(),
                   first ? lse.data() : partLse.data());
    if (!first)
      cpu::attention_merge(y, lse.data(), part.data(), partLse.data(), dims.B, dims.Sq, dims.HQ,
                           dims.D, y, lse.data());
  }
}

// -- convolution, halo, scans ---------------------------------------------

void conv(const Step &s, Frame &f) {
  int32_t x = s.in[0], out = s.out[0];
  bool hasHalo = s.has(3);
  const TensorInfo &xt = f.tensors[x];
  int64_t W = f.local(s.in[1])[1], k = hasHalo ? chunksOf(xt) : 1, S = xt.local[1] / k,
          C = xt.local[2];
  const float *hx = hasHalo ? f.f(s.in[3]) : nullptr;
  forEachChunk(xt, hasHalo, [&](int64_t rows, int64_t bi, int64_t c) {
    const float *haloRows = hx ? hx + (bi * k + c) * (W - 1) * C : nullptr;
    cpu::causal_conv1d(f.f(x) + rows * C, f.f(s.in[1]), f.f(s.in[2]), haloRows, 1, S, C, W,
                       f.f(out) + rows * C);
  });
}

enum { kHaloAxes, kHaloWidth };

/// Which rows this rank sends whom and where each row of its halo comes
/// from: the width tokens before each of a member's chunks, taken from the
/// first member of the group that holds them.
void resolveHalo(Step &s, const Frame &f) {
  std::vector<int64_t> members = group(f, s.attrs[kHaloAxes]);
  const TensorInfo &xt = f.tensors[s.in[0]];
  int64_t width = s.attrs[kHaloWidth].i, k = chunksOf(xt), S = xt.local[1] / k;
  std::vector<std::vector<int64_t>> positions;
  for (int64_t m : members)
    positions.push_back(f.owned(s.in[0], 1, m));
  for (size_t q = 0; q < members.size(); ++q)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < width; ++j) {
        int64_t pos = positions[q][c * S] - width + j;
        if (pos < 0)
          continue;
        for (size_t m = 0; m < members.size(); ++m) {
          auto it = std::find(positions[m].begin(), positions[m].end(), pos);
          if (it == positions[m].end())
            continue;
          int64_t row = it - positions[m].begin();
          if (members[q] == f.self)
            s.facts.receives.push_back({members[m], row, c * width + j});
          else if (members[m] == f.self)
            s.facts.sends.push_back({members[q], row, 0});
          break;
        }
      }
}

/// The width tokens before each local chunk, from whoever holds them; rows
/// travel in the order the receiver lists them, batch entries innermost.
void halo(const Step &s, Frame &f) {
  const TensorInfo &xt = f.tensors[s.in[0]];
  int64_t slots = chunksOf(xt) * s.attrs[kHaloWidth].i, C = xt.local[2], B = xt.local[0];
  const float *xv = f.f(s.in[0]);
  auto row = [&](int64_t bi, int64_t r) { return xv + (bi * xt.local[1] + r) * C; };
  Mail sendTo = f.collectives->noMail(), recvFrom = f.collectives->noMail();
  for (const RankFacts::Row &r : s.facts.sends)
    for (int64_t bi = 0; bi < B; ++bi)
      sendTo[r.rank].insert(sendTo[r.rank].end(), row(bi, r.row), row(bi, r.row) + C);
  for (const RankFacts::Row &r : s.facts.receives)
    if (r.rank != f.self)
      recvFrom[r.rank].resize(recvFrom[r.rank].size() + B * C);
  f.collectives->exchange(s.attrs[kHaloAxes].strings, sendTo, recvFrom, xt.elementBytes());
  std::vector<size_t> next(recvFrom.size(), 0);
  float *y = f.f(s.out[0]);
  for (const RankFacts::Row &r : s.facts.receives)
    for (int64_t bi = 0; bi < B; ++bi) {
      const float *src = r.rank == f.self ? row(bi, r.row) : recvFrom[r.rank].data() + next[r.rank];
      if (r.rank != f.self)
        next[r.rank] += C;
      std::copy_n(src, C, y + (bi * slots + r.slot) * C);
    }
}

enum { kSsdHeads, kSsdGroups, kSsdChunkAxes };

/// ssd_scan (x, dt, a_log, B, C, d, dt_bias[, state_in] -> y, state, decay)
/// and ssd_correct (y0, init, C, dt, a_log, dt_bias -> result).
template <bool Correct> void ssd(const Step &s, Frame &f) {
  enum { X, Dt, ALog, Bm, Cm, D, DtBias, StateIn };
  enum { Y0, Init, CmC, DtC, ALogC, DtBiasC };
  int32_t x = s.in[Correct ? Y0 : X], dt = s.in[Correct ? DtC : Dt],
          aLog = s.in[Correct ? ALogC : ALog], cm = s.in[Correct ? CmC : Cm],
          dtBias = s.in[Correct ? DtBiasC : DtBias];
  const TensorInfo &xt = f.tensors[x];
  const std::vector<int64_t> &cl = f.local(cm);
  int64_t nh = f.local(dt)[2], hp = xt.shape[2] / s.attrs[kSsdHeads].i;
  int64_t g = s.attrs[kSsdGroups].i * cl[2] / f.global(cm)[2], n = cl[2] / g;
  bool chunked = !s.attrs[kSsdChunkAxes].strings.empty();
  int64_t k = chunked ? chunksOf(xt) : 1, S = xt.local[1] / k, B = xt.local[0];
  std::vector<float> dtv(f.n(dt)), A(nh);
  cpu::ssd_prelude(f.f(dt), f.f(dtBias), f.f(aLog), f.n(dt) / nh, nh, dtv.data(), A.data());
  cpu::SsdDims dims{1, S, nh, hp, g, n};
  float *y = f.f(s.out[0]);
  if constexpr (Correct) {
    std::copy_n(f.f(x), f.n(x), y);
    std::vector<float> state(nh * hp * n);
    const float *init = f.f(s.in[Init]);
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      cpu::ssd_state_correct(f.f(cm) + rows * g * n, dtv.data() + rows * nh, A.data(),
                             init + (c * B + bi) * nh * hp * n, dims, y + rows * nh * hp,
                             state.data());
    });
  } else {
    float *state = f.f(s.out[1]), *decay = f.f(s.out[2]);
    const float *stateIn = s.has(StateIn) ? f.f(s.in[StateIn]) : nullptr;
    forEachChunk(xt, chunked, [&](int64_t rows, int64_t bi, int64_t c) {
      int64_t slot = c * B + bi;
      cpu::ssd_scan(f.f(x) + rows * nh * hp, dtv.data() + rows * nh, A.data(),
                    f.f(s.in[Bm]) + rows * g * n, f.f(cm) + rows * g * n, f.f(s.in[D]),
                    stateIn ? stateIn + slot * nh * hp * n : nullptr, dims, y + rows * nh * hp,
                    state + slot * nh * hp * n, decay + slot * nh);
    });
  }
}

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

/// The group, the chunks each member holds, and this rank's chunks of the
/// result.
void resolveStateExchange(Step &s, const Frame &f) {
  s.facts.members = group(f, s.attrs[0]);
  for (int64_t m : s.facts.members)
    s.facts.memberPositions.push_back(f.owned(s.in[0], 0, m));
  s.facts.positions = f.owned(s.out[0], 0, f.self);
}

/// Every chunk's true initial state from all chunks' (state, decay)
/// summaries, in sequence order.
void stateExchange(const Step &s, Frame &f) {
  int32_t st = s.in[0], dec = s.in[1];
  int64_t chunks = f.global(st)[0];
  int64_t stateSize = f.n(st) / f.local(st)[0], decaySize = f.n(dec) / f.local(st)[0];
  std::vector<float> mine(f.f(st), f.f(st) + f.n(st));
  mine.insert(mine.end(), f.f(dec), f.f(dec) + f.n(dec));
  // The report counts the summaries at their element sizes.
  Mail all = f.collectives->allGather(s.attrs[0].strings, mine, 0);
  f.collectives->count(
      ((int64_t)s.facts.members.size() - 1) *
      (f.n(st) * f.tensors[st].elementBytes() + f.n(dec) * f.tensors[dec].elementBytes()));
  std::vector<float> allStates(chunks * stateSize), allDecays(chunks * decaySize);
  for (size_t i = 0; i < s.facts.members.size(); ++i) {
    const std::vector<float> &theirs = all[s.facts.members[i]];
    const std::vector<int64_t> &slots = s.facts.memberPositions[i];
    for (size_t j = 0; j < slots.size(); ++j) {
      std::copy_n(theirs.data() + j * stateSize, stateSize,
                  allStates.data() + slots[j] * stateSize);
      std::copy_n(theirs.data() + f.n(st) + j * decaySize, decaySize,
                  allDecays.data() + slots[j] * decaySize);
    }
  }
  std::vector<float> init(chunks * stateSize);
  cpu::scan_combine_states(allDecays.data(), allStates.data(), nullptr, chunks, decaySize,
                           stateSize / decaySize, init.data(), nullptr);
  for (size_t i = 0; i < s.facts.positions.size(); ++i)
    std::copy_n(init.data() + s.facts.positions[i] * stateSize, stateSize,
                f.f(s.out[0]) + i * stateSize);
}

// -- mixture of experts ---------------------------------------------------

void routerTopk(const Step &s, Frame &f) {
  const std::vector<int64_t> &l = f.local(s.in[0]);
  cpu::router_topk(f.f(s.in[0]), l[0] * l[1], l[2], s.attrs[0].i, f.f(s.out[0]), f.ids(s.out[1]));
}

/// The dispatch is dropless and static: each expert's slab holds a row per
/// token, zero where the router did not choose it.
void moeDispatch(const Step &s, Frame &f) {
  const std::vector<int64_t> &xl = f.local(s.in[0]);
  cpu::moe_scatter_rows(f.f(s.in[0]), f.ids(s.in[1]), xl[0] * xl[1], xl[2], f.local(s.in[1])[2],
                        f.f(s.out[0]));
}

void moeExperts(const Step &s, Frame &f) {
  const std::vector<int64_t> &tl = f.local(s.in[0]), &gl = f.local(s.in[1]);
  cpu::moe_experts_slabs(f.f(s.in[0]), tl[0], tl[1] * tl[2], f.f(s.in[1]), f.f(s.in[2]),
                         f.f(s.in[3]), gl[1], gl[2], f.f(s.out[0]));
}

void moeCombine(const Step &s, Frame &f) {
  const std::vector<int64_t> &el = f.local(s.in[0]);
  cpu::moe_gather_rows(f.f(s.in[0]), f.f(s.in[1]), f.ids(s.in[2]), el[1] * el[2], el[3],
                       f.local(s.in[1])[2], f.f(s.out[0]));
}

// -- loss -------------------------------------------------------------------

/// The first vocabulary entry of this rank's logits and the vocabulary's
/// group.
void resolveCrossEntropy(Step &s, const Frame &f) {
  s.facts.vocabOffset = f.owned(s.in[0], 2, f.self).front();
  s.facts.members = group(f, s.attrs[0]);
}

/// Vocabulary-parallel cross-entropy: per token, the maximum, then the sum of
/// exponentials and the target logit, each combined over the vocabulary's
/// shards. The per-token pieces travel as f32 whatever the logits are.
void crossEntropy(const Step &s, Frame &f) {
  int32_t logits = s.in[0], labels = s.in[1];
  const std::vector<int64_t> &l = f.local(logits);
  int64_t T = l[0] * l[1], V = l[2];
  const float *x = f.f(logits);
  auto pointers = [&](const Mail &mail) {
    std::vector<const float *> out;
    for (int64_t m : s.facts.members)
      out.push_back(mail[m].data());
    return out;
  };
  std::vector<float> mx(T), gmax(T);
  cpu::xent_local_max(x, T, V, mx.data());
  Mail maxes = f.collectives->allGather(s.attrs[0].strings, mx, 4);
  cpu::xent_combine_max(pointers(maxes).data(), (int64_t)s.facts.members.size(), T, gmax.data());
  std::vector<float> sumTarget(2 * T);
  cpu::xent_local_sumexp(x, gmax.data(), T, V, sumTarget.data());
  cpu::xent_local_target(x, f.ids(labels), T, V, s.facts.vocabOffset, sumTarget.data() + T);
  Mail pieces = f.collectives->allGather(s.attrs[0].strings, sumTarget, 4);
  double total = cpu::xent_combine_total(pointers(pieces).data(), (int64_t)s.facts.members.size(),
                                         gmax.data(), T);
  f.f(s.out[0])[0] = (float)(total / (double)(f.global(logits)[0] * f.global(logits)[1]));
}

// -- layout transitions ---------------------------------------------------

void transition(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]], &out = f.tensors[s.out[0]];
  f.collectives->transition(2 * s.index, out.shape, x.layout, out.layout, f.f(s.in[0]),
                            f.f(s.out[0]), x.elementBytes());
}

void allReduce(const Step &s, Frame &f) {
  const TensorInfo &x = f.tensors[s.in[0]];
  if (x.layout.partial.empty())
    return transition(s, f);
  f.collectives->allReduce(s.index, x.shape, x.layout, f.f(s.in[0]), f.f(s.out[0]),
                           x.elementBytes());
}

KernelTable makeTable() {
  const std::vector<std::string> x = {"x"}, pair = {"lhs", "rhs"};
  const AttrSpec eps{"eps", AttrKind::Float}, chunkAxes{"chunk_axes", AttrKind::Strings};
  const std::vector<AttrSpec> attentionAttrs = {
      {"heads", AttrKind::Int}, {"causal", AttrKind::Int}, {"scale", AttrKind::Float, true}};
  std::vector<AttrSpec> ringAttrs = attentionAttrs;
  ringAttrs.push_back({"axes", AttrKind::Strings});
  KernelTable t;
  t["add"] = {pair, kResult, {}, binary<cpu::add>};
  t["mul"] = {pair, kResult, {}, binary<cpu::mul>};
  t["swiglu"] = {pair, kResult, {}, binary<cpu::swiglu>};
  t["silu"] = {x, kResult, {}, unary<cpu::silu>};
  t["gelu"] = {x, kResult, {}, unary<cpu::gelu>};
  t["sigmoid"] = {x, kResult, {}, unary<cpu::sigmoid>};
  t["softplus"] = {x, kResult, {}, unary<cpu::softplus>};
  t["embedding"] = {{"ids", "table"}, kResult, {}, embedding, resolveTableOffset};
  t["rms_norm"] = {{"x", "weight"}, kResult, {eps}, rmsNorm};
  t["gated_rms_norm"] = {
      {"y", "z", "weight"}, kResult, {{"groups", AttrKind::Int}, eps}, gatedRmsNorm};
  t["linear"] = {{"x", "weight"}, kResult, {}, linear};
  t["lm_head"] = {{"x", "weight"}, {"logits"}, {}, linear};
  t["rope"] = {x,
               kResult,
               {{"head_dim", AttrKind::Int}, {"theta", AttrKind::Float}},
               rope,
               resolvePositions};
  t["attention"] = {{"q", "k", "v"}, kResult, attentionAttrs, attention, resolveQueryKeyPositions};
  t["ring_attention"] = {{"q", "k", "v"}, kResult, ringAttrs, ringAttention, resolveRing};
  t["causal_conv1d"] = {{"x", "weight", "bias", "halo?"}, kResult, {}, conv};
  t["halo"] = {
      x, kResult, {{"axes", AttrKind::Strings}, {"width", AttrKind::Int}}, halo, resolveHalo};
  const std::vector<AttrSpec> ssdAttrs = {
      {"heads", AttrKind::Int}, {"groups", AttrKind::Int}, chunkAxes};
  t["ssd_scan"] = {{"x", "dt", "a_log", "B", "C", "d", "dt_bias", "state_in?"},
                   {"y", "state", "decay"},
                   ssdAttrs,
                   ssd<false>};
  t["ssd_correct"] = {{"y0", "init", "C", "dt", "a_log", "dt_bias"}, kResult, ssdAttrs, ssd<true>};
  t["rglru_scan"] = {{"x", "wa", "ba", "wx", "bx", "lambda", "state_in?"},
                     {"y", "state", "decay"},
                     {chunkAxes},
                     rglru<false>};
  t["rglru_correct"] = {
      {"y0", "init", "x", "wa", "ba", "lambda"}, kResult, {chunkAxes}, rglru<true>};
  t["scan_state_exchange"] = {{"states", "decays"},
                              kResult,
                              {{"axes", AttrKind::Strings}},
                              stateExchange,
                              resolveStateExchange};
  t["router_topk"] = {{"logits"}, {"weights", "indices"}, {{"k", AttrKind::Int}}, routerTopk};
  t["moe_dispatch"] = {{"x", "indices"}, kResult, {}, moeDispatch};
  t["moe_experts"] = {{"tokens", "gate", "up", "down"}, kResult, {}, moeExperts};
  t["moe_combine"] = {{"expert_out", "weights", "indices"}, kResult, {}, moeCombine};
  t["cross_entropy"] = {{"logits", "labels"},
                        {"loss"},
                        {{"vocab_axes", AttrKind::Strings}},
                        crossEntropy,
                        resolveCrossEntropy};
  for (const char *kind :
       {"all_gather", "reduce_scatter", "all_to_all", "slice", "reorder", "relayout"})
    t[kind] = {x, kResult, {}, transition};
  t["all_reduce"] = {x, kResult, {}, allReduce};
  return t;
}

} // namespace

const Backend &cpuBackend() {
  static const KernelTable table = makeTable();
  static const Backend backend{
      "cpu", table, []() -> std::unique_ptr<Device> { return std::make_unique<CpuDevice>(); }};
  return backend;
}

} // namespace shardline::rt
