//===- moe.cpp - dropless MoE on the GPU, over NCCL across an expert group ===//
//
// sl.moe_dropless and its gradient in the CUDA backend, computing each
// expert over exactly the rows routed to it (kernels/cuda/kernels_moe.h):
// the routed choices sorted by expert on the device (the CPU's order), the
// SwiGLU experts as grouped GEMMs over the sorted rows (one launch per GEMM
// for all the experts, their offsets on the device), and the combine.
//
// On a rank that holds every expert (an expert group of one, no etp) the
// host waits once a step, for the check of the indices (and, with the expert
// load recorded, once more for the counts per expert). Spread over an expert
// group the step exchanges rows by count as the CPU kernel does
// (kernels/cpu/moe_dropless.cpp, routes of comm/moe_routes.h): the rank
// reads its counts per expert, sends each member the counts of its experts
// over NCCL, then the rows (grouped ncclSend/ncclRecv), computes its experts
// over the rows it received, grouped by local expert and then by sender, and
// sends the outputs back; with expert tensor parallelism the received rows
// are gathered over the expert-tensor group first and the partial outputs
// reduce-scattered after, summed in member order. The bytes it counts are
// those the counts imply, as the CPU kernel records them (exec/program.h,
// VariableBytes). The host waits, a spread forward step: the check of the
// indices, the counts read back (once, the expert load's too), the counts'
// exchange, the received counts read back, the rows' exchange there and
// back (six); with etp also the exchange of the rows per local expert over
// the expert-tensor group and their read back, the gather and the
// reduce-scatter (ten). The backward's are the same with three exchanges of
// rows each way (x, dy, the weights: ten; with etp also three gathers and
// two reduce-scatters). The groups' offsets and row tiles go up in one copy
// without a wait: the exchanges after it wait for the stream.
//
// A 16-bit forward step (backend.cpp, keepsDropless) moves x's rows as
// stored, sorted, sent and gathered, and runs the experts' grouped GEMMs on
// the tensor cores (grouped_tc.h: the hidden values split in two bf16
// parts for the down product; against f16 weights that product stays on
// the f32 kernel); the outputs are rounded to the step's type where the
// GEMMs end (with etp, the partial values, summed by sum_pieces in f32 and
// rounded once more), travel back as stored (the bytes the report counts)
// and the combine reads them widened, as the CPU kernel does, and rounds y
// once. The backward of a 16-bit step runs on f32 copies, but its rows cross
// in their types: x, dy and the weights converted exactly, dx and dweights
// rounded where they are made (with etp also the partial values' sums).
//
// The sort's and the counts' buffers, and the rows of a rank that holds
// every expert (T·k), are the device's scratch; spread over ranks, the rows
// a rank computes are sized from the counts (known on the host before any
// row buffer is used) in memory of the step's own (StepMemory), which a
// later scratch that grows does not free.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/moe.h"

#include "backends/cuda/entry.h"
#include "backends/cuda/nccl.h"
#include "backends/cuda/run_util.h"
#include "comm/moe_routes.h"
#include "exec/collectives.h"
#include "exec/expert_load.h"
#include "kernels/cpu/table.h"
#include "kernels/cuda/grouped_tc.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/kernels_moe.h"

#include <algorithm>
#include <numeric>
#include <type_traits>

namespace shardline::rt {

namespace {

enum DroplessOperand { kX, kWeights, kIndices, kGate, kUp, kDown, kDy };
enum DroplessResult { kDx, kDweights, kDgate, kDup, kDdown };

using Axes = std::vector<std::string>;

/// Device buffers cut from one scratch allocation: a first pass with no
/// base measures, a second hands out the pieces (each 16-byte aligned).
class Carve {
public:
  explicit Carve(char *base = nullptr) : base(base) {}
  template <typename T> T *take(int64_t n) {
    T *p = base ? reinterpret_cast<T *>(base + used) : nullptr;
    used += (std::max<int64_t>(n, 1) * (int64_t)sizeof(T) + 15) / 16 * 16;
    return p;
  }
  int64_t bytes() const { return used; }

private:
  char *base;
  int64_t used = 0;
};

/// Uploads `src` to `dst` without a wait: `src` must stay alive until the
/// stream passes the copy (a wait for the stream after it).
template <typename T> void upload(CudaDevice &d, T *dst, const std::vector<T> &src) {
  if (!src.empty())
    checkCuda(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice,
                              d.stream()),
              "cudaMemcpyAsync of the MoE counts");
}

/// Reads `n` values back: one wait for the stream.
template <typename T> std::vector<T> download(CudaDevice &d, const T *src, int64_t n) {
  std::vector<T> out(n);
  checkCuda(cudaMemcpyAsync(out.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, d.stream()),
            "cudaMemcpyAsync of the MoE counts");
  checkCuda(cudaStreamSynchronize(d.stream()), "cudaStreamSynchronize");
  return out;
}

/// Copies `n` elements of `e` bytes on the device.
void copyValues(CudaDevice &d, void *dst, const void *src, int64_t n, int64_t e = 4) {
  copyDevice(dst, src, n * e, d);
}

/// `p` moved on by `n` elements of `e` bytes.
template <typename P> P *at(P *p, int64_t n, int64_t e) {
  using Byte = std::conditional_t<std::is_const_v<P>, const char, char>;
  return reinterpret_cast<P *>(reinterpret_cast<Byte *>(p) + n * e);
}

/// The shapes and groups of a dropless step on this rank.
struct Shape {
  int64_t T = 0, H = 0, F = 0, k = 0, E = 0, El = 0;
  Axes expertAxes, tensorAxes;
  std::vector<int64_t> experts, tensor; ///< the groups' world ranks
  int64_t me = 0, meT = 0;

