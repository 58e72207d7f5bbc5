//===- plan_fuzzer.cpp - plans with valid hashes into the loader and executor ===//
//
// libFuzzer target (built with -DSHARDLINE_FUZZ=ON): every input is a plan
// file. It is loaded (header, hash, FlatBuffers verifier, the plan's own
// consistency), checked against the CPU kernels' contracts, and, when it
// passes and is small, run for one step on its mesh's ranks as threads and
// once as the single-device reference. Whatever the input, that must end in
// an error message or a result: a crash, a sanitizer report or a hang is a
// bug.
//
// A random byte almost never survives the content hash, so the mutator
// works on the decoded plan: it rewrites integers (shape dimensions, mesh
// axis sizes, arena offsets, dtypes, operand indices, attribute values),
// floats and names in place, where the FlatBuffers structure keeps them, and
// writes the header again with the new hash. One mutation in eight is a
// plain byte mutation of the payload (also rehashed), so the verifier's
// FlatBuffers checks are fuzzed too.
//
//===----------------------------------------------------------------------===//

#include "core/plan.h"
#include "exec/executor.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace shardline::rt;
namespace plan = shardline::plan;

extern "C" size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t maxSize);

namespace {

/// The work one input may ask of the executor: a run of a bigger plan says
/// nothing a small one does not and would slow the search down.
constexpr int64_t kMaxRanks = 8;
constexpr int64_t kMaxElements = 1 << 16; ///< over all tensors, global
constexpr size_t kMaxOps = 256;
constexpr size_t kMaxInputBytes = 1 << 20;

bool smallEnough(const plan::Plan &p) {
  int64_t ranks = 1, elements = 0;
  for (const auto *axis : *p.mesh())
    ranks *= axis->size(); // bounded by the loader
  if (ranks > kMaxRanks || p.ops()->size() > kMaxOps)
    return false;
  for (const auto *t : *p.tensors()) {
    int64_t n = 1;
    for (int64_t d : *t->shape())
      n *= d; // bounded by the loader
    elements += n;
    if (elements > kMaxElements)
      return false;
  }
  return true;
}

/// A place in the payload a mutation may rewrite: an integer of `width`
/// bytes, a double, or the bytes of a string.
struct Slot {
  enum Kind { Int, Float, String } kind;
  uint8_t *at;
  size_t width;
};

/// The slots of a verified plan. The generated tables hide their
/// flatbuffers::Table base; its field lookup is what finds a stored scalar.
class Slots {
public:
  std::vector<Slot> all;

  template <typename T> void field(const T *table, flatbuffers::voffset_t vt, size_t width) {
    if (!table)
      return;
    const auto *t = reinterpret_cast<const flatbuffers::Table *>(table);
    if (const uint8_t *at = t->GetAddressOf(vt))
      all.push_back({Slot::Int, const_cast<uint8_t *>(at), width});
  }
  template <typename T> void ints(const flatbuffers::Vector<T> *v) {
    if (v)
      for (size_t i = 0; i < v->size(); ++i)
        all.push_back({Slot::Int, const_cast<uint8_t *>(v->Data()) + i * sizeof(T), sizeof(T)});
  }
  void floats(const flatbuffers::Vector<double> *v) {
    if (v)
      for (size_t i = 0; i < v->size(); ++i)
        all.push_back({Slot::Float, const_cast<uint8_t *>(v->Data()) + i * 8, 8});
  }
  void string(const flatbuffers::String *s) {
    if (s && s->size())
      all.push_back(
          {Slot::String, reinterpret_cast<uint8_t *>(const_cast<char *>(s->data())), s->size()});
  }
  void strings(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *v) {
    if (v)
      for (const auto *s : *v)
        string(s);
  }

