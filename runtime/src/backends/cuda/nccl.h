//===- nccl.h - a rank's NCCL communicators on its GPU ----------*- C++ -*-===//
//
// The CUDA backend's collectives between GPUs. NCCL is opened by this
// library alone, at run time (dlopen of libnccl.so.2, its functions through
// one X-macro table, as IREE's CUDA driver loads its symbols), so nothing
// links it and a machine without it still runs plans of one rank.
//
// A rank joins the world communicator from an ncclUniqueId that rank 0 makes
// and the host comm shares (threads of one process, or MPI), then splits it
// once per communicator of the program's lowering (comm/nccl_plan.h). The
// layout transition steps run that lowering on the rank's stream; each call
// is waited for while polling ncclCommGetAsyncError, the host comm's abort
// and the run's --timeout: on an error or at the deadline every communicator
// of the rank is aborted (ncclCommAbort) and the step stops with an error
// naming the call, its group and the step, so a dead rank never hangs the
// others.
//
// An all_gather paired with the linear that reads it (comm/gather_overlap.h)
// only places this rank's piece; the linear's run brings the others piece
// by piece (backends/cuda/overlap.h). SHARDLINE_NCCL_OVERLAP=0 turns the
// pairing off (every gather whole, as one ncclAllGather); it must be set
// alike on every rank, which connect() checks.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_CUDA_NCCL_H
#define SHARDLINE_RUNTIME_BACKENDS_CUDA_NCCL_H

#include "comm/movement.h"
#include "comm/nccl_plan.h"
#include "comm/transfer.h"
#include "exec/program.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shardline::rt {

class CudaDevice;

#define SHARDLINE_NCCL_FUNCTIONS(X)                                                                \
  X(ncclGetVersion, (int *))                                                                       \
  X(ncclGetUniqueId, (ncclUniqueId *))                                                             \
  X(ncclCommInitRankConfig, (ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *))                \
  X(ncclCommSplit, (ncclComm_t, int, int, ncclComm_t *, ncclConfig_t *))                           \
  X(ncclCommGetAsyncError, (ncclComm_t, ncclResult_t *))                                           \
  X(ncclCommAbort, (ncclComm_t))                                                                   \
  X(ncclCommDestroy, (ncclComm_t))                                                                 \
  X(ncclAllGather, (const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t))       \
  X(ncclReduceScatter,                                                                             \
    (const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t))         \
  X(ncclAllReduce,                                                                                 \
    (const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t))         \
  X(ncclSend, (const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))               \
  X(ncclRecv, (void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))                     \
  X(ncclGroupStart, ())                                                                            \
  X(ncclGroupEnd, ())

/// NCCL's functions, loaded once per process.
struct NcclApi {
#define SHARDLINE_NCCL_POINTER(name, args) ncclResult_t(*name) args = nullptr;
  SHARDLINE_NCCL_FUNCTIONS(SHARDLINE_NCCL_POINTER)
#undef SHARDLINE_NCCL_POINTER
  const char *(*ncclGetErrorString)(ncclResult_t) = nullptr;
};

/// The loaded library, or nullptr with the reason (not found, a symbol
/// missing, a version without ncclCommSplit).
const NcclApi *loadNccl(std::string &error);

/// Whether SHARDLINE_NCCL_OVERLAP lets paired gathers run in pieces: unset,
/// "" or "1" yes, "0" no; anything else is an error naming the variable.
bool gatherOverlapEnabled(std::string &error);

/// Runs `copies` (comm/movement.h) on `stream`, elements of `elementBytes`.
void copyOnDevice(const std::vector<StridedCopy> &copies, const void *src, void *dst,
                  cudaStream_t stream, int64_t elementBytes = 4);