  int64_t ep() const { return (int64_t)experts.size(); }
  int64_t etp() const { return (int64_t)tensor.size(); }
  bool spread() const { return ep() > 1 || etp() > 1; }
};

Shape shapeOf(const Step &s, Frame &f) {
  Shape sh;
  const std::vector<int64_t> &x = f.local(s.in[kX]), &gate = f.local(s.in[kGate]);
  sh.T = x[0] * x[1];
  sh.H = x[2];
  sh.k = f.local(s.in[kIndices])[2];
  sh.E = f.global(s.in[kGate])[0];
  sh.El = gate[0];
  sh.F = gate[2];
  sh.expertAxes = s.attrs[0].strings;
  if (s.attrs.size() > 1 && s.attrs[1].present)
    sh.tensorAxes = s.attrs[1].strings;
  auto group = [&](const Axes &axes, int64_t &me) {
    std::vector<int64_t> members =
        axes.empty() ? std::vector<int64_t>{f.self} : f.mesh.group(f.self, axes);
    me = std::find(members.begin(), members.end(), f.self) - members.begin();
    return members;
  };
  sh.experts = group(sh.expertAxes, sh.me);
  sh.tensor = group(sh.tensorAxes, sh.meT);
  if (sh.spread() && !deviceOf(f).nccl())
    throw Stop{"the CUDA backend exchanges dropless MoE rows between ranks over NCCL only "
               "(--comm nccl): this rank's expert group has " +
                   std::to_string(sh.ep()) + " ranks and its expert-tensor group " +
                   std::to_string(sh.etp()),
               false};
  return sh;
}

/// The device buffers of the routing's sort of T·k choices over E experts.
cuda::RoutedSort carveSort(Carve &c, int64_t choices, int64_t E) {
  int64_t chunks = cuda::arith::sortChunks(choices);
  cuda::RoutedSort sort;
  sort.chunkCounts = c.take<int32_t>(chunks * E);
  sort.counts = c.take<int32_t>(E);
  sort.offsets = c.take<int64_t>(E + 1);
  sort.first = c.take<int64_t>(chunks * E);
  sort.tileOffsets = c.take<int64_t>(E + 1);
  sort.perm = c.take<int32_t>(choices);
  sort.rowOf = c.take<int32_t>(choices);
  return sort;
}

/// routedExperts' Ops: the grouped GEMMs over `count` rows in `groups`
/// groups whose offsets and row tiles lie on the device, and the
/// elementwise ops of the experts.
struct Ops {
  CudaDevice &dev;
  const int64_t *offsets, *tiles;
  int64_t groups, count;
  /// 16-bit weights on the tensor cores (grouped_tc.h), the rest on the
  /// f32 kernel.
  void rows(cuda::Stored a, cuda::Stored w, bool transW, int64_t K, int64_t N, float *out) {
    if (!transW && cuda::arith::groupedTcTakes(a.type, w.type))
      return launched(cuda::grouped_rows_tc({a.data, a.type}, {w.data, w.type}, count, K, N,
                                            offsets, tiles, groups, out, dev.stream()),
                      "grouped_rows_tc");
    launched(cuda::grouped_rows({a.data, a.type}, {w.data, w.type}, transW, count, K, N, offsets,
                                tiles, groups, out, dev.stream()),
             "grouped_rows");
  }
  void outer(const float *a, int64_t M, const float *b, int64_t N, float *out) {
    launched(cuda::grouped_outer(a, M, b, N, offsets, groups, out, dev.stream()), "grouped_outer");
  }
  void swiglu(const float *g, const float *u, int64_t n, float *o) {
    launched(cuda::swiglu(g, u, n, o, dev.stream()), "swiglu");
  }
  void swigluGrad(const float *g, const float *u, const float *d, int64_t n, float *dg, float *du) {
    launched(cuda::swiglu_grad(g, u, d, n, dg, du, dev.stream()), "swiglu_grad");
  }
  void add(const float *a, const float *b, int64_t n, float *o) {
    launched(cuda::add(a, b, n, o, dev.stream()), "add");
  }
};

/// The device buffers of the exchange of counts and of the groups' offsets
/// and row tiles the host works out.
struct CountBuffers {
  int32_t *received, *local, *tensor;
  int64_t *offsets, *tiles;
};

CountBuffers carveCounts(Carve &c, const Shape &sh) {
  CountBuffers b{c.take<int32_t>(sh.ep() * sh.El), c.take<int32_t>(sh.El),
                 c.take<int32_t>(sh.etp() * sh.El), c.take<int64_t>(2 * (sh.El + 1)), nullptr};
  if (b.offsets)
    b.tiles = b.offsets + sh.El + 1;
  return b;
}

/// The offsets then the row tiles of groups of `counts` rows, as
/// CountBuffers holds them (one upload).
std::vector<int64_t> groupBounds(const std::vector<int64_t> &counts) {
  size_t n = counts.size();
  std::vector<int64_t> bounds(2 * (n + 1), 0);
  int64_t *offsets = bounds.data(), *tiles = offsets + n + 1;
  for (size_t g = 0; g < n; ++g) {
    offsets[g + 1] = offsets[g] + counts[g];
    tiles[g + 1] = tiles[g] + (counts[g] + cuda::arith::kGroupTile - 1) / cuda::arith::kGroupTile;
  }
  return bounds;
}

/// A dropless step spread over ranks: the routes from the counts (this
/// rank's `counts` per expert, read back by the caller, then each member's),
/// and their exchanges of rows.
class Spread {
public:
  Spread(const Step &s, Frame &f, const Shape &sh, const cuda::RoutedSort &sort,
         const std::vector<int32_t> &counts, const CountBuffers &buffers)
      : s(s), f(f), sh(sh), dev(deviceOf(f)), world(*dev.nccl()), buffers(buffers) {
    std::vector<NcclWorld::PeerTransfer> transfers;
    for (int64_t m = 0; m < sh.ep(); ++m)
      if (m != sh.me)
        transfers.push_back(
            {sh.experts[m], sort.counts + m * sh.El, sh.El, buffers.received + m * sh.El, sh.El});
    exchange(sh.expertAxes, transfers, 4, DType::I32);
    std::vector<int32_t> got = download(dev, buffers.received, sh.ep() * sh.El);
    std::vector<std::vector<int32_t>> received(sh.ep());
    for (int64_t m = 0; m < sh.ep(); ++m)
      received[m].assign(got.begin() + m * sh.El, got.begin() + (m + 1) * sh.El);
    ex = droplessRoutes(sh.experts, sh.me, counts, received);
    // Over the expert-tensor group: each member's rows per local expert.
    std::vector<std::vector<int32_t>> rows(sh.etp());
    rows[sh.meT].assign(ex.local.begin(), ex.local.end());
    if (sh.etp() > 1) {
      upload(dev, buffers.local, rows[sh.meT]); // the exchange below waits
      transfers.clear();
      for (int64_t t = 0; t < sh.etp(); ++t)
        if (t != sh.meT)
          transfers.push_back(
              {sh.tensor[t], buffers.local, sh.El, buffers.tensor + t * sh.El, sh.El});
      exchange(sh.tensorAxes, transfers, 4, DType::I32);
      std::vector<int32_t> all = download(dev, buffers.tensor, sh.etp() * sh.El);
      for (int64_t t = 0; t < sh.etp(); ++t)
        if (t != sh.meT)
          rows[t].assign(all.begin() + t * sh.El, all.begin() + (t + 1) * sh.El);
    }
    tg = tensorRoutes(sh.tensor, sh.meT, rows);
    // Kept until the step ends: the rows' exchanges wait for the stream.
    bounds = groupBounds(std::vector<int64_t>(tg.total.begin(), tg.total.end()));
    upload(dev, buffers.offsets, bounds);
  }

