#!/usr/bin/python3
"""oracle.gradients: the gradients of a training step against PyTorch's autograd.

Each block family (test/oracle/models/*.json, and a dense model of attention
and MLP) is compiled with --train under several strategies, run
partitioned on thread ranks on the byte dataset without --train (so the step
computes the loss and every gradient, grad.<name>, and leaves the weights as
they are) with --save-weights and --save-outputs, and the oracle (oracle.py)
recomputes logits, loss and the gradient of every weight by autograd in
float64: all within a relative error of 1e-4.

Capacity-mode MoE runs the MoE spec with a capacity factor under both drop
policies, under the spec's own strategy (the oracle's token groups follow
its `parallel` section); at F 1.0 the run must have dropped routed rows.

The dense model in bf16 trains through f32 main copies: its gradients (f32
from bf16 activations) are checked under three strategies within 2e-2, the
rounding of the bf16 activations (measured below 8e-3), and once more as bf16
gradients reduced in bf16 (--grad-reduce-in-bf16, under tp 2 + dp 2).

That the check can fail: the oracle also runs on the same outputs with one
weight changed by about 1% and must report a MISMATCH (the gradients it
computes no longer match the run's).

Prints one line per run and "N passed, N failed"; exits 77 (ctest's skip)
with the reason when torch cannot be imported.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from forward import rewrite, run, torch_missing  # noqa: E402

DENSE = {"name": "oracle-dense", "pattern": "AF", "vocab": 256, "hidden": 32, "seq": 32,
         "batch": 4, "attention": {"heads": 4, "kv_heads": 2, "head_dim": 8},
         "mlp": {"ffn_hidden": 64}}
STRATEGIES = [
    ["--tp", "1", "--sp=false", "--cp", "1"],
    ["--tp", "2", "--sp", "--cp", "1"],
    ["--tp", "2", "--sp", "--cp", "2", "--cp-comm", "allgather", "--cp-order", "zigzag"],
    ["--tp", "1", "--sp=false", "--cp", "2", "--cp-comm", "a2a", "--cp-order", "contiguous"],
    ["--tp", "2", "--sp", "--cp", "2", "--cp-comm", "ring", "--cp-order", "zigzag"],
    ["--tp", "2", "--sp=false", "--cp", "1", "--dp", "2"],
    # Expert parallelism folded onto tp and dp: the expert weights' gradients
    # are reduced over no rank, the router's over all four.
    ["--tp", "2", "--sp", "--cp", "1", "--dp", "2", "--ep", "4"],
]
# The weight whose 1% change the gradient check must see.
PERTURB = {"attention": "blocks.1.attn.wk", "mlp": "blocks.1.mlp.w_up",
           "dense": "blocks.0.attn.wq", "local_attention": "blocks.1.local_attn.wq",
           "moe": "blocks.1.moe.w_up", "mamba": "blocks.1.mamba.w_x",
           "recurrent": "blocks.1.rglru.w_in"}
# The bf16 dense model's strategies and tolerance.
BF16_STRATEGIES = [STRATEGIES[1], STRATEGIES[4], STRATEGIES[5]]
BF16_RTOL = 2e-2
# Families whose backward does not cover context parallelism (none today).
WITHOUT_CP = set()


# Capacity mode (moe.capacity_factor): the MoE spec under its own strategy
# (the oracle groups the tokens as the spec's `parallel` says), with F 1.0
# under the "probs" policy, which drops choices at this seed, and F 1.25
# under "position".
CAPACITY_PARALLEL = {"dp": 2, "tp": 2, "sp": True, "cp": 2, "cp_order": "zigzag", "ep": 2}
CAPACITY = [(1.0, "probs"), (1.25, "position")]


def check(args, oracle, tmp, tag, name, spec, flags, seed, rtol=None):
    """Compiles spec with flags, runs one training step's gradients, and
    checks them against the oracle (within rtol, else its f32 default) and
    the oracle's refusal of a perturbed weight; returns (None, the PASS
    details, the run's output) or (why, ...)."""
    if rtol is not None:
        oracle = oracle + ["--rtol", str(rtol)]
    plan, weights, outputs, bad = (os.path.join(tmp, f"{tag}.{ext}") for ext in (
        "slp", "w.safetensors", "o.safetensors", "bad.safetensors"))
    code, out = run([os.path.join(args.bin, "shardline-compile"), spec, *flags, "--train",
                     "--emit", "plan", "-o", plan])
    if code != 0:
        return f"shardline-compile exited {code}:\n{out}", None, None
    code, ran = run([os.path.join(args.bin, "shardline-run"), plan, "--data", args.data, "--seed",
                     str(seed), "--save-weights", weights, "--save-outputs", outputs])
    if code != 0:
        return f"shardline-run exited {code}:\n{ran}", None, None
    code, good = run(oracle + [spec, "--weights", weights, "--outputs", outputs])
    if code != 0 or "oracle: PASS" not in good or "grad." not in good:
        return f"the oracle disagrees (exit {code}):\n{good}", None, None
    target = PERTURB[name]
    rewrite(weights, bad, lambda n, v: v * 1.01 + 1e-3 if n == target else v)
    code, out = run(oracle + [spec, "--weights", bad, "--outputs", outputs])
    if code != 1 or "MISMATCH" not in out:
        return f"the oracle accepts {target} changed by 1% (exit {code}):\n{out}", None, None
    grads = [ln.split(": relative error ") for ln in good.splitlines() if ln.startswith("grad.")]
    worst = max(grads, key=lambda g: float(g[1]))
    return None, f"{len(grads)} gradients, largest relative error {worst[1]} ({worst[0]})", ran


