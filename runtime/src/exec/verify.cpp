//===- verify.cpp - the plan verified against the kernels' contracts -------===//

#include "exec/verify.h"
#include "kernels/cpu/kernels.h"

#include <cmath>
#include <set>

namespace shardline::rt {

namespace {

const std::vector<int64_t> kNoShape;

bool isIndexName(const std::string &name) {
  return name == "ids" || name == "labels" || name == "indices" || name == "slots";
}

/// The checks every op gets, whatever its kernel.
void checkGeneric(Contract &c) {
  const KernelSpec &kernel = *c.step.kernel;
  for (bool result : {false, true}) {
    const std::vector<int32_t> &values = result ? c.step.out : c.step.in;
    for (size_t i = 0; i < values.size() && c.ok(); ++i) {
      Contract::Arg a{result, i};
      if (!c.has(a))
        continue;
      // A transition takes either, one type for x and result (checkTransition).
      if (kernel.movesIntegers)
        continue;
      bool wantIndex = isIndexName(c.name(a));
      DType dtype = c.tensor(a).dtype;
      if (wantIndex != (dtype == DType::I32))
        c.require(false, c.name(a) + " is " + dtypeName(dtype) + ", the kernel reads " +
                             (wantIndex ? "i32" : "a float type"));
    }
  }
  for (size_t a = 0; a < kernel.attrs.size() && c.ok(); ++a) {
    const AttrSpec &spec = kernel.attrs[a];
    const AttrValue &value = c.step.attrs[a];
    if (!value.present)
      continue;
    std::string attr = std::string("attribute '") + spec.name + "'";
    if (spec.kind == AttrKind::Float)
      c.require(std::isfinite(value.f), attr + " is " + std::to_string(value.f));
    if (spec.kind != AttrKind::Strings)
      continue;
    std::set<std::string> seen;
    for (const std::string &axis : value.strings) {
      c.require(c.frame.mesh.size(axis).has_value(),
                attr + " names '" + axis + "', which is not an axis of the mesh");
      c.require(seen.insert(axis).second, attr + " names mesh axis '" + axis + "' twice");
    }
  }
}

} // namespace

bool Contract::has(Arg a) const {
  const std::vector<int32_t> &v = a.result ? step.out : step.in;
  return a.index < v.size() && v[a.index] >= 0;
}

const TensorInfo &Contract::tensor(Arg a) const {
  return frame.tensors[(a.result ? step.out : step.in)[a.index]];
}

const std::vector<int64_t> &Contract::local(Arg a) const {
  return has(a) ? tensor(a).local : kNoShape;
}

const std::vector<int64_t> &Contract::global(Arg a) const {
  return has(a) ? tensor(a).shape : kNoShape;
}

int64_t Contract::dim(Arg a, int d) const {
  const std::vector<int64_t> &shape = local(a);
  int64_t i = d < 0 ? (int64_t)shape.size() + d : d;
  return i >= 0 && i < (int64_t)shape.size() ? shape[i] : 1;
}

int64_t Contract::count(Arg a) const { return has(a) ? tensor(a).count : 0; }

int64_t Contract::chunks(Arg a) const { return has(a) ? chunksPerRank(tensor(a).layout, 1) : 1; }

int64_t Contract::product(std::initializer_list<int64_t> factors) {
  return checkedProduct(factors).value_or(-1);
}

std::string Contract::name(Arg a) const {
  const std::vector<std::string> &names = a.result ? step.kernel->results : step.kernel->operands;
  std::string n = a.index < names.size() ? names[a.index] : "?";
  if (!n.empty() && n.back() == '?')
    n.pop_back();
  return n;
}

std::string Contract::dimText(Arg a, int d) const {
  int64_t rank = (int64_t)local(a).size(), i = d < 0 ? rank + d : d;
  std::string which = i == rank - 1 ? "last dimension" : "dimension " + std::to_string(i);
  bool split = has(a) && i >= 0 && i < rank && tensor(a).local[i] != tensor(a).shape[i];
  return name(a) + "'s " + which + " is " + std::to_string(dim(a, d)) + (split ? " per rank" : "");
}

Contract &Contract::require(bool cond, const std::string &what) {
  if (ok() && !cond)
    error = what;
  return *this;
}

Contract &Contract::rank(Arg a, size_t r) {
  if (ok() && has(a) && local(a).size() != r)
    error = name(a) + " has rank " + std::to_string(local(a).size()) + ", the kernel needs rank " +
            std::to_string(r);
  return *this;
}

Contract &Contract::rankAtLeast(Arg a, size_t r) {
  if (ok() && has(a) && local(a).size() < r)
    error = name(a) + " has rank " + std::to_string(local(a).size()) + ", the kernel needs rank " +
            std::to_string(r) + " or more";
  return *this;
}

Contract &Contract::sameShape(Arg a, Arg b) {
  if (ok() && has(a) && has(b) && local(a) != local(b))
    error = name(a) + " has shape " + shapeText(local(a)) + " per rank, " + name(b) + " has " +
            shapeText(local(b));
  return *this;
}

Contract &Contract::sameDim(Arg a, int da, Arg b, int db) {
  if (ok() && has(a) && has(b) && dim(a, da) != dim(b, db))
    error = dimText(a, da) + ", " + dimText(b, db);
  return *this;
}

Contract &Contract::dimIs(Arg a, int d, int64_t want, const std::string &what) {
  if (ok() && has(a) && dim(a, d) != want)
    error = dimText(a, d) + ", " + what + " is " + std::to_string(want);
  return *this;
}

Contract &Contract::elements(Arg a, int64_t want, const std::string &what) {
  if (ok() && has(a) && count(a) != want)
    error = name(a) + " has " + std::to_string(count(a)) + " elements per rank, " + what +
            (want < 0 ? " overflows" : " is " + std::to_string(want));
  return *this;
}

Contract &Contract::elementsAtLeast(Arg a, int64_t want, const std::string &what) {
  if (ok() && has(a) && (want < 0 || count(a) < want))
    error = name(a) + " has " + std::to_string(count(a)) + " elements per rank, " + what +
            (want < 0 ? " overflows" : " is " + std::to_string(want));
  return *this;
}

Contract &Contract::attrIn(size_t attr, int64_t lo, int64_t hi) {
  int64_t v = intAttr(attr);
  if (ok() && (v < lo || v > hi))
    error = std::string("attribute '") + step.kernel->attrs[attr].name + "' is " +
            std::to_string(v) + ", not in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return *this;
}

void checkTransition(Contract &c) {
  Contract::Arg x = operand(0), out = result(0);
  if (c.ok() && c.global(x) != c.global(out))
    c.require(false, "x has shape " + shapeText(c.global(x)) + ", the result " +
                         shapeText(c.global(out)) + ": a layout transition keeps the shape");
  if (c.ok() && c.has(x) && c.has(out) && c.tensor(x).dtype != c.tensor(out).dtype)
    c.require(false, std::string("x is ") + dtypeName(c.tensor(x).dtype) + ", the result " +
                         dtypeName(c.tensor(out).dtype) +
                         ": a layout transition keeps the element type");
}

void requireIdsInRange(const Frame &f, int32_t t, int64_t limit, const char *what) {
  if (!cpu::ids_in_range(f.ids(t), f.n(t), limit))
    throw Stop{"'" + f.tensors[t].name + "' holds a value outside [0, " + std::to_string(limit) +
                   "), " + what,
               false};
}

void requireSlotsInRange(const Frame &f, int32_t t, int64_t capacity) {
  const int32_t *slots = f.ids(t);
  for (int64_t i = 0; i < f.n(t); ++i)
    if (slots[i] < -1 || slots[i] >= capacity)
      throw Stop{"'" + f.tensors[t].name + "' holds " + std::to_string(slots[i]) +
                     ", outside [-1, " + std::to_string(capacity) + "), the capacity's slots",
                 false};
}

std::string verifyProgram(const std::vector<Step> &program, const Frame &frame) {
  for (const Step &step : program) {
    Contract c(step, frame);
    checkGeneric(c);
    if (c.ok() && step.kernel->check)
      step.kernel->check(c);
    if (c.ok())
      continue;
    // The op's own name is its first named result, else its first named
    // operand (a compiled plan names weights and inputs, not activations).
    std::string name;
    for (const std::vector<int32_t> *values : {&step.out, &step.in})
      for (int32_t t : *values)
        if (name.empty() && t >= 0 && !frame.tensors[t].name.empty())
          name = " '" + frame.tensors[t].name + "'";
    return "op #" + std::to_string(step.index) + " (sl." + step.kind + name + ") at " +
           step.location + ": " + c.why();
  }
  return "";
}

} // namespace shardline::rt