  /// The rows its buffers hold (comm/moe_routes.h): own, computed, raw.
  DroplessRows rowCounts() const { return droplessRows(tg); }

  /// One grouped send/receive over the groups of `axes`, each value sent
  /// counted at `bytes`.
  void exchange(const Axes &axes, const std::vector<NcclWorld::PeerTransfer> &transfers,
                int64_t bytes, DType type = DType::F32) {
    for (const NcclWorld::PeerTransfer &t : transfers)
      sent += t.sendCount * bytes;
    world.sendRecv(f, axes, transfers, nullptr, type);
  }

  /// The grouped GEMMs over the rows this rank computes.
  Ops ops() const { return {dev, buffers.offsets, buffers.tiles, sh.El, rowCounts().computed}; }

  /// Sends each member the sorted rows (`width` values of `type` each,
  /// counted at `bytes` a value) of its experts; `grouped` receives the rows
  /// this rank computes, by local expert then sender (`raw`: scratch of as
  /// many rows).
  void send(const void *sorted, int64_t width, int64_t bytes, void *raw, void *grouped,
            DType type = DType::F32) {
    const int64_t e = dtypeSize(type);
    std::vector<NcclWorld::PeerTransfer> transfers;
    for (int64_t m = 0; m < sh.ep(); ++m)
      if (m != sh.me)
        transfers.push_back({sh.experts[m], at(sorted, ex.firstRow[m] * width, e),
                             ex.rowsTo[m] * width, at(raw, ex.arrival(m) * width, e),
                             ex.rowsFrom(m) * width});
    exchange(sh.expertAxes, transfers, bytes, type);
    for (int64_t m = 0; m < sh.ep(); ++m) {
      const void *src =
          m == sh.me ? at(sorted, ex.firstRow[m] * width, e) : at(raw, ex.arrival(m) * width, e);
      for (const RowRun &r : ex.runsOf(m))
        copyValues(dev, at(grouped, r.to * width, e), at(src, r.from * width, e), r.rows * width,
                   e);
    }
  }

  /// The reverse of send: the grouped rows computed for each member (values
  /// of `type`) back to it; `sorted` receives this rank's rows in sorted
  /// order.
  void back(const void *grouped, int64_t width, int64_t bytes, void *raw, void *sorted,
            DType type = DType::F32) {
    const int64_t e = dtypeSize(type);
    std::vector<NcclWorld::PeerTransfer> transfers;
    for (int64_t m = 0; m < sh.ep(); ++m) {
      void *dst =
          m == sh.me ? at(sorted, ex.firstRow[m] * width, e) : at(raw, ex.arrival(m) * width, e);
      for (const RowRun &r : ex.runsOf(m))
        copyValues(dev, at(dst, r.from * width, e), at(grouped, r.to * width, e), r.rows * width,
                   e);
      if (m != sh.me)
        transfers.push_back({sh.experts[m], dst, ex.rowsFrom(m) * width,
                             at(sorted, ex.firstRow[m] * width, e), ex.rowsTo[m] * width});
    }
    exchange(sh.expertAxes, transfers, bytes, type);
  }

  /// etp's gather: this rank's grouped rows `mine` (of `type`) to every
  /// other member of the expert-tensor group; `gathered` receives all the
  /// members' rows, by local expert then member (`raw`: scratch of as many
  /// rows).
  void gather(const void *mine, int64_t width, int64_t bytes, void *raw, void *gathered,
              DType type = DType::F32) {
    const int64_t e = dtypeSize(type);
    int64_t own = tg.rowsOf(sh.meT);
    std::vector<NcclWorld::PeerTransfer> transfers;
    for (int64_t t = 0; t < sh.etp(); ++t)
      if (t != sh.meT)
        transfers.push_back({sh.tensor[t], mine, own * width, at(raw, tg.arrival(t) * width, e),
                             tg.rowsOf(t) * width});
    exchange(sh.tensorAxes, transfers, bytes, type);
    for (int64_t t = 0; t < sh.etp(); ++t) {
      const void *src = t == sh.meT ? mine : at(raw, tg.arrival(t) * width, e);
      for (const RowRun &r : tg.runsOf(t))
        copyValues(dev, at(gathered, r.to * width, e), at(src, r.from * width, e), r.rows * width,
                   e);
    }
  }