  void collect(const plan::Plan &p) {
    field(&p, plan::Plan::VT_ARENA_BYTES, 8);
    field(p.facts(), plan::ModelFacts::VT_VOCAB, 8);
    ints(p.inputs());
    ints(p.outputs());
    if (p.mesh())
      for (const auto *axis : *p.mesh()) {
        field(axis, plan::Axis::VT_SIZE, 8);
        string(axis->name());
      }
    if (p.tensors())
      for (const auto *t : *p.tensors()) {
        field(t, plan::Tensor::VT_DTYPE, 1);
        field(t, plan::Tensor::VT_ROLE, 1);
        field(t, plan::Tensor::VT_ARENA_OFFSET, 8);
        ints(t->shape());
        if (const auto *layout = t->layout()) {
          field(layout, plan::Layout::VT_ORDER_DIM, 8);
          strings(layout->partial());
          if (layout->dims())
            for (const auto *list : *layout->dims())
              strings(list->axes());
        }
      }
    if (p.ops())
      for (const auto *op : *p.ops()) {
        ints(op->operands());
        ints(op->results());
        strings(op->operand_names());
        strings(op->result_names());
        string(op->kind());
        if (op->attrs())
          for (const auto *a : *op->attrs()) {
            ints(a->ints());
            floats(a->floats());
            strings(a->strings());
          }
      }
  }
};

int64_t readInt(const uint8_t *at, size_t width) {
  switch (width) {
  case 1:
    return (int8_t)at[0];
  case 4: {
    int32_t v;
    std::memcpy(&v, at, 4);
    return v;
  }
  default: {
    int64_t v;
    std::memcpy(&v, at, 8);
    return v;
  }
  }
}

void writeInt(uint8_t *at, size_t width, int64_t v) {
  if (width == 1) {
    at[0] = (uint8_t)v;
  } else if (width == 4) {
    int32_t w = (int32_t)v;
    std::memcpy(at, &w, 4);
  } else {
    std::memcpy(at, &v, 8);
  }
}

/// A value near the old one or at an edge: what breaks a size computation.
int64_t mutateInt(int64_t old, std::minstd_rand &rng) {
  const int64_t edges[] = {0,
                           1,
                           -1,
                           2,
                           3,
                           4,
                           7,
                           8,
                           64,
                           1 << 20,
                           std::numeric_limits<int32_t>::max(),
                           std::numeric_limits<int32_t>::min(),
                           int64_t(1) << 31,
                           int64_t(1) << 32,
                           int64_t(1) << 40,
                           std::numeric_limits<int64_t>::max(),
                           std::numeric_limits<int64_t>::min()};
  switch (rng() % 6) {
  case 0:
    return edges[rng() % (sizeof edges / sizeof edges[0])];
  // In unsigned arithmetic: the old value may be anything.
  case 1:
    return (int64_t)((uint64_t)old + 1);
  case 2:
    return (int64_t)((uint64_t)old - 1);
  case 3:
    return (int64_t)((uint64_t)old * 2);
  case 4:
    return old / 2;
  default:
    return (int64_t)(rng() % 17);
  }
}

double mutateFloat(double old, std::minstd_rand &rng) {
  const double edges[] = {0.0,
                          -0.0,
                          -1.0,
                          1e-30,
                          1e30,
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity(),
                          std::numeric_limits<double>::quiet_NaN()};
  return rng() % 2 ? edges[rng() % (sizeof edges / sizeof edges[0])] : -old * 2;
}

void mutateSlot(const Slot &slot, const std::vector<Slot> &all, std::minstd_rand &rng) {
  switch (slot.kind) {
  case Slot::Int:
    writeInt(slot.at, slot.width, mutateInt(readInt(slot.at, slot.width), rng));
    break;
  case Slot::Float: {
    double v;
    std::memcpy(&v, slot.at, 8);
    v = mutateFloat(v, rng);
    std::memcpy(slot.at, &v, 8);
    break;
  }
  case Slot::String: {
    // Another name of the same length (an axis for another, an operand
    // name for another), else one letter changed.
    std::vector<const Slot *> same;
    for (const Slot &s : all)
      if (s.kind == Slot::String && s.width == slot.width && s.at != slot.at)
        same.push_back(&s);
    if (!same.empty() && rng() % 4)
      std::memmove(slot.at, same[rng() % same.size()]->at, slot.width);
    else
      slot.at[rng() % slot.width] = (uint8_t)('a' + rng() % 26);
    break;
  }
  }
}

/// The header of `payload` as the compiler writes it, hash included.
void rewriteHeader(uint8_t *data, size_t payloadSize) {
  std::vector<uint8_t> wrapped = wrapPlan(data + kPlanHeaderBytes, payloadSize);
  std::memcpy(data, wrapped.data(), kPlanHeaderBytes);
}

} // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t maxSize,
                                          unsigned int seed) {
  std::minstd_rand rng(seed);
  if (size < kPlanHeaderBytes || maxSize < kPlanHeaderBytes)
    return LLVMFuzzerMutate(data, size, maxSize);
  size_t payload = size - kPlanHeaderBytes;
  flatbuffers::Verifier verifier(data + kPlanHeaderBytes, payload);
  if (rng() % 8 == 0 || !plan::VerifyPlanBuffer(verifier)) {
    payload = LLVMFuzzerMutate(data + kPlanHeaderBytes, payload, maxSize - kPlanHeaderBytes);
  } else {
    Slots slots;
    slots.collect(*plan::GetPlan(data + kPlanHeaderBytes));
    if (slots.all.empty())
      return LLVMFuzzerMutate(data, size, maxSize);
    for (unsigned n = 1 + rng() % 3; n > 0; --n)
      mutateSlot(slots.all[rng() % slots.all.size()], slots.all, rng);
  }
  rewriteHeader(data, payload);
  return kPlanHeaderBytes + payload;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > kMaxInputBytes)
    return -1;
  std::string error;
  std::optional<LoadedPlan> loaded = loadPlan(std::vector<uint8_t>(data, data + size), error);
  if (!loaded) {
    if (error.empty())
      __builtin_trap(); // a refused plan always says why
    return 0;
  }
  if (!checkProgram(*loaded).empty() || !smallEnough(*loaded->root()))
    return 0;
  // Either run may end in an error (an id out of range, two live values in
  // the same arena bytes); neither may crash.
  RunOptions options;
  runPlan(*loaded, options);
  options.singleDevice = true;
  runPlan(*loaded, options);
  return 0;
}
