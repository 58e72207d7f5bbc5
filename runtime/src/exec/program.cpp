//===- program.cpp - the plan decoded once into steps ----------------------===//

#include "exec/program.h"

#include <cmath>

namespace shardline::rt {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

/// Binds the plan's names to the kernel's order; returns the missing name.
std::string bind(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>> *names,
                 const flatbuffers::Vector<int32_t> *values, const std::vector<std::string> &want,
                 const char *what, std::vector<int32_t> &out) {
  out.assign(want.size(), -1);
  std::vector<bool> used(values ? values->size() : 0, false);
  for (size_t w = 0; w < want.size(); ++w) {
    bool optional = !want[w].empty() && want[w].back() == '?';
    std::string name = optional ? want[w].substr(0, want[w].size() - 1) : want[w];
    for (size_t i = 0; names && i < names->size(); ++i)
      if (names->Get(i)->str() == name) {
        out[w] = values->Get(i);
        used[i] = true;
      }
    if (out[w] < 0 && !optional)
      return std::string("has no ") + what + " '" + name + "'";
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (!used[i])
      return std::string("has ") + what + " '" + names->Get(i)->str() +
             "', which this runtime does not bind";
  return "";
}

std::string readAttr(const plan::Op &op, const AttrSpec &spec, AttrValue &value) {
  const plan::Attr *found = nullptr;
  if (op.attrs())
    for (const auto *a : *op.attrs())
      if (a->name()->str() == spec.name)
        found = a;
  if (!found)
    return spec.optional ? "" : std::string("has no attribute '") + spec.name + "'";
  auto size = [](const auto *v) { return v ? v->size() : 0u; };
  switch (spec.kind) {
  case AttrKind::Int:
    if (size(found->ints()) != 1)
      return std::string("attribute '") + spec.name + "' is not one integer";
    value.i = found->ints()->Get(0);
    break;
  case AttrKind::Float:
    if (size(found->floats()) != 1)
      return std::string("attribute '") + spec.name + "' is not one float";
    value.f = found->floats()->Get(0);
    break;
  case AttrKind::Strings:
  case AttrKind::Name:
    if (size(found->ints()) || size(found->floats()))
      return std::string("attribute '") + spec.name + "' is not a list of names";
    if (spec.kind == AttrKind::Name && size(found->strings()) != 1)
      return std::string("attribute '") + spec.name + "' is not one name";
    if (found->strings())
      for (const auto *s : *found->strings())
        value.strings.push_back(s->str());
    break;
  case AttrKind::Ints:
    if (size(found->floats()) || size(found->strings()))
      return std::string("attribute '") + spec.name + "' is not a list of integers";
    if (found->ints())
      value.ints.assign(found->ints()->begin(), found->ints()->end());
    break;
  }
  value.present = true;
  return "";
}

} // namespace

Mesh meshOf(const plan::Plan &plan, bool singleDevice) {
  Mesh mesh;
  for (const auto *axis : *plan.mesh())
    mesh.axes.emplace_back(axis->name()->str(), singleDevice ? 1 : axis->size());
  return mesh;
}

std::vector<TensorInfo> tensorInfos(const plan::Plan &plan, const Mesh &mesh) {
  std::vector<TensorInfo> tensors;
  for (const auto *t : *plan.tensors()) {
    TensorInfo info;
    info.name = t->name() ? t->name()->str() : "";
    info.shape.assign(t->shape()->begin(), t->shape()->end());
    info.layout = layoutOf(*t);
    info.local = localShape(info.layout, mesh, info.shape);
    info.count = numElements(info.local);
    info.role = t->role();
    info.dtype = dtypeOf(t->dtype());
    info.arenaOffset = t->arena_offset();
    tensors.push_back(std::move(info));
  }
  return tensors;
}

std::optional<std::vector<Step>> decodeProgram(const plan::Plan &plan, const KernelTable &table,
                                               std::string &error) {
  std::vector<Step> program;
  for (size_t o = 0; o < plan.ops()->size(); ++o) {
    const plan::Op &op = *plan.ops()->Get(o);
    Step step;
    step.index = (int64_t)o;
    step.kind = op.kind()->str();
    step.location = op.location() ? op.location()->str() : "?";
    auto it = table.find(step.kind);
    if (it == table.end()) {
      error = "the executor does not run sl." + step.kind + " yet";
      return std::nullopt;
    }
    step.kernel = &it->second;
    std::string why =
        bind(op.operand_names(), op.operands(), step.kernel->operands, "operand", step.in);
    if (why.empty())
      why = bind(op.result_names(), op.results(), step.kernel->results, "result", step.out);
    step.attrs.resize(step.kernel->attrs.size());
    for (size_t a = 0; a < step.attrs.size() && why.empty(); ++a)
      why = readAttr(op, step.kernel->attrs[a], step.attrs[a]);
    if (!why.empty()) {
      error =
          "op #" + std::to_string(o) + " (sl." + step.kind + ") at " + step.location + " " + why;
      return std::nullopt;
    }
    program.push_back(std::move(step));
  }
  return program;
}

} // namespace shardline::rt