def dropped(ran):
    """The dropped routed rows shardline-run printed, or None."""
    for line in ran.splitlines():
        if line.startswith("moe routed rows"):
            return int(line.split("dropped ")[1].split()[0])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the build's bin/ (shardline-compile, -run)")
    ap.add_argument("--data", required=True, help="the byte dataset (build/data/gpl3.bin)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                    help="cases run at once (default: the cores)")
    args = ap.parse_args()
    if (why := torch_missing()):
        print(why)
        return 77
    # Small shapes: BLAS threads would only contend with the other cases.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    oracle = [sys.executable, os.path.join(HERE, "oracle.py")]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        dense = os.path.join(tmp, "dense.json")
        with open(dense, "w") as f:
            json.dump(DENSE, f)
        dense16 = os.path.join(tmp, "dense-bf16.json")
        with open(dense16, "w") as f:
            json.dump(dict(DENSE, dtype="bf16"), f)
        models = [(name, os.path.join(HERE, "models", name + ".json"))
                  for name in ("attention", "mlp", "local_attention", "moe", "mamba",
                               "recurrent")] + [("dense", dense)]
        cases = []
        for name, spec in models:
            for i, flags in enumerate(STRATEGIES):
                if name in WITHOUT_CP and "--cp" in flags and flags[flags.index("--cp") + 1] != "1":
                    continue
                # Axes the strategy does not name are 1 (the specs set their own).
                axes = [a for axis in ("--dp", "--ep") if axis not in flags for a in (axis, "1")]
                cases.append((f"{name}{i}", name, spec, flags + axes, 3 + i, None))
        for i, flags in enumerate(BF16_STRATEGIES):
            axes = [a for axis in ("--dp", "--ep") if axis not in flags for a in (axis, "1")]
            cases.append((f"bf16-{i}", "dense", dense16, flags + axes, 11 + i, "bf16"))
        # Megatron's --grad-reduce-in-bf16: the gradients themselves bf16,
        # reduced over tp and dp in bf16.
        cases.append(("bf16-grad16", "dense", dense16,
                      BF16_STRATEGIES[-1] + ["--ep", "1", "--grad-reduce-in-bf16"], 14, "bf16"))
        with open(os.path.join(HERE, "models", "moe.json")) as f:
            moe = json.load(f)
        for factor, policy in CAPACITY:
            spec = os.path.join(tmp, f"moe-capacity-{policy}.json")
            moe["moe"].update(capacity_factor=factor, token_drop_policy=policy)
            moe["parallel"] = CAPACITY_PARALLEL
            with open(spec, "w") as f:
                json.dump(moe, f)
            cases.append((f"capacity-{policy}", "moe", spec, [], 5, (factor, policy)))
        # The cases are independent: run as many at once as there are cores
        # (each is mostly one busy process), and print them in order.
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = [pool.submit(check, args, oracle, tmp, tag, name, spec, flags, seed,
                                   BF16_RTOL if extra == "bf16" else None)
                       for tag, name, spec, flags, seed, extra in cases]
        for (tag, name, spec, flags, seed, extra), result in zip(cases, results):
            capacity = extra if isinstance(extra, tuple) else None
            label = (f"{name} {' '.join(flags)}" if capacity is None else
                     f"moe capacity factor {capacity[0]} {capacity[1]} under its spec's strategy")
            if extra == "bf16":
                label = f"{name} bf16 {' '.join(flags)} (within {BF16_RTOL:g})"
            why, details, ran = result.result()
            if why is None and capacity is not None:
                drops = dropped(ran)
                if drops is None or (capacity[0] == 1.0 and drops == 0):
                    why = f"the run printed {drops} dropped rows, the case must drop some:\n{ran}"
                details += f", {drops} routed rows dropped"
            if why is None:
                passed += 1
                print(f"PASS {label}: {details}")
            else:
                failed += 1
                print(f"FAIL {label}: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
