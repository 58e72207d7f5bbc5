#!/usr/bin/env python3
"""A dense training step under TP+SP: Shardline's report against Megatron's hand placement.

For a dense model (attention A and MLP F blocks) and t in --tps, compiles a
training step (shardline-compile --train --tp t --sp) and prints, from the
report, the bytes one rank sends in the forward and in the backward, the
activations saved for the backward and the peak, next to Megatron Core's
placement computed from its documented algorithms (Korthikanti et al. 2022,
sequence parallelism): per block an all-gather of the [s, b, h] input and a
reduce-scatter of the output in the forward; in the backward the all-gather
of the output's gradient, the reduce-scatter of the input's gradient and the
input re-gathered for the weight gradient; the embedding's reduce-scatter
(all-gather back), the LM head's all-gather (reduce-scatter and re-gather
back), the vocab-parallel loss (three per-token all-reduces forward, two
backward), the all-reduce of every norm weight's gradient over tp, and the
global gradient norm's. Bytes follow docs/report.md. With --save-gathered,
the re-gathers disappear and the saved activations grow.

  bench/training/megatron_tp_sp.py --bin build/bin --spec examples/models/gpt-dense.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def megatron(spec, t):
    s, b, h, v = spec["seq"], spec["batch"], spec["hidden"], spec["vocab"]
    e = {"f32": 4, "bf16": 2, "f16": 2}[spec.get("dtype", "f32")]
    blocks = len(spec["pattern"])
    act = s * b * h * e  # one [s, b, h] activation
    part = (t - 1) * act // t  # an all-gather or reduce-scatter of it
    tokens = s * b
    fwd = blocks * 2 * part + part + part + 3 * (t - 1) * 4 * tokens
    norms = blocks + 1
    bwd = (blocks * 3 * part + part + 2 * part + 2 * (t - 1) * 4 * tokens
           + norms * 2 * (t - 1) * h * e // t + (t - 1) * 4)
    return fwd, bwd


def report(binary, spec_path, t, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [binary, spec_path, "--tp", str(t), "--sp" if t > 1 else "--sp=false", "--cp", "1",
               "--dp", "1", "--ep", "1", "--train", "--emit", "report", "--report", out] + extra
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--tps", default="1,2,4,8")
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    if set(spec["pattern"]) - set("AF"):
        sys.exit("megatron_tp_sp.py: the closed form covers dense models (A and F blocks)")
    compile_ = os.path.join(args.bin, "shardline-compile")
    print(f"model {spec['name']}: pattern {spec['pattern']}, seq {spec['seq']}, batch "
          f"{spec['batch']}, hidden {spec['hidden']}, {spec.get('dtype', 'f32')}")
    print(f"{'tp':>3} {'policy':<14} {'fwd bytes':>10} {'Megatron':>10} {'bwd bytes':>10} "
          f"{'Megatron':>10} {'re-gathers':>10} {'saved/rank':>11} {'x tp':>6} {'peak/rank':>10}")
    saved1 = None
    ok = True
    for t in [int(x) for x in args.tps.split(",")]:
        for policy, extra in (("re-gather", []), ("save-gathered", ["--save-gathered"])):
            r = report(compile_, args.spec, t, extra)
            tr = r["training"]
            fwd, bwd = tr["forward_comm_bytes_per_rank"], tr["backward_comm_bytes_per_rank"]
            saved = tr["saved_for_backward_bytes_per_rank"]
            if saved1 is None:
                saved1 = saved
            mfwd, mbwd = megatron(spec, t)
            if policy == "re-gather":
                ok = ok and fwd == mfwd and bwd == mbwd and saved * t == saved1
            print(f"{t:>3} {policy:<14} {fwd:>10} {mfwd:>10} {bwd:>10} {mbwd:>10} "
                  f"{tr['regather_bytes_per_rank']:>10} {saved:>11} {saved * t / saved1:>6.3f} "
                  f"{r['totals']['peak_activation_bytes_per_rank']:>10}")
    print("re-gather policy: bytes equal Megatron's and saved activations are exactly 1/tp of "
          "one device's" if ok else "MISMATCH against Megatron's closed form")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