  /// etp's reduce-scatter of the partial values of the gathered rows: each
  /// member's rows to it; `mine` receives this rank's rows (by local expert)
  /// summed over the members in member order, from zero, as the CPU kernel
  /// sums them (`raw`: scratch of rowCounts().raw rows).
  void reduceScatter(const float *partial, int64_t width, int64_t bytes, float *raw, float *mine) {
    int64_t own = tg.rowsOf(sh.meT) * width;
    // raw: the parts packed by member, then those received.
    std::vector<int64_t> packedAt(sh.etp(), 0);
    int64_t next = 0;
    for (int64_t t = 0; t < sh.etp(); ++t) {
      packedAt[t] = next;
      for (const RowRun &r : tg.runsOf(t))
        copyValues(dev, raw + next + r.from * width, partial + r.to * width, r.rows * width);
      next += tg.rowsOf(t) * width;
    }
    float *received = raw + next;
    std::vector<NcclWorld::PeerTransfer> transfers;
    for (int64_t t = 0; t < sh.etp(); ++t)
      if (t != sh.meT)
        transfers.push_back(
            {sh.tensor[t], raw + packedAt[t], tg.rowsOf(t) * width, received + t * own, own});
    exchange(sh.tensorAxes, transfers, bytes);
    if (own == 0)
      return;
    checkCuda(cudaMemsetAsync(mine, 0, own * 4, dev.stream()), "cudaMemsetAsync");
    for (int64_t t = 0; t < sh.etp(); ++t)
      launched(cuda::add(mine, t == sh.meT ? raw + packedAt[t] : received + t * own, own, mine,
                         dev.stream()),
               "add");
  }

  /// reduceScatter of 16-bit partial values (`type`), as they are stored:
  /// each member's rows cross as stored, land in `landing` by member
  /// (etp x this rank's rows), and sum_pieces sums them in f32 in member
  /// order and rounds once into `mine`, the host collectives' 16-bit
  /// reduce-scatter (`raw`: scratch of rowCounts().raw rows).
  void reduceScatterStored(const void *partial, int64_t width, int64_t bytes, void *raw,
                           void *landing, void *mine, DType type) {
    const int64_t e = dtypeSize(type), own = tg.rowsOf(sh.meT) * width;
    std::vector<NcclWorld::PeerTransfer> transfers;
    int64_t next = 0;
    for (int64_t t = 0; t < sh.etp(); ++t) {
      // This rank's own part goes straight to its place among the pieces.
      void *packed = t == sh.meT ? at(landing, t * own, e) : at(raw, next, e);
      for (const RowRun &r : tg.runsOf(t))
        copyValues(dev, at(packed, r.from * width, e), at(partial, r.to * width, e), r.rows * width,
                   e);
      if (t != sh.meT) {
        transfers.push_back(
            {sh.tensor[t], packed, tg.rowsOf(t) * width, at(landing, t * own, e), own});
        next += tg.rowsOf(t) * width;
      }
    }
    exchange(sh.tensorAxes, transfers, bytes, type);
    if (own == 0)
      return;
    launched(cuda::sum_pieces({landing, (cuda::arith::Type)type}, sh.etp(), own,
                              {mine, (cuda::arith::Type)type}, dev.stream()),
             "sum_pieces");
  }

