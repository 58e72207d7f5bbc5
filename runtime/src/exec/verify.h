//===- verify.h - the plan verified against the kernels' contracts -*- C++ -*-===//
//
// The loader (core/plan.h) proves that a plan is well formed on its own:
// bounded shapes, layouts that fit the mesh, every value defined before it
// is read. This file proves that it is runnable: every op of the decoded
// program meets the contract of the kernel that runs it, the relations
// between shapes, dtypes and attributes that the kernel relies on for its
// indexing. A violation there would be an out-of-bounds access, a null
// pointer or a division by zero in the kernel; here it is an error that
// names the op and the field, before anything runs.
//
// Every op gets the generic checks: ids, labels and indices are i32 and
// everything else a float type; an attribute that names mesh axes names
// distinct axes of the mesh; a float attribute is finite. A kernel-table
// entry adds its own with a `check` function over a Contract.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_VERIFY_H
#define SHARDLINE_RUNTIME_EXEC_VERIFY_H

#include "exec/program.h"

#include <initializer_list>
#include <string>
#include <vector>

namespace shardline::rt {

/// The checks of one step: its tensors as this run's ranks hold them (local
/// shapes, which are the same on every rank) and its attributes. Each check
/// records the first violation and does nothing once one is recorded, so a
/// check function is a flat list of checks; the accessors stay in bounds
/// whatever the plan holds (an absent dimension reads as 1).
class Contract {
public:
  /// An operand or a result of the step, by its position in the kernel's
  /// order.
  struct Arg {
    bool result;
    size_t index;
  };

  Contract(const Step &step, const Frame &frame) : step(step), frame(frame) {}

  bool ok() const { return error.empty(); }
  const std::string &why() const { return error; }

  /// Whether an optional operand is there.
  bool has(Arg a) const;
  /// Dimension `d` (from the end when negative) of the local shape.
  int64_t dim(Arg a, int d) const;
  int64_t count(Arg a) const;
  const std::vector<int64_t> &local(Arg a) const;
  const std::vector<int64_t> &global(Arg a) const;
  const TensorInfo &tensor(Arg a) const;
  int64_t intAttr(size_t attr) const { return step.attrs[attr].i; }
  double floatAttr(size_t attr) const { return step.attrs[attr].f; }
  /// The number of pieces a [batch, seq, ...] value's local sequence is in
  /// for the sequence ops (forEachChunk): 2 in zigzag order, else 1.
  int64_t chunks(Arg a) const;
  /// The product of `factors`, or -1 when it overflows (which no check then
  /// accepts).
  static int64_t product(std::initializer_list<int64_t> factors);

  /// `a` has rank `r` (or at least `r`).
  Contract &rank(Arg a, size_t r);
  Contract &rankAtLeast(Arg a, size_t r);
  /// `a` and `b` have the same local shape.
  Contract &sameShape(Arg a, Arg b);
  /// Dimension `da` of `a` equals dimension `db` of `b`.
  Contract &sameDim(Arg a, int da, Arg b, int db);
  /// Dimension `d` of `a` is `want`, which `what` explains.
  Contract &dimIs(Arg a, int d, int64_t want, const std::string &what);
  /// `a` holds `want` elements per rank, which `what` explains.
  Contract &elements(Arg a, int64_t want, const std::string &what);
  /// `a` holds at least `want` elements per rank (a buffer the kernel
  /// indexes in its own compact order).
  Contract &elementsAtLeast(Arg a, int64_t want, const std::string &what);
  /// Integer attribute `attr` lies in [lo, hi].
  Contract &attrIn(size_t attr, int64_t lo, int64_t hi);
  /// `cond`, else `what` is the error.
  Contract &require(bool cond, const std::string &what);

  /// The name the kernel binds `a` by, and "x's dimension 2 (64)".
  std::string name(Arg a) const;
  std::string dimText(Arg a, int d) const;

  const Step &step;
  const Frame &frame;

private:
  std::string error;
};

inline Contract::Arg operand(size_t i) { return {false, i}; }
inline Contract::Arg result(size_t i) { return {true, i}; }

/// The contract of the layout transitions (all_gather, slice, ...): the
/// value keeps its global shape.
void checkTransition(Contract &c);

/// Token ids, labels and expert indices are data of the run: a kernel that
/// indexes with them first calls this, which stops the run (a Stop naming
/// the tensor) unless every value of `t` on this rank lies in [0, limit).
void requireIdsInRange(const Frame &f, int32_t t, int64_t limit, const char *what);

/// The same for capacity mode's slots: every value in [-1, capacity) (-1: a
/// dropped choice).
void requireSlotsInRange(const Frame &f, int32_t t, int64_t capacity);

/// Checks every step of `program` (decoded from the plan `frame` runs) on
/// the mesh and tensors of `frame`; returns the first violation, naming the
/// op (index, kind, result, location) and the field, or an empty string.
std::string verifyProgram(const std::vector<Step> &program, const Frame &frame);

} // namespace shardline::rt

#endif
