# Compares the report of a run under mpirun with the same run's on thread
# ranks (test/Tools/mpi.test): the first process gathered every rank's
# figures, so the load per expert and rank and the bytes per rank agree.
import json
import sys

mpi, threads = (json.load(open(path)) for path in sys.argv[1:3])


def check(cond, what):
    if not cond:
        sys.exit("compare-run-reports: " + what)


check(mpi["schema"] == threads["schema"] == "shardline-run-report/1", "schema")
check(mpi["comm"] == "mpi" and threads["comm"] == "threads", "comm")
check(mpi["ranks"] == threads["ranks"] == 4, "ranks")
check(mpi["moe"] == threads["moe"], "MoE load")
check(mpi["bytes_sent_per_rank"] == threads["bytes_sent_per_rank"], "bytes sent per rank")
check(mpi["arena_bytes_per_rank"] == threads["arena_bytes_per_rank"], "arena")
check(mpi["verify"]["result"] == threads["verify"]["result"] == "PASS", "PASS")
(layer,) = mpi["moe"]["layers"]
received = [p["received"] for p in layer["per_rank"]]
# Expert r on rank r: each rank's figure is its own, gathered by the first.
check(received == [e["received"] for e in layer["per_expert"]], "received per rank " + str(received))
check(sum(received) == 32 and len(set(received)) > 1, "received rows " + str(received))
check(len(set(mpi["bytes_sent_per_rank"]["measured_by_rank"])) > 1, "bytes per rank gathered")
