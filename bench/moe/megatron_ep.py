#!/usr/bin/env python3
"""A hybrid MoE model's forward bytes per rank: Shardline's plan against Megatron's placement.

Writes the 48-block AEMEAEMEAEMR model of issue 9 (hidden 4096, seq 131072, batch 1,
64 experts, top-2, bf16), compiles it with Megatron's flags (default
`--tp 2 --sp --cp 4 --cp-comm ring --ep 4`: 8 ranks, ep folded onto tp and half of cp)
once per MoE dispatch mode (dropless: the routed rows by count, whose report entries are
at balanced routing as Megatron's figure is; and capacity mode at each --capacity-factors
value), and prints per block family the forward bytes one rank sends, read from the report,
beside Megatron Core's hand placement computed from its documented algorithms (bytes by
docs/report.md's conventions; e = bytes per element):

  A, M, R, F blocks   TP+SP: all-gather and reduce-scatter of the [s/cp, b, h] input/output,
                      each (tp-1)/tp of it
  A                   ring attention: (cp-1) steps of the local K and V,
                      [s/cp, b, kv_heads/tp * head_dim] each
  M                   Mamba under CP (megatron/core/ssm/mamba_context_parallel.py): five
                      all-to-alls in (z, x: d_inner/tp; B, C: groups/tp*state, repeated when
                      groups/tp < cp; dt: heads/tp) and one out (y: d_inner/tp), each
                      (cp-1)/cp of [s/cp, b, width]
  R                   RG-LRU charged like Mamba's in/out: one all-to-all in and one out of
                      [s/cp, b, width/tp]
  E                   the alltoall token dispatcher (etp 1, under SP the tokens stay local):
                      dispatch and return of top_k copies of the local tokens,
                      2 (ep-1)/ep * top_k * (s b / (cp tp)) * h * e
  embedding, lm_head  the embedding's reduce-scatter, the LM head's all-gather, and the
                      vocab-parallel loss's three per-token f32 all-reduces over tp

The target of issue 9: the whole model at most 0.70x Megatron's forward bytes per rank.
Peak activations per rank (the report's arena peak) are printed beside each plan.

  bench/moe/megatron_ep.py --bin build/bin [--capacity-factors 1.0,1.25]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

SPEC = {
    "name": "hybrid-48l-moe", "pattern": "AEMEAEMEAEMR" * 4,
    "vocab": 131072, "hidden": 4096, "seq": 131072, "batch": 1, "dtype": "bf16",
    "attention": {"heads": 32, "kv_heads": 8, "head_dim": 128, "rope_theta": 500000.0},
    "mamba": {"heads": 128, "head_dim": 64, "state": 128, "groups": 8, "conv": 4},
    "moe": {"experts": 64, "top_k": 2, "ffn_hidden": 2048},
    "mlp": {"ffn_hidden": 16384},
    "recurrent": {"width": 4096, "conv": 4},
    "parallel": {"dp": 1, "tp": 1, "sp": False, "cp": 1, "ep": 1},
}
FAMILIES = ["embedding", "A", "M", "E", "R", "F", "lm_head"]


def megatron(spec, tp, cp, ep):
    """Forward bytes per rank per family of Megatron Core's placement."""
    s, b, h = spec["seq"], spec["batch"], spec["hidden"]
    e = {"f32": 4, "bf16": 2, "f16": 2}[spec["dtype"]]
    local = s // cp * b  # tokens of one cp rank, before SP splits them over tp
    tpsp = 2 * (tp - 1) * local * h * e // tp  # all-gather + reduce-scatter
    a2a = lambda width: (cp - 1) * local * width * e // cp  # noqa: E731
    att, mam, moe = spec["attention"], spec["mamba"], spec["moe"]
    d_inner = mam["heads"] * mam["head_dim"] // tp
    groups = mam["groups"] // tp
    repeat = cp // groups if groups < cp else 1
    bc = groups * repeat * mam["state"]
    per_block = {
        "A": tpsp + (cp - 1) * 2 * local * (att["kv_heads"] // tp) * att["head_dim"] * e,
        "M": tpsp + a2a(d_inner) * 3 + a2a(bc) * 2 + a2a(mam["heads"] // tp),
        "R": tpsp + 2 * a2a(spec["recurrent"]["width"] // tp),
        "F": tpsp,
        "E": 2 * (ep - 1) * moe["top_k"] * (local // tp) * h * e // ep,
    }
    out = {f: 0 for f in FAMILIES}
    for letter in spec["pattern"]:
        out[letter] += per_block[letter]
    out["embedding"] = (tp - 1) * local * h * e // tp
    out["lm_head"] = (tp - 1) * local * h * e // tp + 3 * 2 * (tp - 1) * local * 4 // tp
    return out


def shardline(binary, spec_path, flags):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [os.path.join(binary, "shardline-compile"), spec_path, "--emit", "report",
               "--report", out] + flags
        run = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            return None, run.stderr.strip().splitlines()[-1] if run.stderr else "failed"
        with open(out) as f:
            report = json.load(f)
    fams = {f: 0 for f in FAMILIES}
    for c in report["collectives"]:
        if not c["backward"]:
            fams[c["family"]] = fams.get(c["family"], 0) + c["bytes_per_rank"]
    return (fams, report["totals"]), None


def gb(x):
    return "%.3f" % (x / 1e9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory of shardline-compile")
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--cp", type=int, default=4)
    ap.add_argument("--ep", type=int, default=4)
    ap.add_argument("--cp-comm", default="ring")
    ap.add_argument("--capacity-factors", default="1.0",
                    help="capacity factors to compile beside the dropless plan (comma list)")
    args = ap.parse_args()
    tp, cp, ep = args.tp, args.cp, args.ep
    base = ["--tp", str(tp), "--sp", "--cp", str(cp), "--cp-comm", args.cp_comm, "--dp", "1",
            "--ep", str(ep)]
    modes = [("dropless", [])]
    for f in filter(None, args.capacity_factors.split(",")):
        modes.append(("capacity %s" % f, ["--moe-expert-capacity-factor", f]))
    mega = megatron(SPEC, tp, cp, ep)
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = os.path.join(tmp, "hybrid-48l-moe.json")
        with open(spec_path, "w") as f:
            json.dump(SPEC, f)
        plans = []
        for name, flags in modes:
            got, err = shardline(args.bin, spec_path, base + flags)
            if got is None:
                print("%s: not compiled: %s" % (name, err))
                continue
            plans.append((name, got))
    print("hybrid-48l-moe (%s), %s: forward GB sent per rank" %
          (SPEC["pattern"][:12] + " x4", " ".join(base)))
    head = "%-10s %12s" % ("family", "Megatron")
    for name, _ in plans:
        head += " %14s %6s" % (name, "x")
    print(head)
    for fam in FAMILIES:
        if not mega[fam] and not any(p[0][fam] for _, p in plans):
            continue
        row = "%-10s %12s" % (fam, gb(mega[fam]))
        for _, (fams, _) in plans:
            ratio = fams[fam] / mega[fam] if mega[fam] else float("nan")
            row += " %14s %6.2f" % (gb(fams[fam]), ratio)
        print(row)
    total = sum(mega.values())
    row = "%-10s %12s" % ("total", gb(total))
    for _, (fams, _) in plans:
        row += " %14s %6.2f" % (gb(sum(fams.values())), sum(fams.values()) / total)
    print(row)
    for name, (_, totals) in plans:
        print("%s: peak activations %s GB per rank (arena), %d collectives" %
              (name, gb(totals["peak_activation_bytes_per_rank"]),
               sum(totals["collective_counts"].values())))
    best = min((sum(f.values()) for _, (f, _) in plans), default=None)
    if best is None:
        return 1
    print("target: whole model <= 0.70x Megatron; best plan %.2fx: %s" %
          (best / total, "met" if best <= 0.70 * total else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