  /// Counts the bytes the step's exchanges sent and records what its counts
  /// imply against the balanced figure, as the CPU kernel does: the
  /// executor requires the two counts equal.
  void record(bool grad) {
    DroplessBytes b =
        droplessBytes(ex, tg, grad, sh.T, sh.k, sh.H, f.tensors[s.in[kX]].elementBytes(),
                      f.tensors[s.in[kWeights]].elementBytes());
    f.collectives->count(sent);
    world.countCalls(s, f);
    if (f.variableBytes)
      (*f.variableBytes)[s.index] = {b.implied, b.balanced};
  }

private:
  const Step &s;
  Frame &f;
  const Shape &sh;
  CudaDevice &dev;
  NcclWorld &world;
  CountBuffers buffers;
  DroplessRoutes ex;
  TensorRoutes tg;
  std::vector<int64_t> bounds;
  int64_t sent = 0;
};

/// Cuts the device's scratch as `carve` lays it out (measured first).
template <typename Layout> void carveScratch(CudaDevice &dev, Layout carve) {
  Carve measure;
  carve(measure);
  Carve cut(static_cast<char *>(dev.scratch(measure.bytes())));
  carve(cut);
}

/// Cuts one allocation of the step's own memory as `carve` lays it out.
template <typename Layout> void carveStep(StepMemory &memory, Layout carve) {
  Carve measure;
  carve(measure);
  Carve cut(reinterpret_cast<char *>(memory.floats((measure.bytes() + 3) / 4)));
  carve(cut);
}

/// The step's counts per expert read back (one wait) where the step
/// exchanges rows or (`record`, the forward) records the expert load, which
/// gets them here; otherwise none.
std::vector<int32_t> countsOf(const Step &s, Frame &f, const Shape &sh,
                              const cuda::RoutedSort &sort, bool record) {
  ExpertLoad *load = record ? expertLoad(s, f, s.in[kIndices], sh.E) : nullptr;
  if (!load && !sh.spread())
    return {};
  std::vector<int32_t> counts = download(deviceOf(f), sort.counts, sh.E);
  if (load)
    for (int64_t e = 0; e < sh.E; ++e)
      load->kept[e] += counts[e];
  return counts;
}

/// Sorts the step's routed choices on the device and checks the indices.
void sortChoices(const Step &s, Frame &f, const Shape &sh, const cuda::RoutedSort &sort) {
  CudaDevice &dev = deviceOf(f);
  launched(
      cuda::moe_sort(f.ids(s.in[kIndices]), sh.T * sh.k, sh.E, sort, dev.counter(), dev.stream()),
      "moe_sort");
  requireNoBadIds(f, s.in[kIndices], sh.E, "the experts");
}

void moeDropless(const Step &s, Frame &f) {
  Shape sh = shapeOf(s, f);
  CudaDevice &dev = deviceOf(f);
  const int64_t R = sh.T * sh.k, H = sh.H, F = sh.F;
  bool spread = sh.spread(), etp = sh.etp() > 1;
  cuda::RoutedSort sort;
  CountBuffers counts;
  // Sorted rows and their outputs back; over ranks the rows this rank
  // computes (`own`: received, `n` with etp's gathered), their outputs and
  // the experts' scratch, what the exchanges receive and pack, and the
  // gathered rows (etp).
  // A 16-bit step's outputs also in its type: the computed ones (`out16`),
  // with etp the members' partial values of this rank's rows (`landing`),
  // and the rows back (`back16`).
  cuda::Src x = src(f, s.in[kX]);
  DType rowType = (DType)x.type;
  const bool narrow = rowType != DType::F32;
  float *sorted, *backRows, *rows = nullptr, *out = nullptr, *scratch, *raw = nullptr,
                            *gathered = nullptr;
  uint16_t *out16 = nullptr, *landing = nullptr, *back16 = nullptr;
  auto rowBuffers = [&](Carve &c, int64_t n, int64_t own, int64_t rawRows) {
    rows = c.take<float>(spread ? own * H : 0);
    out = c.take<float>(spread ? n * H : 0);
    scratch = c.take<float>(2 * n * F);
    raw = c.take<float>(spread ? rawRows * H : 0);
    gathered = c.take<float>(etp ? n * H : 0);
    out16 = c.take<uint16_t>(spread && narrow ? n * H : 0);
    landing = c.take<uint16_t>(etp && narrow ? sh.etp() * own * H : 0);
  };
  carveScratch(dev, [&](Carve &c) {
    sort = carveSort(c, R, sh.E);
    counts = carveCounts(c, sh);
    sorted = c.take<float>(R * H);
    backRows = c.take<float>(R * H);
    back16 = c.take<uint16_t>(narrow ? R * H : 0);
    if (!spread)
      rowBuffers(c, R, R, 0);
  });
  sortChoices(s, f, sh, sort);
  std::vector<int32_t> hostCounts = countsOf(s, f, sh, sort, true);
  // x's rows travel as stored (16-bit where the entry keeps the step,
  // keepsDropless): sorted, sent to their experts, gathered over etp, and
  // widened as the grouped GEMMs stage them. A 16-bit step's outputs are of
  // its type, as the CPU's: rounded where the GEMMs end (with etp, the
  // partial values, and their sums once more), they travel back as stored
  // and the combine reads them widened.
  auto stored = [&](const float *p) { return cuda::Stored(p, x.type); };
  launched(cuda::moe_gather_tokens(x, sort.perm, R, H, sh.k, {sorted, x.type}, dev.stream()),
           "moe_gather_tokens");
  cuda::Src g = src(f, s.in[kGate]), u = src(f, s.in[kUp]), d = src(f, s.in[kDown]);
  cuda::Stored wGate(g.data, g.type), wUp(u.data, u.type), wDown(d.data, d.type);
  if (!spread) {
    Ops ops{dev, sort.offsets, sort.tileOffsets, sh.E, R};
    cuda::routedExperts(ops, {stored(sorted), nullptr, wGate, wUp, wDown, R, H, F, backRows,
                              nullptr, nullptr, nullptr, nullptr, scratch});
    if (narrow) {
      dev.convert(BufferView(backRows, R * H), BufferView(back16, R * H, rowType));
      dev.convert(BufferView(back16, R * H, rowType), BufferView(backRows, R * H));
    }
  } else {
    StepMemory memory(dev);
    Spread ranks(s, f, sh, sort, hostCounts, counts);
    DroplessRows n = ranks.rowCounts();
    carveStep(memory, [&](Carve &c) { rowBuffers(c, n.computed, n.own, n.raw); });
    int64_t eb = f.tensors[s.in[kX]].elementBytes();
    ranks.send(sorted, H, eb, raw, rows, rowType);
    if (etp)
      ranks.gather(rows, H, eb, raw, gathered, rowType);
    Ops ops = ranks.ops();
    cuda::routedExperts(ops, {stored(etp ? gathered : rows), nullptr, wGate, wUp, wDown, ops.count,
                              H, F, out, nullptr, nullptr, nullptr, nullptr, scratch});
    if (narrow) {
      // The outputs (with etp, the partial ones) in the step's type, and
      // with etp this rank's rows' sums in `rows` (f32 room for them).
      dev.convert(BufferView(out, ops.count * H), BufferView(out16, ops.count * H, rowType));
      if (etp)
        ranks.reduceScatterStored(out16, H, eb, raw, landing, rows, rowType);
      ranks.back(etp ? static_cast<const void *>(rows) : out16, H, eb, raw, back16, rowType);
      dev.convert(BufferView(back16, R * H, rowType), BufferView(backRows, R * H));
    } else {
      // The partial outputs (etp) and the outputs back in f32.
      if (etp)
        ranks.reduceScatter(out, H, eb, raw, rows);
      ranks.back(etp ? rows : out, H, eb, raw, backRows);
    }
    ranks.record(false);
  }
  launched(cuda::moe_routed_combine(backRows, sort.rowOf, src(f, s.in[kWeights]), sh.T, H, sh.k,
                                    dst(f, s.out[0]), dev.stream()),
           "moe_routed_combine");
}

/// Each routed row's x, dy and weight travel to the owner, which recomputes
/// the expert on x, differentiates it against weight·dy, keeps the weight
/// gradients and returns the row's dx and its weight's gradient (its output
/// against dy), as the CPU kernel does.
void moeDroplessGrad(const Step &s, Frame &f) {
  Shape sh = shapeOf(s, f);
  CudaDevice &dev = deviceOf(f);
  const int64_t R = sh.T * sh.k, H = sh.H, F = sh.F;
  bool spread = sh.spread(), etp = sh.etp() > 1;
  cuda::RoutedSort sort;
  CountBuffers counts;
  // Sorted x, dy, weights and the dx and dweights back; the rows computed
  // (x, dy, weights: `own` received, `n` with etp's gathered), gathered
  // over etp, the experts' dout, out, dx rows, row dweights and scratch;
  // the exchanges' raw rows.
  // A 16-bit step's rows cross in its types (x's for x, dy and dx, the
  // router weights' for the weights and dweights): staged through `stageA`
  // and `stageB`, each as large as the most values one exchange moves.
  const DType rowType = f.tensors[s.in[kX]].dtype, weightType = f.tensors[s.in[kWeights]].dtype;
  const bool narrow = rowType != DType::F32 || weightType != DType::F32;
  float *sx, *sdy, *sw, *bx, *bw, *rx = nullptr, *rdy = nullptr, *rw = nullptr, *gx = nullptr,
                                  *gdy = nullptr, *gw = nullptr, *dout, *out, *dxRows, *dw,
                                  *scratch, *raw = nullptr;
  float *stageA = nullptr, *stageB = nullptr;
  auto rowBuffers = [&](Carve &c, int64_t n, int64_t own, int64_t rawRows) {
    int64_t m = spread ? own : 0, g = etp ? n : 0;
    int64_t staged = narrow ? std::max({R, n, sh.etp() * own}) * H : 0;
    stageA = c.take<float>(staged);
    stageB = c.take<float>(staged);
    rx = c.take<float>(m * H);
    rdy = c.take<float>(m * H);
    rw = c.take<float>(m);
    gx = c.take<float>(g * H);
    gdy = c.take<float>(g * H);
    gw = c.take<float>(g);
    dout = c.take<float>(n * H);
    out = c.take<float>(n * H);
    dxRows = c.take<float>(n * H);
    dw = c.take<float>(n);
    scratch = c.take<float>(6 * n * F + n * H);
    raw = c.take<float>(spread ? rawRows * H : 0);
  };
  carveScratch(dev, [&](Carve &c) {
    sort = carveSort(c, R, sh.E);
    counts = carveCounts(c, sh);
    sx = c.take<float>(R * H);
    sdy = c.take<float>(R * H);
    sw = c.take<float>(R);
    bx = c.take<float>(spread ? R * H : 0);
    bw = c.take<float>(spread ? R : 0);
    if (!spread)
      rowBuffers(c, R, R, 0);
  });
  sortChoices(s, f, sh, sort);
  std::vector<int32_t> hostCounts = countsOf(s, f, sh, sort, false);
  cudaStream_t stream = dev.stream();
  launched(cuda::moe_gather_tokens(src(f, s.in[kX]), sort.perm, R, H, sh.k, cuda::f32(sx), stream),
           "moe_gather_tokens");
  launched(
      cuda::moe_gather_tokens(src(f, s.in[kDy]), sort.perm, R, H, sh.k, cuda::f32(sdy), stream),
      "moe_gather_tokens");
  launched(cuda::moe_gather_choices(f.f(s.in[kWeights]), sort.perm, R, sw, stream),
           "moe_gather_choices");
  const float *wGate = f.f(s.in[kGate]), *wUp = f.f(s.in[kUp]), *wDown = f.f(s.in[kDown]);
  float *dGate = f.f(s.out[kDgate]), *dUp = f.f(s.out[kDup]), *dDown = f.f(s.out[kDdown]);
  auto experts = [&](Ops &ops, const float *x, const float *dy, const float *w) {
    int64_t n = ops.count;
    launched(cuda::scale_rows(dy, w, n, H, dout, stream), "scale_rows");
    cuda::routedExpertsGrad(
        ops, {x, dout, wGate, wUp, wDown, n, H, F, out, dxRows, dGate, dUp, dDown, scratch});
    launched(cuda::row_dots(out, dy, n, H, dw, stream), "row_dots");
  };
  const float *backX = dxRows, *backW = dw;
  // The values of `n` f32 rows rounded to `type` in place (through stageA).
  auto roundRows = [&](float *rows, int64_t n, DType type) {
    if (type == DType::F32)
      return;
    dev.convert(BufferView(rows, n), BufferView(stageA, n, type));
    dev.convert(BufferView(stageA, n, type), BufferView(rows, n));
  };
  if (!spread) {
    Ops ops{dev, sort.offsets, sort.tileOffsets, sh.E, R};
    experts(ops, sx, sdy, sw);
    // Each routed row's dx and dweight in the step's types, as when they
    // travel back.
    roundRows(dxRows, R * H, rowType);
    roundRows(dw, R, weightType);
  } else if (narrow) {
    StepMemory memory(dev);
    Spread ranks(s, f, sh, sort, hostCounts, counts);
    DroplessRows n = ranks.rowCounts();
    carveStep(memory, [&](Carve &c) { rowBuffers(c, n.computed, n.own, n.raw); });
    int64_t eb = f.tensors[s.in[kX]].elementBytes(), wb = f.tensors[s.in[kWeights]].elementBytes();
    // Each exchange moves the rows in their type: f32 rows into stageA
    // (exact for x, dy and the weights, 16-bit values widened), across into
    // stageB, widened into the f32 rows the experts read.
    auto moved = [&](auto exchange, const float *from, int64_t values, float *to, int64_t arrived,
                     DType type) {
      dev.convert(BufferView(const_cast<float *>(from), values), BufferView(stageA, values, type));
      exchange(stageA, stageB, type);
      dev.convert(BufferView(stageB, arrived, type), BufferView(to, arrived));
    };
    auto send = [&](const float *sorted, int64_t width, int64_t bytes, float *rows, DType type) {
      moved([&](void *a, void *b, DType t) { ranks.send(a, width, bytes, raw, b, t); }, sorted,
            R * width, rows, n.own * width, type);
    };
    auto gather = [&](const float *rows, int64_t width, int64_t bytes, float *all, DType type) {
      moved([&](void *a, void *b, DType t) { ranks.gather(a, width, bytes, raw, b, t); }, rows,
            n.own * width, all, n.computed * width, type);
    };
    send(sx, H, eb, rx, rowType);
    send(sdy, H, eb, rdy, rowType);
    send(sw, 1, wb, rw, weightType);
    if (etp) {
      gather(rx, H, eb, gx, rowType);
      gather(rdy, H, eb, gdy, rowType);
      gather(rw, 1, wb, gw, weightType);
    }
    Ops ops = ranks.ops();
    experts(ops, etp ? gx : rx, etp ? gdy : rdy, etp ? gw : rw);
    // dx and dweights back: rounded to their types where they are made
    // (with etp, the partial values, summed by sum_pieces and rounded once
    // more), crossing as stored, widened on arrival.
    auto back = [&](const float *rows, int64_t width, int64_t bytes, float *to, DType type) {
      dev.convert(BufferView(const_cast<float *>(rows), n.computed * width),
                  BufferView(stageA, n.computed * width, type));
      // With etp the pieces land in stageB and their sums overwrite stageA,
      // whose packing the stream has done by then.
      if (etp)
        ranks.reduceScatterStored(stageA, width, bytes, raw, stageB, stageA, type);
      ranks.back(stageA, width, bytes, raw, stageB, type);
      dev.convert(BufferView(stageB, R * width, type), BufferView(to, R * width));
    };
    back(dxRows, H, eb, bx, rowType);
    back(dw, 1, wb, bw, weightType);
    ranks.record(true);
    backX = bx;
    backW = bw;
  } else {
    StepMemory memory(dev);
    Spread ranks(s, f, sh, sort, hostCounts, counts);
    DroplessRows n = ranks.rowCounts();
    carveStep(memory, [&](Carve &c) { rowBuffers(c, n.computed, n.own, n.raw); });
    int64_t eb = f.tensors[s.in[kX]].elementBytes(), wb = f.tensors[s.in[kWeights]].elementBytes();
    ranks.send(sx, H, eb, raw, rx);
    ranks.send(sdy, H, eb, raw, rdy);
    ranks.send(sw, 1, wb, raw, rw);
    if (etp) {
      ranks.gather(rx, H, eb, raw, gx);
      ranks.gather(rdy, H, eb, raw, gdy);
      ranks.gather(rw, 1, wb, raw, gw);
    }
    Ops ops = ranks.ops();
    experts(ops, etp ? gx : rx, etp ? gdy : rdy, etp ? gw : rw);
    const float *dxMine = dxRows, *dwMine = dw;
    if (etp) {
      // Reduced into the rows' own buffers, which the gather has read.
      ranks.reduceScatter(dxRows, H, eb, raw, rx);
      ranks.reduceScatter(dw, 1, wb, raw, rw);
      dxMine = rx;
      dwMine = rw;
    }
    ranks.back(dxMine, H, eb, raw, bx);
    ranks.back(dwMine, 1, wb, raw, bw);
    ranks.record(true);
    backX = bx;
    backW = bw;
  }
  launched(cuda::moe_routed_dx(backX, sort.rowOf, sh.T, H, sh.k, f.f(s.out[kDx]), stream),
           "moe_routed_dx");
  launched(cuda::moe_scatter_choices(backW, sort.rowOf, R, f.f(s.out[kDweights]), stream),
           "moe_scatter_choices");
}

// -- the SwiGLU experts' backward over dense slabs or capacity buffers --------

/// sl.moe_experts_grad (`weights` false: dtokens) and
/// sl.moe_experts_grad_weights (true: dgate, dup, ddown) over tokens [E, r1,
/// ..., rn, H]: each expert's rows as one group of the grouped GEMMs
/// (uniform offsets), each op computing only its own results. The rows no
/// token took are zero and give zero (SwiGLU of zero is zero, and so are its
/// gradients there), as the CPU's packed rows.
void moeExpertsGrad(const Step &s, Frame &f, bool weights) {
  enum { kTokens, kGateW, kUpW, kDownW, kDout };
  const std::vector<int64_t> &gate = f.local(s.in[kGateW]);
  int64_t E = gate[0], H = gate[1], F = gate[2],
          rows = f.n(s.in[kTokens]) / std::max<int64_t>(1, H);
  int64_t perExpert = rows / std::max<int64_t>(1, E);
  CudaDevice &dev = deviceOf(f);
  int64_t *offsets, *tiles;
  float *scratch;
  carveScratch(dev, [&](Carve &c) {
    offsets = c.take<int64_t>(E + 1);
    tiles = c.take<int64_t>(E + 1);
    scratch = c.take<float>(6 * rows * F + rows * H);
  });
  float *dx = weights ? nullptr : f.f(s.out[0]), *dGate = weights ? f.f(s.out[0]) : nullptr,
        *dUp = weights ? f.f(s.out[1]) : nullptr, *dDown = weights ? f.f(s.out[2]) : nullptr;
  launched(cuda::uniform_groups(E, perExpert, offsets, tiles, dev.stream()), "uniform_groups");
  Ops ops{dev, offsets, tiles, E, rows};
  cuda::routedExpertsGrad(ops,
                          {f.f(s.in[kTokens]), f.f(s.in[kDout]), f.f(s.in[kGateW]), f.f(s.in[kUpW]),
                           f.f(s.in[kDownW]), rows, H, F, nullptr, dx, dGate, dUp, dDown, scratch});
}

// -- the dense slabs' dispatch and combine, backward ---------------------------

/// Stops the run, in the CPU kernels' words, on an index of `indices`
/// outside [0, E).
void requireExperts(Frame &f, int32_t indices, int64_t E) {
  CudaDevice &dev = deviceOf(f);
  launched(cuda::count_bad_ids(f.ids(indices), f.n(indices), E, dev.counter(), dev.stream()),
           "count_bad_ids");
  requireNoBadIds(f, indices, E, "the experts");
}

/// moe_dispatch_grad: dtokens [E, B, S, H], indices -> dx.
void moeDispatchGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &dl = f.local(s.in[0]);
  requireExperts(f, s.in[1], dl[0]);
  launched(cuda::moe_dispatch_grad(f.f(s.in[0]), f.ids(s.in[1]), dl[1] * dl[2], dl[3],
                                   f.local(s.in[1])[2], dl[0], f.f(s.out[0]), deviceOf(f).stream()),
           "moe_dispatch_grad");
}

