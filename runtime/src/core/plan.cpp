//===- plan.cpp - the plan container ---------------------------------------===//

#include "core/plan.h"
#include "core/layout.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

namespace shardline::rt {

DType dtypeOf(plan::DType t) {
  switch (t) {
  case plan::DType::BF16:
    return DType::BF16;
  case plan::DType::F16:
    return DType::F16;
  case plan::DType::I32:
    return DType::I32;
  default:
    return DType::F32;
  }
}

int64_t elementBytes(plan::DType t) { return dtypeSize(dtypeOf(t)); }

namespace {
constexpr char kMagic[8] = {'S', 'L', 'P', 'L', 'A', 'N', 0, 1};
constexpr char kExecutableMarker[8] = {'S', 'L', 'E', 'X', 'E', 'C', '0', '1'};

uint64_t readU64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}
uint32_t readU32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
void writeU64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = (uint8_t)(v >> (8 * i));
}

/// The product of `values` (each at least 1), or -1 once it passes `limit`:
/// sizes from a plan are bounded before anything multiplies them.
template <typename Range> int64_t boundedProduct(const Range &values, int64_t limit) {
  int64_t n = 1;
  for (int64_t v : values)
    if (v < 1 || __builtin_mul_overflow(n, v, &n) || n > limit)
      return -1;
  return n;
}

std::string meshText(const Mesh &mesh) {
  std::string s = "[";
  for (size_t a = 0; a < mesh.axes.size(); ++a)
    s += (a ? ", " : "") + mesh.axes[a].first + "=" + std::to_string(mesh.axes[a].second);
  return s + "]";
}

std::string tensorName(const plan::Plan &p, int64_t t) {
  const auto *tensor = p.tensors()->Get(t);
  return tensor->name() && tensor->name()->size() ? "'" + tensor->name()->str() + "'"
                                                  : "#" + std::to_string(t);
}

/// The mesh: named, distinct axes of positive sizes, at most kMaxRanks ranks.
std::string checkMesh(const plan::Plan &p, Mesh &mesh) {
  std::set<std::string> axes;
  for (const auto *axis : *p.mesh()) {
    if (axis->size() < 1)
      return "mesh axis '" + axis->name()->str() + "' has size " + std::to_string(axis->size());
    if (axis->name()->size() == 0)
      return "a mesh axis has no name";
    if (!axes.insert(axis->name()->str()).second)
      return "mesh axis '" + axis->name()->str() + "' appears twice";
    mesh.axes.emplace_back(axis->name()->str(), axis->size());
  }
  std::vector<int64_t> sizes;
  for (const auto &axis : mesh.axes)
    sizes.push_back(axis.second);
  if (boundedProduct(sizes, kMaxRanks) < 0)
    return "the mesh " + meshText(mesh) + " has more than " + std::to_string(kMaxRanks) + " ranks";
  return "";
}

