//===- moe_dropless_test.cpp - Dropless MoE by count ----------------------===//
//
// sl.moe_dropless and its gradient through their kernel-table entries: on
// one rank against a per-token loop and finite differences, and on 2 and 4
// thread ranks (tokens and experts split over one axis, routing unbalanced on
// purpose) against the single-rank run, with the bytes each rank sends equal
// to what its counts imply; and on 4 ranks with expert tensor parallelism
// (experts over "ep", their ffn over "etp"), the same.
//
//===----------------------------------------------------------------------===//

#include "comm/comm.h"
#include "exec/collectives.h"
#include "kernel_test_util.h"
#include "kernels/cpu/kernels.h"
#include "step_rig.h"
#include "thread_ranks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace cpu = shardline::rt::cpu;
using namespace shardline::rt;
using shardline::Layout;
using shardline::Mesh;
using test::axesAttr;
using test::dot;
using test::expectClose;
using test::expectGradient;
using test::onRanks;
using test::Rng;
using test::StepRig;
using test::Vec;

namespace {

using Ids = std::vector<int32_t>;

/// A dropless layer: tokens [B, S, H], top-k of E experts of width F.
struct Layer {
  int64_t B, S, H, F, E, k;
  Vec x, w, gate, up, down;
  Ids idx;
  /// Every token's first choice is expert 0, so the rank that owns it
  /// receives far more rows than the others; the rest are random.
  Layer(int64_t B, int64_t S, int64_t H, int64_t F, int64_t E, int64_t k, uint64_t seed)
      : B(B), S(S), H(H), F(F), E(E), k(k) {
    Rng rng(seed);
    x = rng.vec(B * S * H);
    gate = rng.vec(E * H * F, -0.5f, 0.5f);
    up = rng.vec(gate.size(), -0.5f, 0.5f);
    down = rng.vec(E * F * H, -0.5f, 0.5f);
    for (int64_t t = 0; t < B * S; ++t) {
      float first = rng.uniform(0.5f, 0.9f);
      for (int64_t j = 0; j < k; ++j) {
        int32_t e = j == 0 ? 0 : 1 + (int32_t)(rng.next() % (uint64_t)(E - 1));
        for (int64_t i = 1; i < j; ++i)
          if (idx[t * k + i] == e)
            e = 1 + e % (int32_t)(E - 1);
        idx.push_back(e);
        w.push_back(j == 0 ? first : (1.0f - first) / (float)(k - 1));
      }
    }
  }
  std::vector<std::vector<int64_t>> shapes(bool grad) const {
    std::vector<std::vector<int64_t>> s = {{B, S, H}, {B, S, k}, {B, S, k},
                                           {E, H, F}, {E, H, F}, {E, F, H}};
    if (grad)
      s.push_back({B, S, H});
    return s;
  }
};

/// The rig of moe_dropless (or its gradient) over `mesh`, tokens split along
/// the sequence and experts over `axes` (none: one rank).
StepRig rigOf(const Layer &l, bool grad, const Mesh &mesh, const std::vector<std::string> &axes) {
  Layout tokens{{{}, axes, {}}, {}, -1}, experts{{axes, {}, {}}, {}, -1};
  std::vector<Layout> layouts = {tokens, tokens, tokens, experts, experts, experts};
  std::vector<std::vector<int64_t>> out = {{l.B, l.S, l.H}};
  if (grad) {
    layouts.push_back(tokens);
    out = {{l.B, l.S, l.H}, {l.B, l.S, l.k}, {l.E, l.H, l.F}, {l.E, l.H, l.F}, {l.E, l.F, l.H}};
    layouts.insert(layouts.end(), {tokens, tokens, experts, experts, experts});
  } else {
    layouts.push_back(tokens);
  }
  // No tensor_axes: etp = 1.
  return StepRig(grad ? "moe_dropless_grad" : "moe_dropless", l.shapes(grad), out,
                 {axesAttr(axes), AttrValue{}}, mesh, layouts);
}

/// The rows of t[B, S, C] at sequence positions [from, from + n).
template <typename T>
std::vector<T> seqRows(const std::vector<T> &t, int64_t B, int64_t S, int64_t C, int64_t from,
                       int64_t n) {
  std::vector<T> out;
  for (int64_t b = 0; b < B; ++b)
    out.insert(out.end(), t.begin() + (b * S + from) * C, t.begin() + (b * S + from + n) * C);
  return out;
}

/// The experts [from, from + n) of w[E, ...] with `per` values each.
Vec expertRows(const Vec &w, int64_t per, int64_t from, int64_t n) {
  return Vec(w.begin() + from * per, w.begin() + (from + n) * per);
}

/// y of every token by a per-token loop over its choices.
Vec perTokenLoop(const Layer &l) {
  Vec y(l.B * l.S * l.H, 0.0f), g(l.F), u(l.F), a(l.F), o(l.H);
  for (int64_t t = 0; t < l.B * l.S; ++t)
    for (int64_t j = 0; j < l.k; ++j) {
      int64_t e = l.idx[t * l.k + j];
      cpu::linear(l.x.data() + t * l.H, l.gate.data() + e * l.H * l.F, 1, l.H, l.F, g.data());
      cpu::linear(l.x.data() + t * l.H, l.up.data() + e * l.H * l.F, 1, l.H, l.F, u.data());
      cpu::swiglu(g.data(), u.data(), l.F, a.data());
      cpu::linear(a.data(), l.down.data() + e * l.F * l.H, 1, l.F, l.H, o.data());
      for (int64_t h = 0; h < l.H; ++h)
        y[t * l.H + h] += l.w[t * l.k + j] * o[h];
    }
  return y;
}

template <typename T> BufferView view(std::vector<T> &v) {
  return BufferView(v.data(), (int64_t)v.size());
}

/// The layer's operands (x, weights, indices, gate, up, down), then `rest`.
std::vector<BufferView> layerViews(Layer &l, std::vector<BufferView> rest) {
  std::vector<BufferView> views{view(l.x),    view(l.w),  view(l.idx),
                                view(l.gate), view(l.up), view(l.down)};
  views.insert(views.end(), rest.begin(), rest.end());
  return views;
}

/// Runs the rig on one rank over the given buffers.
void runOne(StepRig &rig, std::vector<BufferView> views) {
  rig.views = std::move(views);
  ASSERT_EQ(rig.verify(), "");
  rig.step.kernel->run(rig.step, rig.frame);
}

Vec forwardOne(Layer &l) {
  StepRig rig = rigOf(l, false, Mesh{}, {});
  Vec y(l.B * l.S * l.H);
  runOne(rig, layerViews(l, {view(y)}));
  return y;
}

struct Grads {
  Vec dx, dw, dgate, dup, ddown;
};

Grads backwardOne(Layer &l, Vec &dy) {
  StepRig rig = rigOf(l, true, Mesh{}, {});
  Grads g{Vec(l.x.size()), Vec(l.w.size()), Vec(l.gate.size()), Vec(l.up.size()),
          Vec(l.down.size())};
  runOne(rig, layerViews(l, {view(dy), view(g.dx), view(g.dw), view(g.dgate), view(g.dup),
                             view(g.ddown)}));
  return g;
}

TEST(MoEDropless, OneRankIsThePerTokenLoop) {
  Layer l(2, 5, 6, 4, 4, 2, 3);
  expectClose(forwardOne(l), perTokenLoop(l), 1e-5, 1e-6, "y");
}

TEST(MoEDropless, GradientMatchesFiniteDifferences) {
  Layer l(1, 4, 3, 4, 3, 2, 5);
  Rng rng(9);
  Vec r = rng.vec(l.x.size()), dy = r;
  Grads g = backwardOne(l, dy);
  auto J = [&] { return dot(r, forwardOne(l)); };
  expectGradient(l.x, g.dx, J, "dx");
  expectGradient(l.w, g.dw, J, "dweights");
  expectGradient(l.gate, g.dgate, J, "dgate");
  expectGradient(l.up, g.dup, J, "dup");
  expectGradient(l.down, g.ddown, J, "ddown");
}

/// The rows rank r of `n` sends to other ranks and receives from them, by
/// the owner of each choice (expert e on rank e / (E / n)).
std::pair<int64_t, int64_t> rowsCrossing(const Layer &l, int64_t n, int64_t r) {
  int64_t L = l.S / n, El = l.E / n, out = 0, in = 0;
  for (int64_t b = 0; b < l.B; ++b)
    for (int64_t s = 0; s < l.S; ++s)
      for (int64_t j = 0; j < l.k; ++j) {
        int64_t from = s / L, to = l.idx[(b * l.S + s) * l.k + j] / El;
        out += from == r && to != r;
        in += to == r && from != r;
      }
  return {out, in};
}

/// What the forward and gradient steps of one rank sent, measured and as
/// recorded, and what their contracts found.
struct RankRun {
  int64_t bytes = 0, gradBytes = 0;
  VariableBytes recorded, gradRecorded;
  std::string errors;
};

/// Runs `fwd` and then `bwd` (step index 1) on rank r.
RankRun runPair(StepRig &fwd, StepRig &bwd, int64_t r, Collectives &collectives) {
  RankRun run;
  std::map<int64_t, VariableBytes> variable;
  bwd.step.index = 1;
  for (StepRig *rig : {&fwd, &bwd}) {
    rig->frame.self = r;
    rig->frame.collectives = &collectives;
    rig->frame.variableBytes = &variable;
    run.errors += rig->verify();
  }
  collectives.resetCount();
  fwd.step.kernel->run(fwd.step, fwd.frame);
  run.bytes = collectives.bytesSent();
  collectives.resetCount();
  bwd.step.kernel->run(bwd.step, bwd.frame);
  run.gradBytes = collectives.bytesSent();
  run.recorded = variable[0];
  run.gradRecorded = variable[1];
  return run;
}

/// moe_dropless and its gradient on `n` ranks (tokens along the sequence and
/// experts both split over "ep") give every rank the single-rank run's rows
/// and experts, and each sends exactly the counts, the rows and the returned
/// rows its routing implies; the balanced figure is the report's formula.
void checkRanks(int64_t n, int64_t E) {
  Layer l(2, 8, 4, 3, E, 2, 11 + n);
  Rng rng(13);
  Vec dy = rng.vec(l.x.size());
  Vec y = forwardOne(l);
  Grads want = backwardOne(l, dy);
  Mesh mesh{{{"ep", n}}};
  const int64_t L = l.S / n, El = E / n, R = l.B * L * l.k;
  std::vector<Vec> ys(n);
  std::vector<Grads> gs(n);
  std::vector<int64_t> bytes(n), gradBytes(n);
  std::vector<VariableBytes> recorded(n), gradRecorded(n);
  std::vector<std::vector<int64_t>> loads(n);
  std::vector<std::string> errors(n);
  onRanks(n, mesh, [&](int64_t r, Collectives &collectives) {
    Vec x = seqRows(l.x, l.B, l.S, l.H, r * L, L), w = seqRows(l.w, l.B, l.S, l.k, r * L, L),
        ldy = seqRows(dy, l.B, l.S, l.H, r * L, L);
    Ids idx = seqRows(l.idx, l.B, l.S, l.k, r * L, L);
    Vec gate = expertRows(l.gate, l.H * l.F, r * El, El),
        up = expertRows(l.up, l.H * l.F, r * El, El),
        down = expertRows(l.down, l.F * l.H, r * El, El);
    std::map<int64_t, ExpertLoad> load;
    std::vector<BufferView> in = {view(x), view(w), view(idx), view(gate), view(up), view(down)};
    StepRig fwd = rigOf(l, false, mesh, {"ep"});
    ys[r].resize(x.size());
    fwd.views = in;
    fwd.views.emplace_back(ys[r].data(), (int64_t)ys[r].size());
    StepRig bwd = rigOf(l, true, mesh, {"ep"});
    Grads &g = gs[r];
    g = {Vec(x.size()), Vec(w.size()), Vec(gate.size()), Vec(up.size()), Vec(down.size())};
    bwd.views = in;
    for (Vec *v : {&ldy, &g.dx, &g.dw, &g.dgate, &g.dup, &g.ddown})
      bwd.views.emplace_back(v->data(), (int64_t)v->size());
    fwd.frame.expertLoad = &load;
    RankRun run = runPair(fwd, bwd, r, collectives);
    bytes[r] = run.bytes;
    gradBytes[r] = run.gradBytes;
    recorded[r] = run.recorded;
    gradRecorded[r] = run.gradRecorded;
    errors[r] = run.errors;
    loads[r] = load[0].kept;
  });
  int64_t counts = (n - 1) * El * 4, H = l.H;
  bool unbalanced = false;
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(errors[r], "") << r;
    expectClose(ys[r], seqRows(y, l.B, l.S, l.H, r * L, L), 1e-5, 1e-6, "a rank's y");
    expectClose(gs[r].dx, seqRows(want.dx, l.B, l.S, l.H, r * L, L), 1e-4, 1e-6, "a rank's dx");
    expectClose(gs[r].dw, seqRows(want.dw, l.B, l.S, l.k, r * L, L), 1e-4, 1e-6,
                "a rank's dweights");
    // Every row of the group reached its owner: the weight gradients of a
    // rank's experts are whole.
    expectClose(gs[r].dgate, expertRows(want.dgate, H * l.F, r * El, El), 1e-4, 1e-6, "dgate");
    expectClose(gs[r].dup, expertRows(want.dup, H * l.F, r * El, El), 1e-4, 1e-6, "dup");
    expectClose(gs[r].ddown, expertRows(want.ddown, l.F * H, r * El, El), 1e-4, 1e-6, "ddown");
    // The load readout counts the rows this rank's tokens send each expert.
    std::vector<int64_t> kept(E, 0);
    for (int32_t e : seqRows(l.idx, l.B, l.S, l.k, r * L, L))
      ++kept[e];
    EXPECT_EQ(loads[r], kept) << "rank " << r;
    auto [out, in] = rowsCrossing(l, n, r);
    unbalanced = unbalanced || out != in;
    EXPECT_EQ(bytes[r], counts + (out + in) * H * 4) << "rank " << r;
    EXPECT_EQ(gradBytes[r], counts + out * (2 * H * 4 + 4) + in * (H * 4 + 4)) << "rank " << r;
    EXPECT_EQ(recorded[r].implied, bytes[r]) << "rank " << r;
    EXPECT_EQ(gradRecorded[r].implied, gradBytes[r]) << "rank " << r;
    EXPECT_EQ(recorded[r].balanced, counts + (n - 1) * 2 * R * H * 4 / n) << "rank " << r;
    EXPECT_EQ(gradRecorded[r].balanced, counts + (n - 1) * R * (3 * H * 4 + 2 * 4) / n)
        << "rank " << r;
  }
  EXPECT_TRUE(unbalanced) << "the routing must send some rank more than it receives";
}