/// One rank's communicators and the program's lowering they run.
class NcclWorld {
public:
  /// Joins the world and makes the communicators of `lowering`; every rank
  /// calls it at the same point. nullptr with the reason on failure.
  static std::unique_ptr<NcclWorld> connect(Frame &frame, CudaDevice &device,
                                            const NcclLowering &lowering, double timeoutSeconds,
                                            std::string &error);
  NcclWorld(const NcclWorld &) = delete;
  NcclWorld &operator=(const NcclWorld &) = delete;
  /// Destroys the communicators, or aborts them once a call has failed.
  ~NcclWorld();

  /// Runs a layout transition step (all_gather, reduce_scatter, all_reduce,
  /// all_to_all, slice, reorder, relayout) between the ranks' GPUs and
  /// counts the bytes its lowering sends.
  void transition(const Step &s, Frame &f);

  // -- the kernels' own exchanges (backends/cuda/exchange.cpp) ---------------

  /// What this rank sends to and receives from one peer (a world rank) in a
  /// grouped send/receive: counts in elements of the call's type, on the
  /// device.
  struct PeerTransfer {
    int64_t peer = 0;
    const void *send = nullptr;
    int64_t sendCount = 0;
    void *recv = nullptr;
    int64_t recvCount = 0;
  };
  /// One grouped ncclSend/ncclRecv over the communicator of `axes`' groups,
  /// on `stream` (nullptr: the rank's stream), waited for; nothing for a
  /// group of one. Work queued on another stream before the call runs on
  /// while the host waits.
  void sendRecv(Frame &f, const std::vector<std::string> &axes,
                const std::vector<PeerTransfer> &transfers, cudaStream_t stream = nullptr,
                DType type = DType::F32);
  /// The same call queued on `stream` without waiting for it to run (only
  /// for NCCL to issue it); finish() waits. Values of `type` (f32, i32, bf16
  /// or f16), counts in elements.
  void postSendRecv(Frame &f, const std::vector<std::string> &axes,
                    const std::vector<PeerTransfer> &transfers, cudaStream_t stream, DType type);
  /// Waits for what postSendRecv queued on `stream` over `axes`' group, as
  /// every call is waited for (errors, the host's abort, the deadline).
  void finish(Frame &f, const std::vector<std::string> &axes, cudaStream_t stream);
  /// ncclAllGather of `count` values of `type` of every member into `recv`,
  /// in communicator order, waited for; a group of one copies `send`.
  void allGather(Frame &f, const std::vector<std::string> &axes, const void *send, void *recv,
                 int64_t count, DType type = DType::F32);
  /// The world ranks of this rank's group over `axes`, in the order of its
  /// communicator (this rank alone for a group of one).
  std::vector<int64_t> members(const std::vector<std::string> &axes);
  /// Counts the bytes step `s`'s lowering sends (the report's) and its
  /// calls by group size (--profile).
  void countSent(const Step &s, Frame &f) const;
  /// Counts step `s`'s lowered calls by group size alone (a step that
  /// counts its bytes itself).
  void countCalls(const Step &s, Frame &f) const;

  /// The pair step `step` (its gather or its linear) belongs to, or nullptr
  /// when it runs whole (not paired, or SHARDLINE_NCCL_OVERLAP=0).
  const GatherOverlap *overlapAt(int64_t step) const;
  /// The same for the reduce-scatter pairs (its linear or its
  /// reduce-scatter).
  const ScatterOverlap *scatterAt(int64_t step) const;
  /// A reduce-scatter pair's landing buffer and send staging (nullptr in
  /// place), each for elements of `elementBytes`, kept until the world ends.
  std::pair<char *, char *> scatterMemory(const ScatterOverlap &pair, int64_t elementBytes);
  /// The axes of communicator `c` of the lowering.
  const std::vector<std::string> &axesOf(int64_t c) const { return lowering.communicators[c].axes; }

private:
  NcclWorld(const NcclApi &api, CudaDevice &device, const NcclLowering &lowering, const Mesh &mesh,
            int64_t self, double timeoutSeconds);

