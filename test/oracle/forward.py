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

Runs do not write gradients yet (training is being built), so the gradient
path is checked on the oracle's own: autograd against a central difference of
the loss, and files of those gradients (f32) that pass, or fail with one
gradient off by 1% or missing.

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


def write_safetensors(path, tensors):
    """Writes numpy arrays (int32 as I32, everything else as F32) by name."""
    import json
    import struct

    import numpy as np

    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        integer = value.dtype == np.int32
        blob = value.astype("<i4" if integer else "<f4").tobytes()
        header[name] = {"dtype": "I32" if integer else "F32", "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def check_gradients(oracle_cmd, spec, weights, outputs, tmp, target):
    """The oracle's gradient path, until training runs write gradients: autograd's gradients of
    the loss agree with a central difference of the loss along a random direction of every
    weight at once; a file holding them (f32) passes; one with `target`'s gradient off by 1%,
    or without it, fails naming it. Returns why it failed (None when it did not) and what it
    measured."""
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    import oracle

    model = oracle.read_spec(spec)
    stored = oracle.read_safetensors(weights)
    saved = oracle.read_safetensors(outputs)
    tokens = torch.tensor(saved["tokens"].astype(np.int64))
    labels = torch.tensor(saved["labels"].astype(np.int64))
    params = {k: torch.tensor(v, dtype=oracle.F, requires_grad=True) for k, v in stored.items()}
    _, loss = oracle.forward(model, params, tokens, labels)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in params.items()}
    rng = np.random.default_rng(0)
    direction = {k: rng.standard_normal(v.shape) for k, v in stored.items()}
    # Small enough that no top-k choice flips between the two points (a flip is a jump in the
    # loss: at 1e-6, 7 of stressed nam56r's 4096 routings do), large enough that float64
    # differences keep 7 digits.
    eps = 1e-8

    def loss_at(sign):
        moved = {k: torch.tensor(stored[k] + sign * eps * direction[k], dtype=oracle.F)
                 for k in stored}
        return float(oracle.forward(model, moved, tokens, labels)[1])

    numeric = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = sum(float((grads[k] * direction[k]).sum()) for k in stored)
    gap = abs(numeric - analytic) / max(1.0, abs(analytic))
    measured = f"gradients: autograd against the difference quotient {gap:.2g}"
    if gap > 1e-5:
        return (f"autograd's directional derivative {analytic:.9g}, the loss's {numeric:.9g}",
                measured)
    files = {
        "exact": ({f"grad.{k}": v for k, v in grads.items()}, 0, None),
        "off": ({f"grad.{k}": v * (1.01 if k == target else 1) for k, v in grads.items()}, 1,
                f"grad.{target}: relative error"),
        "missing": ({f"grad.{k}": v for k, v in grads.items() if k != target}, 1,
                    "1 weights have no gradient"),
    }
    for kind, (extra, status, expect) in files.items():
        path = os.path.join(tmp, f"grads-{kind}.safetensors")
        write_safetensors(path, dict(saved, **extra))
        code, out = run(oracle_cmd + [spec, "--weights", weights, "--outputs", path])
        if code != status or (expect and expect not in out) or "no gradients" in out:
            return f"the oracle on {kind} gradients exited {code}:\n{out}", measured
    return None, measured


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def torch_missing():
    """Why the oracle cannot run here (printed with ctest's skip status), or None."""
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return f"skipped: the oracle needs torch and numpy ({e})"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the build's bin/ (shardline-compile, -run)")
    ap.add_argument("--examples", required=True, help="examples/ (nam56r-tiny.json)")
    ap.add_argument("--data", required=True, help="the byte dataset (build/data/gpl3.bin)")
    args = ap.parse_args()
    if (why := torch_missing()):
        print(why)
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
                    why, measured = check_gradients(oracle, spec, stress, outputs, tmp,
                                                    PERTURB[name])
                    good += "\n" + measured
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
                               if line.startswith(("logits", "loss", "blocks", "gradients"))]
                    print(f"PASS {label}: " + "; ".join(summary))
                else:
                    failed += 1
                    print(f"FAIL {label}: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
