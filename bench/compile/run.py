#!/usr/bin/env python3
"""Times shardline-compile's full pipeline on generated hybrid models.

For each block count it writes a model spec whose pattern repeats a hybrid
unit (attention, Mamba, MoE, RG-LRU, MLP), runs shardline-compile with the
tp2·sp·cp2·ep2 strategy, and prints wall time and peak resident memory of the
compiler process. Usage: bench/compile/run.py [--build DIR] [--blocks 100,1000,3000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

UNIT = "AEMEFMEMRF"


def spec(blocks):
    pattern = (UNIT * (blocks // len(UNIT) + 1))[:blocks]
    return {
        "name": f"hybrid-{blocks}", "pattern": pattern,
        "vocab": 512, "hidden": 128, "seq": 256, "batch": 2, "dtype": "f32",
        "attention": {"heads": 8, "kv_heads": 4, "head_dim": 16},
        "mamba": {"heads": 8, "head_dim": 16, "state": 16, "groups": 2, "conv": 4},
        "moe": {"experts": 8, "top_k": 2, "ffn_hidden": 256},
        "mlp": {"ffn_hidden": 384},
        "recurrent": {"width": 128, "conv": 4},
        "parallel": {"dp": 1, "tp": 2, "sp": True, "cp": 2, "cp_comm": "ring", "ep": 2},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--blocks", default="100,1000,3000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="extra shardline-compile flags")
    args = ap.parse_args()
    compiler = os.path.join(args.build, "bin", "shardline-compile")
    print(f"{'blocks':>7} {'ops':>8} {'best s':>8} {'median s':>9} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for blocks in [int(b) for b in args.blocks.split(",")]:
            path = os.path.join(tmp, f"hybrid-{blocks}.json")
            with open(path, "w") as f:
                json.dump(spec(blocks), f)
            times = []
            peak = 0
            for _ in range(args.repeat):
                # Each run in a fresh child so ru_maxrss is that child's peak.
                out = subprocess.run([sys.executable, "-c", (
                    "import resource,subprocess,sys,time;"
                    "t=time.perf_counter();"
                    "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE);"
                    "e=time.perf_counter()-t;"
                    "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
                    "sys.stderr.write(r.stderr.decode()) if r.returncode else None;"
                    "print(r.returncode, e, m)"), compiler, path, *args.extra],
                    stdout=subprocess.PIPE, text=True, check=True).stdout.split()
                if out[0] != "0":
                    sys.exit(f"shardline-compile failed on {blocks} blocks")
                times.append(float(out[1]))
                peak = max(peak, int(out[2]))
            ops = subprocess.run([compiler, path, "--emit", "mlir", *args.extra],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout.count(" = sl.")
            times.sort()
            print(f"{blocks:>7} {ops:>8} {times[0]:>8.3f} {times[len(times) // 2]:>9.3f} "
                  f"{peak / 1024:>9.1f}")


if __name__ == "__main__":
    main()