  /// Moves this rank's part `src` of a tensor of global `shape` in layout
  /// `from` to its part `dst` in `to`, as the host collectives would;
  /// `half` tells an all-reduce's two moves apart.
  void move(const Step &s, Frame &f, int half, const std::vector<int64_t> &shape,
            const Layout &from, const Layout &to, const BufferView &src, const BufferView &dst);
  /// A general transfer that sums nothing, on the device: the runs of
  /// comm/movement.h (planTransferRuns, worked out at the first run and kept
  /// on the device) pack what each member reads from this rank, one grouped
  /// ncclSend/ncclRecv moves it in the tensor's type, and the runs place the
  /// target part from the source part and what arrived. False when the move
  /// sums (transfer() places those on the host).
  bool transferOnDevice(const Step &s, Frame &f, int half, int64_t communicator,
                        const std::vector<int64_t> &shape, const Layout &from, const Layout &to,
                        const BufferView &src, const BufferView &dst);
  /// A general transfer that sums: the values each member reads from this
  /// rank gathered on the host, sent and received over NCCL in the tensor's
  /// type (communicator `communicator`; none for a group of one), and placed
  /// and summed on the host in f32 (integers never sum).
  void transfer(const Step &s, Frame &f, int half, int64_t communicator,
                const std::vector<int64_t> &shape, const Layout &from, const Layout &to,
                const BufferView &src, const BufferView &dst);
  /// The communicator of `axes`' groups, or -1 for groups of one rank.
  int64_t communicatorOf(const std::vector<std::string> &axes);
  /// Stops the step when an NCCL call failed to start.
  void check(ncclResult_t result, const char *call, int64_t communicator);
  /// Waits for `stream` (nullptr: the rank's stream; the step's NCCL calls)
  /// to finish, polling the communicator's asynchronous error, the host's
  /// abort and the deadline. With `issuedOnly`, only until NCCL has issued
  /// the calls onto the stream: a non-blocking communicator's ncclGroupEnd
  /// may return before, and no other call may go to it until then.
  void wait(Frame &f, const char *call, int64_t communicator, cudaStream_t stream = nullptr,
            bool issuedOnly = false);
  /// Aborts every communicator of this rank (once).
  void abortAll();
  /// Aborts every communicator and stops the step with `why`.
  [[noreturn]] void fail(const char *call, int64_t communicator, const std::string &why);

  const NcclApi &api;
  CudaDevice &device;
  NcclLowering lowering;
  Mesh mesh;
  int64_t self;
  double timeoutSeconds;
  ncclComm_t world = nullptr;
  std::vector<ncclComm_t> comms;
  bool failed = false;
  std::map<int64_t, const NcclStep *> byStep;
  /// The pairs by the index of their gather and of their linear.
  std::map<int64_t, const GatherOverlap *> overlaps;
  /// The reduce-scatter pairs by the index of their linear and of their
  /// reduce-scatter, and their memory by the reduce-scatter's.
  std::map<int64_t, const ScatterOverlap *> scatters;
  std::map<int64_t, std::pair<char *, char *>> scatterBuffers;
  std::map<std::vector<std::string>, int64_t> byAxes;
  /// General transfers: what this rank reads and what each member reads
  /// from it, by (step, half), worked out at the first run.
  struct Transfer {
    TransferPlan mine;
    std::vector<std::vector<int64_t>> sends;
  };
  std::map<std::pair<int64_t, int>, Transfer> transfers;
  /// The same by the runs, with the runs' device copies (pack, then place).
  struct DeviceTransfer {
    TransferRuns runs;
    const int64_t *pack = nullptr, *place = nullptr;
    /// The longest run of each list (copy_runs' grid).
    int64_t packLongest = 0, placeLongest = 0;
  };
  std::map<std::pair<int64_t, int>, DeviceTransfer> deviceTransfers;
  /// Device memory the world keeps until it ends (the runs).
  std::vector<void *> held;
};

} // namespace shardline::rt

#endif
