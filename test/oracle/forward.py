#!/usr/bin/python3
"""oracle.forward: each block family alone (test/oracle/models/*.json, f32)
and nam56r-tiny, compiled to a plan, run partitioned under the model's own
strategy on thread ranks with --save-weights and --save-outputs, and checked
by the PyTorch oracle (oracle.py) at a relative error of 1e-4. One model also
runs on the byte dataset (--data) for several forward passes.

At their initial scales some paths barely reach the logits (at the seed's
weights, removing Mamba's whole state path moves nam56r's logits by less
than 1e-4), so every model runs a second time on "stressed" weights: the
seeded ones with the gates, step sizes and expert widths scaled (STRESS) so
that each family's own math moves the logits by percents; `--weights` loads
them into the same partitioned run.

That the check can fail: for every model, the oracle also runs on the
stressed weight file with one weight of the family changed by about 1%
(PERTURB) and must report a MISMATCH with exit status 1.

Prints one line per run and "N passed, N failed"; exits 77 (ctest's skip)
with the reason when torch cannot be imported.
"""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# The weight each model's failure check changes: one of the family's own, whose 1% change moves
# the logits of the stressed model by more than 1e-3.
PERTURB = {
    "attention": "blocks.1.attn.wk",
    "local_attention": "blocks.1.local_attn.wk",
    "mamba": "blocks.1.mamba.a_log",
    "moe": "blocks.1.moe.router",
    "recurrent": "blocks.1.rglru.wa",
    "mlp": "blocks.1.mlp.w_up",
    "nam56r-tiny": "blocks.11.rglru.wa",
}

# Weights rescaled (by the end of their names) for the stressed run: Mamba's steps near 1 and
# its B and C near 1 so the state path outweighs the D skip; RG-LRU's gates open; routing
# away from uniform, experts wider.
STRESS = {
    ".mamba.dt_bias": lambda x: x + 4.0,
    ".mamba.d": lambda x: x * 0.1,
    ".mamba.w_B": lambda x: x * 10,
    ".mamba.w_C": lambda x: x * 10,
    ".rglru.wa": lambda x: x * 10,
    ".rglru.wx": lambda x: x * 10,
    ".rglru.w_gate": lambda x: x * 10,
    ".rglru.w_in": lambda x: x * 5,
    ".moe.router": lambda x: x * 10,
    ".moe.w_gate": lambda x: x * 5,
    ".moe.w_up": lambda x: x * 5,
}


def rewrite(source, target, change):
    """Copies the F32 safetensors file `source` to `target` with change(name, values) applied
    to every tensor (values rewritten in place, so the header stays)."""
    import json
    import struct

    import numpy as np

    with open(source, "rb") as f:
        blob = bytearray(f.read())
    (size,) = struct.unpack("<Q", blob[:8])
    for name, entry in json.loads(blob[8:8 + size]).items():
        if name == "__metadata__":
            continue
        begin, end = (8 + size + o for o in entry["data_offsets"])
        values = np.frombuffer(bytes(blob[begin:end]), dtype="<f4").astype(np.float64)
        blob[begin:end] = change(name, values).astype("<f4").tobytes()
    with open(target, "wb") as f:
        f.write(blob)


def stressed(name, values):
    for suffix, scale in STRESS.items():
        if name.endswith(suffix):
            return scale(values)
    return values


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the build's bin/ (shardline-compile, -run)")
    ap.add_argument("--examples", required=True, help="examples/ (nam56r-tiny.json)")
    ap.add_argument("--data", required=True, help="the byte dataset (build/data/gpl3.bin)")
    args = ap.parse_args()
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: the oracle needs torch and numpy ({e})")
        return 77

    models = [(name, os.path.join(HERE, "models", name + ".json"), [])
              for name in ("attention", "local_attention", "mamba", "moe", "recurrent", "mlp")]
    models.append(("nam56r-tiny", os.path.join(args.examples, "models", "nam56r-tiny.json"), []))
    models.append(("attention", os.path.join(HERE, "models", "attention.json"),
                   ["--data", args.data, "--steps", "3"]))
    oracle = [sys.executable, os.path.join(HERE, "oracle.py")]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, spec, flags) in enumerate(models):
            plan, weights, stress, bad = (os.path.join(tmp, f"{i}.{ext}") for ext in (
                "slp", "w.safetensors", "stressed.safetensors", "bad.safetensors"))
            run_cmd = [os.path.join(args.bin, "shardline-run"), plan, "--seed", str(3 + i)] + flags
            runs = [("", ["--save-weights", weights])]
            if not flags:
                runs.append((" stressed", ["--weights", stress]))
            code, out = run([os.path.join(args.bin, "shardline-compile"), spec, "--emit", "plan",
                             "-o", plan])
            if code != 0:
                failed += len(runs)
                print(f"FAIL {name}: shardline-compile exited {code}:\n{out}")
                continue
            for kind, extra in runs:
                label = name + kind + (" " + " ".join(flags) if flags else "")
                outputs = os.path.join(tmp, f"{i}{kind.strip()}.o.safetensors")
                used = stress if kind else weights
                if kind:
                    rewrite(weights, stress, stressed)
                why = None
                code, out = run(run_cmd + extra + ["--save-outputs", outputs])
                if code != 0:
                    why = f"shardline-run exited {code}:\n{out}"
                if why is None:
                    code, good = run(oracle + [spec, "--weights", used, "--outputs", outputs])
                    if code != 0 or "oracle: PASS" not in good:
                        why = f"the oracle disagrees (exit {code}):\n{good}"
                if why is None and kind:
                    target = PERTURB[name]
                    rewrite(stress, bad, lambda n, v: v * 1.01 + 1e-3 if n == target else v)
                    code, out = run(oracle + [spec, "--weights", bad, "--outputs", outputs])
                    if code != 1 or "MISMATCH" not in out or "oracle: FAIL" not in out:
                        why = f"the oracle accepts {target} changed by 1% (exit {code}):\n{out}"
                    else:
                        logits = [ln for ln in out.splitlines() if ln.startswith("logits")]
                        good += f"\n{target} changed by 1%: {logits[0]}" if logits else ""
                if why is None:
                    passed += 1
                    summary = [line for line in good.splitlines()
                               if line.startswith(("logits", "loss", "blocks"))]
                    print(f"PASS {label}: " + "; ".join(summary))
                else:
                    failed += 1
                    print(f"FAIL {label}: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