/// A tensor on its own: a known dtype, role and init, a shape of bounded
/// size, and a layout that fits the mesh and the shape.
std::string checkTensor(const plan::Plan &p, int64_t t, const Mesh &mesh) {
  const auto *tensor = p.tensors()->Get(t);
  std::string name = "tensor " + tensorName(p, t);
  if (!tensor->shape())
    return name + " has no shape";
  if (tensor->shape()->size() > kMaxTensorRank)
    return name + " has rank " + std::to_string(tensor->shape()->size()) + ", more than " +
           std::to_string(kMaxTensorRank);
  for (int64_t d : *tensor->shape())
    if (d < 1)
      return name + " has a dimension of size " + std::to_string(d);
  if (boundedProduct(*tensor->shape(), kMaxTensorElements) < 0)
    return name + " has more than " + std::to_string(kMaxTensorElements) + " elements";
  if (tensor->dtype() < plan::DType::MIN || tensor->dtype() > plan::DType::MAX)
    return name + " has unknown dtype " + std::to_string((int)tensor->dtype());
  if (tensor->role() < plan::Role::MIN || tensor->role() > plan::Role::MAX)
    return name + " has unknown role " + std::to_string((int)tensor->role());
  if (tensor->init() < plan::Init::MIN || tensor->init() > plan::Init::MAX)
    return name + " has unknown init " + std::to_string((int)tensor->init());
  // Weights are generated (or loaded) as floats; only tokens, labels and
  // indices are integers.
  if (tensor->role() == plan::Role::Weight && tensor->dtype() == plan::DType::I32)
    return name + " is an i32 weight; weights are float tensors";
  // Nothing sums integers: a pending sum of one has no collective to resolve it.
  if (tensor->dtype() == plan::DType::I32 && tensor->layout() && tensor->layout()->partial() &&
      tensor->layout()->partial()->size() > 0)
    return name + " is an i32 pending sum; integer tensors carry no pending sums";
  if (!std::isfinite(tensor->scale()) || !std::isfinite(tensor->offset()))
    return name + " has an init scale or offset that is not finite";
  if (const auto *layout = tensor->layout()) {
    if (layout->dims() && layout->dims()->size() != tensor->shape()->size())
      return name + " has a rank-" + std::to_string(layout->dims()->size()) +
             " layout for a rank-" + std::to_string(tensor->shape()->size()) + " shape";
    if (layout->order_dim() < -1 || layout->order_dim() >= (int64_t)tensor->shape()->size())
      return name + " orders dimension " + std::to_string(layout->order_dim()) + " of a rank-" +
             std::to_string(tensor->shape()->size()) + " shape";
    if (layout->dims())
      for (const auto *list : *layout->dims())
        if (list->axes())
          for (const auto *a : *list->axes())
            if (!mesh.size(a->str()))
              return name + " is split over unknown mesh axis '" + a->str() + "'";
  }
  std::vector<int64_t> shape(tensor->shape()->begin(), tensor->shape()->end());
  if (std::string why = verifyLayout(layoutOf(*tensor), &mesh, &shape); !why.empty())
    return name + " has an invalid layout: " + why;
  return "";
}

/// Every weight a Copy init makes copies a generated or loaded weight of
/// its shape and layout; no other tensor names one.
std::string checkCopies(const plan::Plan &p) {
  int64_t numTensors = p.tensors()->size();
  for (int64_t t = 0; t < numTensors; ++t) {
    const auto *tensor = p.tensors()->Get(t);
    std::string name = "tensor " + tensorName(p, t);
    int32_t from = tensor->copy_of();
    if (tensor->init() != plan::Init::Copy || tensor->role() != plan::Role::Weight) {
      if (from != -1)
        return name + " names tensor " + std::to_string(from) +
               " to copy, and it is not a weight whose init is copy";
      continue;
    }
    if (from < 0 || from >= numTensors || from == t)
      return name + " copies tensor " + std::to_string(from) + " of " +
             std::to_string(numTensors);
    const auto *source = p.tensors()->Get(from);
    if (source->role() != plan::Role::Weight || source->init() == plan::Init::Copy)
      return name + " copies " + tensorName(p, from) + ", which is not a generated or loaded weight";
    if (!std::equal(tensor->shape()->begin(), tensor->shape()->end(), source->shape()->begin(),
                    source->shape()->end()) ||
        layoutOf(*tensor) != layoutOf(*source))
      return name + " copies " + tensorName(p, from) + " of another shape or layout";
  }
  return "";
}