TEST(MoEDroplessRanks, TwoRanksFourExpertsEach) { checkRanks(2, 8); }

TEST(MoEDroplessRanks, FourRanksOneExpertEach) { checkRanks(4, 4); }

TEST(MoEDroplessRanks, FourRanksTwoExpertsEach) { checkRanks(4, 8); }

/// The columns [from, from + n) of each of the `rows` rows of w [rows, cols].
Vec columns(const Vec &w, int64_t rows, int64_t cols, int64_t from, int64_t n) {
  Vec out;
  for (int64_t r = 0; r < rows; ++r)
    out.insert(out.end(), w.begin() + r * cols + from, w.begin() + r * cols + from + n);
  return out;
}

/// moe_dropless and its gradient with expert tensor parallelism on 4 ranks,
/// mesh ep x etp = 2 x 2 (rank = 2 ep + etp): the tokens split along the
/// sequence over [ep, etp], the experts over ep, their ffn over etp (gate
/// and up on the last dimension, down on the middle one). Every rank gets
/// the single-rank run's rows and its ffn shard's weight gradients, and
/// sends the counts and rows over ep, then the received rows' counts and
/// rows over etp and the partner's partial outputs back, exactly as its
/// routing implies.
TEST(MoEDroplessRanks, ExpertTensorParallel) {
  const int64_t n = 4, ep = 2, etp = 2, E = 4;
  Layer l(2, 8, 4, 6, E, 2, 21);
  Rng rng(17);
  Vec dy = rng.vec(l.x.size());
  Vec y = forwardOne(l);
  Grads want = backwardOne(l, dy);
  Mesh mesh{{{"ep", ep}, {"etp", etp}}};
  const int64_t L = l.S / n, El = E / ep, Fl = l.F / etp, H = l.H, R = l.B * L * l.k;
  Layout tokens{{{}, {"ep", "etp"}, {}}, {}, -1}, column{{{"ep"}, {}, {"etp"}}, {}, -1},
      row{{{"ep"}, {"etp"}, {}}, {}, -1};
  auto rig = [&](bool grad) {
    std::vector<Layout> layouts = {tokens, tokens, tokens, column, column, row, tokens};
    std::vector<std::vector<int64_t>> out = {{l.B, l.S, l.H}};
    if (grad) {
      out = {{l.B, l.S, l.H}, {l.B, l.S, l.k}, {l.E, l.H, l.F}, {l.E, l.H, l.F}, {l.E, l.F, l.H}};
      layouts.insert(layouts.end(), {tokens, tokens, column, column, row});
    }
    return StepRig(grad ? "moe_dropless_grad" : "moe_dropless", l.shapes(grad), out,
                   {axesAttr({"ep"}), axesAttr({"etp"})}, mesh, layouts);
  };
  std::vector<Vec> ys(n);
  std::vector<Grads> gs(n);
  std::vector<RankRun> runs(n);
  onRanks(n, mesh, [&](int64_t r, Collectives &collectives) {
    int64_t e = r / etp, t = r % etp;
    Vec x = seqRows(l.x, l.B, l.S, H, r * L, L), w = seqRows(l.w, l.B, l.S, l.k, r * L, L),
        ldy = seqRows(dy, l.B, l.S, H, r * L, L);
    Ids idx = seqRows(l.idx, l.B, l.S, l.k, r * L, L);
    Vec gate = columns(expertRows(l.gate, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl),
        up = columns(expertRows(l.up, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl),
        down = expertRows(l.down, l.F * H, e * El, El);
    // down [El, F, H]: rows [t Fl, (t + 1) Fl) of each expert.
    Vec downShard;
    for (int64_t x0 = 0; x0 < El; ++x0)
      downShard.insert(downShard.end(), down.begin() + (x0 * l.F + t * Fl) * H,
                       down.begin() + (x0 * l.F + (t + 1) * Fl) * H);
    std::vector<BufferView> in = {view(x),    view(w),  view(idx),
                                  view(gate), view(up), view(downShard)};
    StepRig fwd = rig(false), bwd = rig(true);
    ys[r].resize(x.size());
    fwd.views = in;
    fwd.views.emplace_back(ys[r].data(), (int64_t)ys[r].size());
    Grads &g = gs[r];
    g = {Vec(x.size()), Vec(w.size()), Vec(gate.size()), Vec(up.size()), Vec(downShard.size())};
    bwd.views = in;
    for (Vec *v : {&ldy, &g.dx, &g.dw, &g.dgate, &g.dup, &g.ddown})
      bwd.views.emplace_back(v->data(), (int64_t)v->size());
    runs[r] = runPair(fwd, bwd, r, collectives);
  });
  // The rows of chunk c whose expert member e of the expert group owns.
  auto rowsTo = [&](int64_t c, int64_t e) {
    int64_t rows = 0;
    for (int64_t b = 0; b < l.B; ++b)
      for (int64_t s = c * L; s < (c + 1) * L; ++s)
        for (int64_t j = 0; j < l.k; ++j)
          rows += l.idx[(b * l.S + s) * l.k + j] / El == e;
    return rows;
  };
  // Rank r = 2 e + t exchanges with rank 2 (1 - e) + t over ep; what it
  // then computes for its experts it gathers with rank 2 e + (1 - t).
  auto received = [&](int64_t r) {
    int64_t e = r / etp, t = r % etp;
    return rowsTo(r, e) + rowsTo((1 - e) * etp + t, e);
  };
  int64_t counts = (ep - 1 + etp - 1) * El * 4;
  bool unbalanced = false;
  for (int64_t r = 0; r < n; ++r) {
    int64_t e = r / etp, t = r % etp, other = (1 - e) * etp + t, partner = e * etp + (1 - t);
    EXPECT_EQ(runs[r].errors, "") << r;
    expectClose(ys[r], seqRows(y, l.B, l.S, H, r * L, L), 1e-5, 1e-6, "a rank's y");
    expectClose(gs[r].dx, seqRows(want.dx, l.B, l.S, H, r * L, L), 1e-4, 1e-6, "a rank's dx");
    expectClose(gs[r].dw, seqRows(want.dw, l.B, l.S, l.k, r * L, L), 1e-4, 1e-6,
                "a rank's dweights");
    // Every row of the two groups reached its expert's ffn shards: the
    // weight gradients of a rank's shard are whole.
    expectClose(gs[r].dgate,
                columns(expertRows(want.dgate, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl), 1e-4,
                1e-6, "dgate");
    expectClose(gs[r].dup,
                columns(expertRows(want.dup, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl), 1e-4,
                1e-6, "dup");
    Vec ddown = expertRows(want.ddown, l.F * H, e * El, El), ddownShard;
    for (int64_t x0 = 0; x0 < El; ++x0)
      ddownShard.insert(ddownShard.end(), ddown.begin() + (x0 * l.F + t * Fl) * H,
                        ddown.begin() + (x0 * l.F + (t + 1) * Fl) * H);
    expectClose(gs[r].ddown, ddownShard, 1e-4, 1e-6, "ddown");
    int64_t out = rowsTo(r, 1 - e), in = rowsTo(other, e), mine = received(r),
            theirs = received(partner);
    unbalanced = unbalanced || mine != theirs;
    EXPECT_EQ(runs[r].bytes, counts + (out + in + mine + theirs) * H * 4) << "rank " << r;
    EXPECT_EQ(runs[r].gradBytes,
              counts + (out + mine) * (2 * H * 4 + 4) + (in + theirs) * (H * 4 + 4))
        << "rank " << r;
    EXPECT_EQ(runs[r].recorded.implied, runs[r].bytes) << "rank " << r;
    EXPECT_EQ(runs[r].gradRecorded.implied, runs[r].gradBytes) << "rank " << r;
    EXPECT_EQ(runs[r].recorded.balanced,
              counts + (ep - 1) * 2 * R * H * 4 / ep + (etp - 1) * 2 * R * H * 4)
        << "rank " << r;
    EXPECT_EQ(runs[r].gradRecorded.balanced, counts + (ep - 1) * R * (3 * H * 4 + 2 * 4) / ep +
                                                 (etp - 1) * R * (3 * H * 4 + 2 * 4))
        << "rank " << r;
  }
  EXPECT_TRUE(unbalanced) << "the routing must give the members of a pair different rows";
}

/// The largest |got - want| within `rtol` of the largest |want| (the etp
/// partial values' roundings are relative to them, not to their sum, which
/// may cancel).
void expectNormwise(const Vec &got, const Vec &want, double rtol, const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, (double)std::abs(got[i] - want[i]));
    scale = std::max(scale, (double)std::abs(want[i]));
  }
  EXPECT_LE(err, rtol * scale) << what;
}

/// Whether every value of `v` is a bf16 value.
bool isBf16(const Vec &v) {
  for (float x : v)
    if (bf16ToFloat(floatToBf16(x)) != x)
      return false;
  return true;
}

/// A 16-bit step's expert outputs are of its type, as Megatron's experts'
/// GEMMs write them, before they travel back and combine, and so are the
/// backward's dx and dweight rows: with one choice of weight 1 a token,
/// every y, dx and dweight is a bf16 value, on one rank and on ep 2 x etp 2
/// (the partial values rounded, summed in f32 in member order and rounded
/// again), within bf16's roundings of the f32 step; and each value crosses
/// in 2 bytes, as counted.
TEST(MoEDroplessRanks, SixteenBitRowsAreOfTheStepsType) {
  const int64_t n = 4, ep = 2, etp = 2, E = 4;
  Layer l(2, 8, 4, 6, E, 1, 29);
  for (size_t t = 0; t < l.idx.size(); ++t) {
    l.idx[t] = (int32_t)((t * 3 + t / 5) % E);
    l.w[t] = 1.0f;
  }
  Rng rng(31);
  Vec dy = rng.vec(l.x.size());
  for (float &v : dy)
    v = bf16ToFloat(floatToBf16(v));
  Vec f32 = forwardOne(l);
  Grads want = backwardOne(l, dy);
  // x, the router's weights, y, dy, dx and dweights in bf16 (the kernels
  // read and write them widened).
  auto sixteen = [](StepRig &rig) {
    for (int i :
         rig.tensors.size() > 7 ? std::vector<int>{0, 1, 6, 7, 8} : std::vector<int>{0, 1, 6})
      rig.tensors[i].dtype = DType::BF16;
  };
  {
    StepRig fwd = rigOf(l, false, Mesh{}, {}), bwd = rigOf(l, true, Mesh{}, {});
    sixteen(fwd);
    sixteen(bwd);
    Vec y(l.x.size());
    Grads g{Vec(l.x.size()), Vec(l.w.size()), Vec(l.gate.size()), Vec(l.up.size()),
            Vec(l.down.size())};
    runOne(fwd, layerViews(l, {view(y)}));
    runOne(bwd, layerViews(l, {view(dy), view(g.dx), view(g.dw), view(g.dgate), view(g.dup),
                               view(g.ddown)}));
    EXPECT_TRUE(isBf16(y)) << "one rank: a y kept bits below bf16's";
    EXPECT_TRUE(isBf16(g.dx)) << "one rank: a dx kept bits below bf16's";
    EXPECT_TRUE(isBf16(g.dw)) << "one rank: a dweight kept bits below bf16's";
    expectClose(y, f32, 8e-3, 1e-6, "one rank's bf16 y");
    expectClose(g.dx, want.dx, 8e-3, 1e-6, "one rank's bf16 dx");
    expectClose(g.dw, want.dw, 8e-3, 1e-6, "one rank's bf16 dweights");
  }
  Mesh mesh{{{"ep", ep}, {"etp", etp}}};
  const int64_t L = l.S / n, El = E / ep, Fl = l.F / etp, H = l.H;
  Layout tokens{{{}, {"ep", "etp"}, {}}, {}, -1}, column{{{"ep"}, {}, {"etp"}}, {}, -1},
      row{{{"ep"}, {"etp"}, {}}, {}, -1};
  auto rig = [&](bool grad) {
    std::vector<Layout> layouts = {tokens, tokens, tokens, column, column, row, tokens};
    std::vector<std::vector<int64_t>> out = {{l.B, l.S, l.H}};
    if (grad) {
      out = {{l.B, l.S, l.H}, {l.B, l.S, l.k}, {l.E, l.H, l.F}, {l.E, l.H, l.F}, {l.E, l.F, l.H}};
      layouts.insert(layouts.end(), {tokens, tokens, column, column, row});
    }
    StepRig made(grad ? "moe_dropless_grad" : "moe_dropless", l.shapes(grad), out,
                 {axesAttr({"ep"}), axesAttr({"etp"})}, mesh, layouts);
    sixteen(made);
    return made;
  };
  std::vector<Vec> ys(n);
  std::vector<Grads> gs(n);
  std::vector<RankRun> runs(n);
  onRanks(n, mesh, [&](int64_t r, Collectives &collectives) {
    int64_t e = r / etp, t = r % etp;
    Vec x = seqRows(l.x, l.B, l.S, H, r * L, L), w = seqRows(l.w, l.B, l.S, l.k, r * L, L),
        ldy = seqRows(dy, l.B, l.S, H, r * L, L);
    Ids idx = seqRows(l.idx, l.B, l.S, l.k, r * L, L);
    Vec gate = columns(expertRows(l.gate, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl),
        up = columns(expertRows(l.up, H * l.F, e * El, El), El * H, l.F, t * Fl, Fl),
        down = expertRows(l.down, l.F * H, e * El, El), downShard;
    for (int64_t x0 = 0; x0 < El; ++x0)
      downShard.insert(downShard.end(), down.begin() + (x0 * l.F + t * Fl) * H,
                       down.begin() + (x0 * l.F + (t + 1) * Fl) * H);
    std::vector<BufferView> in = {view(x),    view(w),  view(idx),
                                  view(gate), view(up), view(downShard)};
    StepRig fwd = rig(false), bwd = rig(true);
    ys[r].resize(x.size());
    fwd.views = in;
    fwd.views.emplace_back(ys[r].data(), (int64_t)ys[r].size());
    Grads &g = gs[r];
    g = {Vec(x.size()), Vec(w.size()), Vec(gate.size()), Vec(up.size()), Vec(downShard.size())};
    bwd.views = in;
    for (Vec *v : {&ldy, &g.dx, &g.dw, &g.dgate, &g.dup, &g.ddown})
      bwd.views.emplace_back(v->data(), (int64_t)v->size());
    runs[r] = runPair(fwd, bwd, r, collectives);
  });
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(runs[r].errors, "") << r;
    EXPECT_TRUE(isBf16(ys[r])) << "rank " << r << ": a y kept bits below bf16's";
    EXPECT_TRUE(isBf16(gs[r].dx)) << "rank " << r << ": a dx kept bits below bf16's";
    EXPECT_TRUE(isBf16(gs[r].dw)) << "rank " << r << ": a dweight kept bits below bf16's";
    // Two roundings of the partial values and one of their sum.
    std::string rank = "rank " + std::to_string(r);
    expectNormwise(ys[r], seqRows(f32, l.B, l.S, H, r * L, L), 1.6e-2, rank + "'s bf16 y");
    expectNormwise(gs[r].dx, seqRows(want.dx, l.B, l.S, H, r * L, L), 1.6e-2, rank + "'s bf16 dx");
    expectNormwise(gs[r].dw, seqRows(want.dw, l.B, l.S, l.k, r * L, L), 1.6e-2,
                   rank + "'s bf16 dweights");
    EXPECT_EQ(runs[r].recorded.implied, runs[r].bytes) << "rank " << r;
    EXPECT_EQ(runs[r].gradRecorded.implied, runs[r].gradBytes) << "rank " << r;
  }
}

/// The contract refuses experts split over other axes than expert_axes and
/// an expert index the layer does not have.
TEST(MoEDroplessKernelEntries, RefuseWhatTheKernelCannotRoute) {
  Layer l(1, 4, 2, 2, 4, 2, 1);
  Mesh mesh{{{"ep", 2}}};
  StepRig rig = rigOf(l, false, mesh, {"ep"});
  rig.step.attrs = {axesAttr({}), AttrValue{}};
  std::string why = rig.verify();
  EXPECT_NE(why.find("gate's experts are split over [ep], not over attribute 'expert_axes' []"),
            std::string::npos)
      << why;
  l.idx[3] = 4;
  StepRig one = rigOf(l, false, Mesh{}, {});
  Vec y(l.x.size());
  one.views = {view(l.x), view(l.w), view(l.idx), view(l.gate), view(l.up), view(l.down), view(y)};
  ASSERT_EQ(one.verify(), "");
  try {
    one.step.kernel->run(one.step, one.frame);
    ADD_FAILURE() << "an index outside the experts ran";
  } catch (Stop &stop) {
    EXPECT_NE(stop.error.find("outside [0, 4), the experts"), std::string::npos) << stop.error;
  }
}

} // namespace
