#!/usr/bin/env python3
"""Times sl-elide-gathers on long chains of free ops: the placement has no
look-back limit, so its cost must grow with the chain's length, not faster.

For each length N it writes a global-view program: a premature all_gather of a
sequence-split value, N free ops (silu, and with --fanout every second op an
add that reuses the gathered value, so it has N/2 users), and a slice back to
the split layout. The optimum sends nothing. It prints the time of
`shardline-opt -sl-elide-gathers` minus the time of parsing and printing the
same file (best of --repeat runs), per op, and checks the result sends 0 bytes.

Usage: bench/compile/elide_chain.py [--build DIR] [--lengths 1000,10000,100000]
                                     [--fanout] [--repeat 3]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

SPLIT = "#sl.layout<@mesh, [[], [tp], []]>"
WHOLE = "#sl.layout<@mesh, [[], [], []]>"


def program(n, fanout):
    t = lambda l: f"tensor<2x8x16xf32, {l}>"
    lines = ["sl.mesh @mesh(tp = 2)",
             f"func.func @chain(%x: {t(SPLIT)}) -> {t(SPLIT)} {{",
             f'  %g = sl.all_gather %x {{axes = ["tp"], dim = 1}} : {t(SPLIT)} -> {t(WHOLE)}']
    prev = "%g"
    for i in range(n):
        if fanout and i % 2:
            lines.append(f"  %v{i} = sl.add {prev}, %g : ({t(WHOLE)}, {t(WHOLE)}) -> {t(WHOLE)}")
        else:
            lines.append(f"  %v{i} = sl.silu {prev} : ({t(WHOLE)}) -> {t(WHOLE)}")
        prev = f"%v{i}"
    lines += [f'  %s = sl.slice {prev} {{axes = ["tp"], dim = 1}} : {t(WHOLE)} -> {t(SPLIT)}',
              f"  return %s : {t(SPLIT)}", "}"]
    return "\n".join(lines) + "\n"


def best(cmd, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--lengths", default="1000,10000,100000")
    ap.add_argument("--fanout", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    opt = os.path.join(args.build, "bin", "shardline-opt")
    print(f"{'ops':>8} {'pass s':>8} {'us/op':>7}  (parse+print subtracted)")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.lengths.split(",") if x]:
            path = os.path.join(tmp, f"chain{n}.mlir")
            with open(path, "w") as f:
                f.write(program(n, args.fanout))
            base, _ = best([opt, path, "-o", os.devnull], args.repeat)
            full, _ = best([opt, path, "-sl-elide-gathers", "-o", os.devnull], args.repeat)
            _, out = best([opt, path, "-sl-elide-gathers", "-sl-analyze", "-o", os.devnull], 1)
            if "totals: 0 bytes sent per rank" not in out.stderr + out.stdout:
                sys.exit(f"chain of {n}: the pass left bytes to send")
            print(f"{n:>8} {full - base:>8.3f} {(full - base) / n * 1e6:>7.2f}")


if __name__ == "__main__":
    main()
