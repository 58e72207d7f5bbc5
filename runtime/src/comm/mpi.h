//===- mpi.h - ranks that are MPI processes --------------------------------===//
//
// One process per rank under mpirun (OpenMPI). Data moves on sub-communicators
// of MPI_COMM_WORLD (Comm::split), with exactly the values each pair trades. A
// rank that fails prints its error and exits with status 1, on which mpirun
// ends the whole job, so no rank waits forever for one that has stopped.
//
// Every call is non-blocking and polled against the timeout (Comm::setTimeout).
// A rank whose wait outlasts it asks the others whether they wait too and
// names those that do not answer; a rank on the same host whose process has
// ended is named within 50 ms of waiting. Either way the rank prints the error
// and exits with kExitRankLost (3) before mpirun ends the job.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_COMM_MPI_H
#define SHARDLINE_RUNTIME_COMM_MPI_H

#include "comm/comm.h"

namespace shardline::rt {

/// Initializes MPI (once per process) and returns the world communicator's
/// comm, or null with `error` set.
std::unique_ptr<Comm> makeMpiComm(int *argc, char ***argv, std::string &error);

/// Finalizes MPI if makeMpiComm initialized it.
void finalizeMpi();

} // namespace shardline::rt

#endif