/// Arena offsets and sizes: every activation inside the arena at an offset
/// aligned to its elements, and the arena
/// no larger than every activation side by side. Whether values live at the
/// same time overlap is the executor's check as it places them.
std::string checkArena(const plan::Plan &p, const Mesh &mesh) {
  if (p.arena_bytes() < 0)
    return "the arena has " + std::to_string(p.arena_bytes()) + " bytes";
  // The arena never needs more than every activation side by side (64-byte
  // slots); a plan that asks for more is not one the compiler wrote.
  int64_t allSlots = 0;
  for (int64_t t = 0; t < (int64_t)p.tensors()->size(); ++t) {
    const auto *tensor = p.tensors()->Get(t);
    if (tensor->arena_offset() < 0)
      continue;
    // Bounded by checkTensor: at most kMaxTensorBytes.
    int64_t bytes = numElements(localShape(layoutOf(*tensor), mesh,
                                           {tensor->shape()->begin(), tensor->shape()->end()})) *
                    elementBytes(tensor->dtype());
    if (allSlots < p.arena_bytes())
      allSlots += arenaSlotBytes(bytes);
    if (tensor->arena_offset() % elementBytes(tensor->dtype()) != 0)
      return "tensor " + tensorName(p, t) + " at arena offset " +
             std::to_string(tensor->arena_offset()) + " is not aligned to its " +
             std::to_string(elementBytes(tensor->dtype())) + "-byte elements";
    if (tensor->arena_offset() > p.arena_bytes() - bytes)
      return "tensor " + tensorName(p, t) + " at arena offset " +
             std::to_string(tensor->arena_offset()) + " (" + std::to_string(bytes) +
             " bytes) exceeds the arena of " + std::to_string(p.arena_bytes()) + " bytes";
  }
  if (p.arena_bytes() > allSlots)
    return "the arena of " + std::to_string(p.arena_bytes()) +
           " bytes is larger than all activations side by side (" + std::to_string(allSlots) +
           " bytes)";
  return "";
}

/// The FlatBuffers verifier checks a vector's length field, not that its
/// 8-byte elements are aligned, which reading them needs.
template <typename T> bool aligned(const flatbuffers::Vector<T> *v) {
  return !v || v->size() == 0 || reinterpret_cast<uintptr_t>(v->Data()) % alignof(T) == 0;
}

std::string checkAlignment(const plan::Plan &p) {
  if (p.tensors())
    for (int64_t t = 0; t < (int64_t)p.tensors()->size(); ++t)
      if (!aligned(p.tensors()->Get(t)->shape()))
        return "the shape of tensor " + tensorName(p, t) + " is not 8-byte aligned";
  if (p.ops())
    for (size_t o = 0; o < p.ops()->size(); ++o)
      if (const auto *attrs = p.ops()->Get(o)->attrs())
        for (const auto *a : *attrs)
          if (!aligned(a->ints()) || !aligned(a->floats()))
            return "attribute '" + a->name()->str() + "' of op #" + std::to_string(o) +
                   " is not 8-byte aligned";
  return "";
}

