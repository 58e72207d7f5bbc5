//===- step_rig.h - One kernel-table step on a test's buffers ---*- C++ -*-===//

#ifndef SHARDLINE_RUNTIME_TEST_STEP_RIG_H
#define SHARDLINE_RUNTIME_TEST_STEP_RIG_H

#include "exec/program.h"
#include "exec/verify.h"

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace shardline::rt::test {

using shardline::Layout;
using shardline::Mesh;
using Vec = std::vector<float>;

/// One step of `kind` from the CPU table over f32 tensors of the given
/// shapes (replicated on a one-rank mesh unless the layouts say otherwise),
/// bound in the entry's operand and result order; ids, labels and indices are
/// i32.
struct StepRig {
  Mesh mesh;
  std::vector<TensorInfo> tensors;
  std::vector<BufferView> views;
  Step step;
  Frame frame{mesh, 0, tensors, views, nullptr};

  StepRig(const std::string &kind, const std::vector<std::vector<int64_t>> &in,
          const std::vector<std::vector<int64_t>> &out, std::vector<AttrValue> attrs,
          Mesh onMesh = Mesh{}, std::vector<Layout> layouts = {})
      : mesh(std::move(onMesh)) {
    step.kernel = &cpuBackend().kernels.at(kind);
    step.kind = kind;
    step.location = "test.mlir:1:1";
    step.attrs = std::move(attrs);
    std::vector<std::vector<int64_t>> shapes = in;
    shapes.insert(shapes.end(), out.begin(), out.end());
    for (size_t i = 0; i < shapes.size(); ++i) {
      bool isIn = i < in.size();
      TensorInfo t;
      t.name = isIn ? step.kernel->operands[i] : step.kernel->results[i - in.size()];
      t.shape = shapes[i];
      t.layout = i < layouts.size() ? layouts[i] : Layout::replicated(shapes[i].size());
      t.local = t.shape;
      for (size_t d = 0; d < t.local.size() && d < t.layout.dims.size(); ++d)
        t.local[d] /= mesh.product(t.layout.dims[d]);
      t.count = 1;
      for (int64_t e : t.local)
        t.count *= e;
      t.dtype = t.name == "ids" || t.name == "labels" || t.name == "indices" || t.name == "slots"
                    ? DType::I32
                    : DType::F32;
      tensors.push_back(t);
      (isIn ? step.in : step.out).push_back((int32_t)i);
    }
    // The optional operands not given are absent, as decodeProgram leaves them.
    step.in.resize(step.kernel->operands.size(), -1);
  }
  /// Points the tensors, in order, at f32 buffers.
  void bind(std::initializer_list<Vec *> buffers) {
    views.clear();
    for (Vec *b : buffers)
      views.emplace_back(b->data(), (int64_t)b->size());
  }
  std::string verify() { return verifyProgram({step}, frame); }
};

inline AttrValue intAttr(int64_t v) {
  AttrValue a;
  a.present = true;
  a.i = v;
  return a;
}

inline AttrValue axesAttr(std::vector<std::string> axes) {
  AttrValue a;
  a.present = true;
  a.strings = std::move(axes);
  return a;
}

} // namespace shardline::rt::test

#endif // SHARDLINE_RUNTIME_TEST_STEP_RIG_H
