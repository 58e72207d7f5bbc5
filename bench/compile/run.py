#!/usr/bin/env python3
"""Times shardline-compile's full pipeline on generated hybrid models.

For each block count it writes a model spec whose pattern repeats a hybrid
unit (attention, Mamba, MoE, RG-LRU, MLP), runs shardline-compile with the
tp2·sp·cp2·dp2·ep2 strategy (8 ranks, ep folded onto tp), and prints wall time and peak resident memory of the
compiler process.

Then it compiles one model (--model, the 48-block large hybrid) at each
sequence length of --seqs, once with --report and once with --emit plan, and
prints both times: a compiler's cost must not grow with the tensors' extents,
so it fails when the --report CPU times differ by more than 10%.

Usage: bench/compile/run.py [--build DIR] [--blocks 100,1000,3000]
                            [--seqs 131072,1048576] [--model SPEC.json]
An empty --blocks or --seqs skips that part.
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
        "parallel": {"dp": 2, "tp": 2, "sp": True, "cp": 2, "cp_comm": "ring", "ep": 2},
    }


def timed(argv):
    """Wall and CPU (user + system) seconds of one run of argv, which must succeed."""
    t = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{err}")
    return wall, usage.ru_utime + usage.ru_stime


def sequence_scaling(compiler, model, seqs, repeat, extra, tmp):
    """Compile time of one model at each sequence length; False if --report grows.

    The lengths take turns within each repeat, so that a change in the machine's
    load falls on all of them; the verdict uses the best CPU time, which other
    processes on a shared machine disturb less than the wall time."""
    with open(model) as f:
        base = json.load(f)
    commands = {}
    for seq in seqs:
        path = os.path.join(tmp, f"{base['name']}-{seq}.json")
        with open(path, "w") as f:
            json.dump(dict(base, seq=seq), f)
        commands[seq] = {
            "report": [compiler, path, "--emit", "mlir", "-o", os.devnull,
                       "--report", os.path.join(tmp, "report.json"), *extra],
            "plan": [compiler, path, "--emit", "plan", "-o", os.path.join(tmp, "plan.slp"),
                     *extra],
        }
    best = {(seq, what): (float("inf"), float("inf")) for seq in seqs for what in commands[seq]}
    for _ in range(repeat):
        for seq in seqs:
            for what, argv in commands[seq].items():
                wall, cpu = timed(argv)
                old = best[(seq, what)]
                best[(seq, what)] = (min(old[0], wall), min(old[1], cpu))
    print(f"\n{base['name']}: compile time against the sequence length (best of {repeat}, "
          "wall / CPU seconds)")
    print(f"{'seq':>9} {'--report':>15} {'--emit plan':>15}")
    for seq in seqs:
        r, p = best[(seq, "report")], best[(seq, "plan")]
        print(f"{seq:>9} {r[0]:>7.3f} / {r[1]:.3f} {p[0]:>7.3f} / {p[1]:.3f}")
    cpu = [best[(seq, "report")][1] for seq in seqs]
    ratio = max(cpu) / min(cpu)
    ok = ratio <= 1.10
    print(f"--report CPU time, longest / shortest: {ratio:.3f} ({'within' if ok else 'over'} 10%)")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--blocks", default="100,1000,3000")
    ap.add_argument("--seqs", default="131072,1048576")
    ap.add_argument("--model",
                    default=os.path.join(root, "examples", "models", "hybrid-48l-large.json"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="extra shardline-compile flags")
    args = ap.parse_args()
    compiler = os.path.join(args.build, "bin", "shardline-compile")
    blocks_list = [int(b) for b in args.blocks.split(",") if b]
    seqs = [int(s) for s in args.seqs.split(",") if s]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if blocks_list:
            print(f"{'blocks':>7} {'ops':>8} {'best s':>8} {'median s':>9} {'peak MiB':>9}")
        for blocks in blocks_list:
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
        if seqs:
            ok = sequence_scaling(compiler, args.model, seqs, args.repeat, args.extra, tmp)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