/// The plan's own consistency, after the schema check.
std::string checkPlan(const plan::Plan &p) {
  if (std::string err = checkAlignment(p); !err.empty())
    return err;
  if (!p.mesh() || !p.tensors() || !p.ops() || !p.inputs() || !p.outputs())
    return "the plan has no mesh, tensors, ops, inputs or outputs";
  if (!p.model())
    return "the plan does not name its model";
  Mesh mesh;
  if (std::string err = checkMesh(p, mesh); !err.empty())
    return err;
  int64_t numTensors = p.tensors()->size();
  for (int64_t t = 0; t < numTensors; ++t)
    if (std::string err = checkTensor(p, t, mesh); !err.empty())
      return err;
  if (std::string err = checkCopies(p); !err.empty())
    return err;
  if (std::string err = checkArena(p, mesh); !err.empty())
    return err;
  auto checkIndices = [&](const flatbuffers::Vector<int32_t> *v, const std::string &where) {
    if (v)
      for (int32_t i : *v)
        if (i < 0 || i >= numTensors)
          return where + " refers to tensor " + std::to_string(i) + " of " +
                 std::to_string(numTensors);
    return std::string();
  };
  auto checkNames = [&](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *names,
                        const flatbuffers::Vector<int32_t> *values, const char *what,
                        const std::string &where) {
    size_t count = values ? values->size() : 0;
    if (!names || names->size() != count)
      return where + " has " + std::to_string(names ? names->size() : 0) + " " + what +
             " names for " + std::to_string(count) + " " + what + "s";
    std::set<std::string> seen;
    for (const auto *n : *names) {
      if (n->size() == 0)
        return where + " has an empty " + what + " name";
      if (!seen.insert(n->str()).second)
        return where + " has two " + what + "s named '" + n->str() + "'";
    }
    return std::string();
  };
  for (auto err :
       {checkIndices(p.inputs(), "the inputs"), checkIndices(p.outputs(), "the outputs")})
    if (!err.empty())
      return err;
  // Every value is defined before it is read: a weight, an input (each
  // listed once), or the result of an earlier op (each defined once).
  std::vector<bool> defined(numTensors, false);
  for (int64_t t = 0; t < numTensors; ++t)
    defined[t] = p.tensors()->Get(t)->role() == plan::Role::Weight;
  for (int32_t i : *p.inputs()) {
    if (defined[i])
      return "the inputs list " + (p.tensors()->Get(i)->role() == plan::Role::Weight
                                       ? "weight " + tensorName(p, i)
                                       : "tensor " + tensorName(p, i) + " twice");
    defined[i] = true;
  }
  for (size_t o = 0; o < p.ops()->size(); ++o) {
    const auto *op = p.ops()->Get(o);
    std::string where = "op #" + std::to_string(o) + " (" + op->kind()->str() + ")";
    if (!op->operands() || !op->results())
      return where + " has no operand or result list";
    for (auto err : {checkIndices(op->operands(), where), checkIndices(op->results(), where),
                     checkNames(op->operand_names(), op->operands(), "operand", where),
                     checkNames(op->result_names(), op->results(), "result", where)})
      if (!err.empty())
        return err;
    for (int32_t t : *op->operands())
      if (!defined[t])
        return where + " reads tensor " + tensorName(p, t) +
               ", which no input, weight or earlier op defines";
    // A weight may be a result (the kernel writes its buffer); any other
    // value is placed where its one definition is.
    for (int32_t t : *op->results()) {
      if (defined[t] && p.tensors()->Get(t)->role() != plan::Role::Weight)
        return where + " defines tensor " + tensorName(p, t) + ", which is already defined";
      defined[t] = true;
    }
    if (op->attrs())
      for (const auto *a : *op->attrs())
        if (a->name()->size() == 0)
          return where + " has an attribute without a name";
  }
  for (int32_t t : *p.outputs())
    if (!defined[t])
      return "output tensor " + tensorName(p, t) + " is never defined";
  if (p.inputs()->size() && (!p.facts() || p.facts()->vocab() < 1))
    return "the plan does not state the model's vocabulary (facts.vocab), which its inputs "
           "draw from";
  if (p.facts() && p.facts()->vocab() > std::numeric_limits<int32_t>::max())
    return "the vocabulary of " + std::to_string(p.facts()->vocab()) +
           " entries does not fit the i32 tokens";
  return "";
}
} // namespace

