"""Values through sl-elide-gathers: random programs, partitioned runs against single-device runs.

Reads the programs that test/Unit/ElidePropertyTest.cpp writes (ELIDE_PROPERTY_WRITE=DIR gives
DIR/elide-<seed>.mlir for seeds 1, 2, ... and, for the one-kind programs, 1001, 1002, ..., and
DIR/optimum-<seed>.mlir, the brute-force optimum written out) and takes the first COUNT of them
from seed FIRST on (1 unless given) whose arguments hold no pending sum: shardline-run
fills every input from the seed whole on each rank (extractLocal takes no pending sums), so a
`partial` argument would hold the value once per rank of its axes. For each: runs
`shardline-opt -sl-elide-gathers`, compiles the output to a plan and runs it with
`shardline-run --verify`, which compares the partitioned run with the single-device run of the
same program and seed and checks the bytes sent against the report; then the same for the
optimum. Exits non-zero naming the seed and the step that failed.

  elide_property_verify.py DIR COUNT [FIRST]
"""
import os
import re
import subprocess
import sys


def run(step, seed, cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        sys.exit(f"seed {seed}: {step} exited {done.returncode}: {' '.join(cmd)}\n"
                 f"{done.stdout}{done.stderr}")
    return done.stdout


def verify(seed, program):
    plan = program[:-len(".mlir")] + ".slp"
    run("shardline-compile", seed, ["shardline-compile", program, "--emit", "plan", "-o", plan])
    out = run("shardline-run", seed, ["shardline-run", plan, "--verify"])
    if "PASS" not in out.split():
        sys.exit(f"seed {seed}: shardline-run --verify of {program} did not print PASS:\n{out}")


def pending_sum_argument(program):
    with open(program) as f:
        signature = re.search(r"func\.func @\w+\((.*?)\) ->", f.read())
    if not signature:
        sys.exit(f"{program}: no function signature")
    return "partial" in signature.group(1)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    directory, count = sys.argv[1], int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) == 4 else 1
    checked, seed = 0, first - 1
    while checked < count:
        seed += 1
        program = os.path.join(directory, f"elide-{seed}.mlir")
        if not os.path.exists(program):
            sys.exit(f"{checked} of {count} programs checked: {program} does not exist "
                     "(write the programs with ELIDE_PROPERTY_WRITE)")
        if pending_sum_argument(program):
            continue
        elided = os.path.join(directory, f"elided-{seed}.mlir")
        run("shardline-opt", seed, ["shardline-opt", program, "-sl-elide-gathers", "-o", elided])
        verify(seed, elided)
        verify(seed, os.path.join(directory, f"optimum-{seed}.mlir"))
        print(f"seed {seed}: PASS")
        checked += 1


if __name__ == "__main__":
    main()
