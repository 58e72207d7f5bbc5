//===- table.h - How a CPU kernel file adds its table entries ---*- C++ -*-===//
//
// Each file under kernels/cpu/ holds the reference numerics of some ops and,
// below them, those ops' entries in the CPU kernel table: the operand, result
// and attribute names each binds, the adapter from a step to the numerics,
// and the rank facts it resolves at load. The file ends with
//
//   SHARDLINE_CPU_KERNELS(<file name>) { addKernel(t, "<kind>", {...}); ... }
//
// and the build lists the files, so a new file joins the table without an
// edit anywhere else (exec/cpu_kernels.cpp assembles it).
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_KERNELS_CPU_TABLE_H
#define SHARDLINE_RUNTIME_KERNELS_CPU_TABLE_H

#include "exec/collectives.h"
#include "exec/expert_load.h"
#include "exec/program.h"
#include "exec/verify.h"
#include "kernels/cpu/kernels.h"

#include <initializer_list>
#include <string>
#include <vector>

/// Defines the function through which kernels/cpu/<file>.cpp adds its
/// entries to the table `t`.
#define SHARDLINE_CPU_KERNELS(file) void addCpuKernels_##file(KernelTable &t)

namespace shardline::rt {

/// Adds the entry of op kind `kind`; a kind two files claim is a build
/// mistake that every run reports at startup.
void addKernel(KernelTable &t, const char *kind, KernelSpec spec);

/// The result name of the ops with one result.
inline const std::vector<std::string> kResult = {"result"};

/// Sequence chunks of a local [batch, seq, ...] value: two per rank in zigzag
/// order, else one.
inline int64_t chunksOf(const TensorInfo &t) { return chunksPerRank(t.layout, 1); }

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

/// The entry of an elementwise kernel of two operands and one result.
template <void (*Fn)(const float *, const float *, int64_t, float *)>
void binary(const Step &s, Frame &f) {
  Fn(f.f(s.in[0]), f.f(s.in[1]), f.n(s.out[0]), f.f(s.out[0]));
}

/// This rank's group over the mesh axes an attribute names.
inline std::vector<int64_t> group(const Frame &f, const AttrValue &axes) {
  return f.mesh.group(f.self, axes.strings);
}

/// The rows of tokens[E, r1, ..., rn, H] per expert: the product of the
/// dimensions between the experts and the hidden one (the dropless slabs'
/// [B, S], capacity mode's [Gb, Gs, C]).
inline int64_t expertRows(const std::vector<int64_t> &tokens) {
  int64_t rows = 1;
  for (size_t d = 1; d + 1 < tokens.size(); ++d)
    rows *= tokens[d];
  return rows;
}

/// An argument no step has: the checks on it do nothing.
inline constexpr Contract::Arg kNoArg{true, ~size_t(0)};

// -- capacity-mode MoE (moe.cpp; the backward in moe_grad.cpp) ---------------

/// The attributes of the capacity ops in their entries' order: experts,
/// capacity, group (and the slots' drop_policy), or group alone.
enum CapacityAttr { kExperts, kCapacity, kGroup, kPolicy };
std::vector<AttrSpec> capacityAttrs(bool withExperts);

/// The local dims of a capacity step: [B, S, k] from `routing`, the group
/// from its attribute, E and C from `buffers` [E, Gb, Gs, C, H] (or, when
/// buffers is -1, from the attributes).
inline cpu::CapacityDims capacityDims(const Step &s, const Frame &f, int32_t routing,
                                      int32_t buffers) {
  const std::vector<int64_t> &r = f.local(routing);
  const std::vector<int64_t> &group = s.attrs[s.attrs.size() > 1 ? kGroup : 0].ints;
  cpu::CapacityDims d;
  d.B = r[0], d.S = r[1], d.k = r[2];
  d.rows = group[0], d.positions = group[1];
  if (buffers >= 0) {
    d.E = f.local(buffers)[0], d.C = f.local(buffers)[3];
  } else {
    d.E = s.attrs[kExperts].i, d.C = s.attrs[kCapacity].i;
  }
  return d;
}

/// The contract the capacity ops share: the group attribute is [rows,
/// positions], both positive, tiling the local [B, S] of the `routing`
/// operands (one shape [B, S, k]); experts and capacity positive where the op
/// has them; `tokens` [B, S, H]; `buffers` [E, B/rows, S/positions, C, H],
/// with E and C the attributes' where the op has them. tokens and buffers may
/// be kNoArg.
void checkCapacity(Contract &c, std::initializer_list<Contract::Arg> routing, Contract::Arg tokens,
                   Contract::Arg buffers);

// -- what a backward op shares with its forward op -------------------------
//
// A backward op reads the same rank facts and attributes as the forward op
// it differentiates, so the two entries share the resolvers, the attribute
// lists and the contracts below (defined beside the forward kernels).

/// RoPE's attributes and contract: x[B, S, heads*head_dim] (operand 0) and a
/// result of its shape.
inline std::vector<AttrSpec> ropeAttrs() {
  return {{"head_dim", AttrKind::Int}, {"theta", AttrKind::Float}};
}
void checkRope(Contract &c);

/// The global positions of the tokens of operand 0 (RoPE's x, attention's
/// q) and, for attention, of operand 1 (the keys).
void resolvePositions(Step &s, const Frame &f);
void resolveQueryKeyPositions(Step &s, const Frame &f);
/// Ring attention's: the query positions, the ring (attribute kAxes) in
/// order from this rank and each member's key positions.
void resolveRing(Step &s, const Frame &f);

/// The attribute order of the attention entries; an op with more attributes
/// lists them after these.
enum AttentionAttr { kHeads, kCausal, kScale, kAxes };
inline std::vector<AttrSpec> attentionAttrs() {
  return {{"heads", AttrKind::Int}, {"causal", AttrKind::Int}, {"scale", AttrKind::Float, true}};
}
/// The local dimensions of q (operand 0), k (operand 1) and the heads.
cpu::AttentionDims attentionDims(const Step &s, const Frame &f);
/// An attention op without a scale means the usual 1/sqrt(head_dim).
float attentionScale(const Step &s, const cpu::AttentionDims &dims);

/// The contract of the operands of an attention op that start with
/// q[B, Sq, HQ*D], k and v [B, Sk, HKV*D] and whose attribute 0 is `heads`:
/// the heads divide q's width, and the kv heads (per rank) divide the query
/// heads. checkAttention adds a result of q's shape; windowed attention adds
/// its own checks to it.
void checkAttentionInputs(Contract &c);
void checkAttention(Contract &c);

/// The first vocabulary entry of this rank's rows of the table (operand
/// `Table`, vocabulary along dimension 0).
template <int Table> void resolveTableOffset(Step &s, const Frame &f) {
  s.facts.vocabOffset = f.owned(s.in[Table], 0, f.self).front();
}

/// Cross-entropy over logits[B, S, V] (operand 0) whose attribute 0 is
/// `vocab_axes`: the first vocabulary entry of this rank's logits and the
/// vocabulary's group.
void resolveCrossEntropy(Step &s, const Frame &f);
void checkCrossEntropy(Contract &c);
/// The pointers to the group members' pieces in `mail`, in the group's
/// order.
std::vector<const float *> memberPieces(const Step &s, const Mail &mail);
/// What both cross-entropy kernels start from, on this rank's logits[T, V]
/// (operand 0) once the labels (operand 1) are checked to lie in the
/// vocabulary: gmax[T], the per-token maximum over the whole vocabulary,
/// combined over the vocabulary's group.
struct XentStart {
  int64_t T, V;
  const float *logits;
  std::vector<float> gmax;
};
XentStart xentStart(const Step &s, Frame &f);

} // namespace shardline::rt

#endif