/// moe_combine_grad: weights, indices, dy -> dexpert_out [E, B, S, H].
void moeCombineGrad(const Step &s, Frame &f) {
  const std::vector<int64_t> &out = f.local(s.out[0]);
  requireExperts(f, s.in[1], out[0]);
  launched(cuda::moe_combine_grad(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), out[1] * out[2],
                                  out[3], f.local(s.in[0])[2], out[0], f.f(s.out[0]),
                                  deviceOf(f).stream()),
           "moe_combine_grad");
}

/// moe_combine_grad_weights: expert_out [E, B, S, H], indices, dy -> dweights.
void moeCombineGradWeights(const Step &s, Frame &f) {
  const std::vector<int64_t> &el = f.local(s.in[0]);
  requireExperts(f, s.in[1], el[0]);
  launched(cuda::moe_combine_grad_weights(f.f(s.in[0]), f.ids(s.in[1]), f.f(s.in[2]), el[1] * el[2],
                                          el[3], f.local(s.in[1])[2], el[0], f.f(s.out[0]),
                                          deviceOf(f).stream()),
           "moe_combine_grad_weights");
}

// -- capacity mode -----------------------------------------------------------

/// The local dims of a capacity step (kernels/cpu/table.h, capacityDims).
cuda::arith::Capacity capacityOf(const Step &s, Frame &f, int32_t routing, int32_t buffers) {
  cpu::CapacityDims c = capacityDims(s, f, routing, buffers);
  cuda::arith::Capacity d;
  d.B = c.B, d.S = c.S, d.k = c.k, d.E = c.E, d.C = c.C, d.rows = c.rows, d.positions = c.positions;
  return d;
}