uint64_t fnv1a64(const void *data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto *p = static_cast<const uint8_t *>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::vector<uint8_t> wrapPlan(const uint8_t *payload, size_t size) {
  std::vector<uint8_t> out(kPlanHeaderBytes + size, 0);
  std::memcpy(out.data(), kMagic, 8);
  out[8] = (uint8_t)kPlanVersion;
  out[9] = (uint8_t)(kPlanVersion >> 8);
  out[10] = (uint8_t)(kPlanVersion >> 16);
  out[11] = (uint8_t)(kPlanVersion >> 24);
  writeU64(out.data() + 16, size);
  writeU64(out.data() + 24, fnv1a64(payload, size));
  std::memcpy(out.data() + kPlanHeaderBytes, payload, size);
  return out;
}

int64_t LoadedPlan::ranks() const {
  int64_t n = 1;
  for (const auto *axis : *root()->mesh())
    n *= axis->size();
  return n;
}

std::optional<LoadedPlan> loadPlan(std::vector<uint8_t> bytes, std::string &error) {
  if (bytes.size() < kPlanHeaderBytes) {
    error = "truncated plan: " + std::to_string(bytes.size()) + " bytes, the header alone has " +
            std::to_string(kPlanHeaderBytes);
    return std::nullopt;
  }
  if (std::memcmp(bytes.data(), kMagic, 8) != 0) {
    error = "not a Shardline plan (bad magic bytes)";
    return std::nullopt;
  }
  uint32_t version = readU32(bytes.data() + 8);
  if (version != kPlanVersion) {
    error = "plan format version " + std::to_string(version) + "; this runtime reads version " +
            std::to_string(kPlanVersion) + " (recompile the model with this release)";
    return std::nullopt;
  }
  uint64_t size = readU64(bytes.data() + 16);
  if (size != bytes.size() - kPlanHeaderBytes) {
    error = "truncated plan: the header promises " + std::to_string(size) +
            " payload bytes, the file holds " + std::to_string(bytes.size() - kPlanHeaderBytes);
    return std::nullopt;
  }
  uint64_t hash = fnv1a64(bytes.data() + kPlanHeaderBytes, size);
  if (hash != readU64(bytes.data() + 24)) {
    error = "corrupted plan: the content hash does not match the payload";
    return std::nullopt;
  }
  flatbuffers::Verifier verifier(bytes.data() + kPlanHeaderBytes, size);
  if (!plan::VerifyPlanBuffer(verifier)) {
    error = "corrupted plan: the payload does not match the plan schema";
    return std::nullopt;
  }
  LoadedPlan loaded;
  loaded.bytes = std::move(bytes);
  loaded.hash = hash;
  std::string err = checkPlan(*loaded.root());
  if (!err.empty()) {
    error = "inconsistent plan: " + err;
    return std::nullopt;
  }
  return loaded;
}

std::optional<LoadedPlan> loadPlanFile(const std::string &path, std::string &error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot open plan '" + path + "'";
    return std::nullopt;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  auto plan = loadPlan(std::move(bytes), error);
  if (!plan)
    error = path + ": " + error;
  return plan;
}

std::vector<uint8_t> executableTail(const std::vector<uint8_t> &planFile) {
  std::vector<uint8_t> tail(planFile);
  tail.resize(planFile.size() + 16);
  writeU64(tail.data() + planFile.size(), planFile.size());
  std::memcpy(tail.data() + planFile.size() + 8, kExecutableMarker, 8);
  return tail;
}

std::vector<uint8_t> embeddedPlan(const std::string &path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
    return {};
  int64_t size = (int64_t)in.tellg();
  if (size < 16)
    return {};
  uint8_t tail[16];
  in.seekg(size - 16);
  in.read(reinterpret_cast<char *>(tail), 16);
  if (std::memcmp(tail + 8, kExecutableMarker, 8) != 0)
    return {};
  uint64_t planSize = readU64(tail);
  if (planSize == 0 || (int64_t)planSize > size - 16)
    return {};
  std::vector<uint8_t> plan(planSize);
  in.seekg(size - 16 - (int64_t)planSize);
  in.read(reinterpret_cast<char *>(plan.data()), (std::streamsize)planSize);
  return in ? plan : std::vector<uint8_t>();
}

Layout layoutOf(const plan::Tensor &t) {
  Layout l = Layout::replicated(t.shape()->size());
  if (const auto *layout = t.layout()) {
    if (layout->dims())
      for (size_t d = 0; d < layout->dims()->size() && d < l.dims.size(); ++d)
        if (const auto *axes = layout->dims()->Get(d)->axes())
          for (const auto *a : *axes)
            l.dims[d].push_back(a->str());
    if (layout->partial())
      for (const auto *a : *layout->partial())
        l.partial.push_back(a->str());
    if (layout->order_dim() >= 0) {
      l.orderDim = layout->order_dim();
      l.order = ChunkOrder::Zigzag;
    }
  }
  return l;
}

} // namespace shardline::rt