/// Stops the run, in the CPU kernels' words, on an index of `indices`
/// outside [0, E) or a slot of `slots` (unless -1) outside [-1, C).
void requireRouting(Frame &f, const cuda::arith::Capacity &d, int32_t indices, int32_t slots) {
  CudaDevice &dev = deviceOf(f);
  requireExperts(f, indices, d.E);
  if (slots < 0)
    return;
  launched(cuda::count_bad_slots(f.ids(slots), f.n(slots), d.C, dev.counter(), dev.stream()),
           "count_bad_slots");
  if (dev.readCounter() == 0)
    return;
  for (int32_t slot : download(dev, f.ids(slots), f.n(slots)))
    if (slot < -1 || slot >= d.C)
      throw Stop{"'" + f.tensors[slots].name + "' holds " + std::to_string(slot) +
                     ", outside [-1, " + std::to_string(d.C) + "), the capacity's slots",
                 false};
}

/// moe_capacity_slots: the slots of every choice, and the rows each expert
/// kept and dropped into the expert load.
void moeCapacitySlots(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[1], -1);
  requireRouting(f, d, s.in[1], -1);
  CudaDevice &dev = deviceOf(f);
  int64_t n = d.groups() * d.E;
  int64_t *kept, *dropped; // one buffer, read back in one copy
  carveScratch(dev, [&](Carve &c) { kept = c.take<int64_t>(2 * n); });
  dropped = kept + n;
  launched(cuda::moe_capacity_slots(src(f, s.in[0]), f.ids(s.in[1]), d,
                                    s.attrs[kPolicy].strings[0] == "probs", f.ids(s.out[0]), kept,
                                    dropped, dev.stream()),
           "moe_capacity_slots");
  if (ExpertLoad *load = expertLoad(s, f, s.in[1], d.E)) {
    std::vector<int64_t> both = download(dev, kept, 2 * n);
    for (int64_t i = 0; i < n; ++i) {
      load->kept[i % d.E] += both[i];
      load->dropped[i % d.E] += both[n + i];
    }
  }
}

void moeDispatchCapacity(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[1], s.out[0]);
  requireRouting(f, d, s.in[1], s.in[2]);
  launched(cuda::moe_dispatch_capacity(src(f, s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), d,
                                       f.local(s.in[0])[2], dst(f, s.out[0]), deviceOf(f).stream()),
           "moe_dispatch_capacity");
}

void moeCombineCapacity(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[2], s.in[0]);
  requireRouting(f, d, s.in[2], s.in[3]);
  launched(cuda::moe_combine_capacity(src(f, s.in[0]), src(f, s.in[1]), f.ids(s.in[2]),
                                      f.ids(s.in[3]), d, f.local(s.in[0])[4], dst(f, s.out[0]),
                                      deviceOf(f).stream()),
           "moe_combine_capacity");
}

void moeDispatchCapacityGrad(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[1], s.in[0]);
  requireRouting(f, d, s.in[1], s.in[2]);
  launched(cuda::moe_dispatch_capacity_grad(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]), d,
                                            f.local(s.in[0])[4], f.f(s.out[0]),
                                            deviceOf(f).stream()),
           "moe_dispatch_capacity_grad");
}

void moeCombineCapacityGrad(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[1], s.out[0]);
  requireRouting(f, d, s.in[1], s.in[2]);
  launched(cuda::moe_combine_capacity_grad(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]),
                                           f.f(s.in[3]), d, f.local(s.in[3])[2], f.f(s.out[0]),
                                           deviceOf(f).stream()),
           "moe_combine_capacity_grad");
}

void moeCombineCapacityGradWeights(const Step &s, Frame &f) {
  cuda::arith::Capacity d = capacityOf(s, f, s.in[1], s.in[0]);
  requireRouting(f, d, s.in[1], s.in[2]);
  launched(cuda::moe_combine_capacity_grad_weights(f.f(s.in[0]), f.ids(s.in[1]), f.ids(s.in[2]),
                                                   f.f(s.in[3]), d, f.local(s.in[0])[4],
                                                   f.f(s.out[0]), deviceOf(f).stream()),
           "moe_combine_capacity_grad_weights");
}

} // namespace

const std::map<std::string, void (*)(const Step &, Frame &)> &cudaMoeRuns() {
  static const std::map<std::string, void (*)(const Step &, Frame &)> runs = {
      {"moe_dropless", moeDropless},
      {"moe_dropless_grad", moeDroplessGrad},
      {"moe_experts_grad", [](const Step &s, Frame &f) { moeExpertsGrad(s, f, false); }},
      {"moe_experts_grad_weights", [](const Step &s, Frame &f) { moeExpertsGrad(s, f, true); }},
      {"moe_dispatch_grad", moeDispatchGrad},
      {"moe_combine_grad", moeCombineGrad},
      {"moe_combine_grad_weights", moeCombineGradWeights},
      {"moe_capacity_slots", moeCapacitySlots},
      {"moe_dispatch_capacity", moeDispatchCapacity},
      {"moe_combine_capacity", moeCombineCapacity},
      {"moe_dispatch_capacity_grad", moeDispatchCapacityGrad},
      {"moe_combine_capacity_grad", moeCombineCapacityGrad},
      {"moe_combine_capacity_grad_weights", moeCombineCapacityGradWeights},
  };
  return runs;
}

} // namespace shardline::rt
