#!/usr/bin/env python3
"""The equivalence matrix: every block family alone and the whole nam56r-tiny,
partitioned over thread ranks, against the single-device run of the same plan
and seed (shardline-run --verify).

An entry passes when the outputs (logits and loss) are within the relative
error --verify allows their type (1e-4 for f32) of the single-device run, and
the bytes each rank received and the arena's high-water mark, both measured by
the runtime, equal the report's.

Per family: tp in {1, 2, 4} with sp off and on; cp in {2, 4} x {zigzag,
contiguous} x {ring, allgather, a2a} (the attention communication only where
the family has attention; a2a only where the heads divide); ep folded onto
the ranks as in Megatron Core (an entry has dp*cp*tp ranks): over tp under
sp, over dp, over cp, and cutting tp 4 or cp 4 in two; and mixed 8-rank
meshes (tp2 sp cp2 dp2 with ep 2 over tp and ep 4 over cp and tp, tp2 sp cp4
ep4 over tp and half of cp, tp2 cp2 dp2; nam56r-tiny also ep 8 over all
three). nam56r-tiny in bf16 runs the 8-rank meshes only: its tensors in 16
bits, its arena peak the report's. The moe family also runs in capacity mode
(CAPACITY_MESHES x CAPACITY_MODES with 8 experts, and one entry under mpirun; and with
expert tensor parallelism, CAPACITY_ETP: etp 2 over tp, one entry under mpirun): the dropped
routed rows equal the single-device run's, and some are dropped at F 1.0.
Dropless MoE (the default; every moe entry runs it) also runs with 8 experts
on CAPACITY_MESHES, forward and training, one entry under mpirun, and with
etp 2 on DROPLESS_ETP (one entry under mpirun): its
exchanges send exactly the bytes their counts imply, the report states them at
balanced routing, and every other op's bytes equal the report's.
Prints one line per entry and "N passed, N failed".

With --train, the families that train (attention, mlp, the two together,
local attention, moe, mamba, recurrent) are compiled with --train and run for
TRAIN_STEPS AdamW steps (shardline-run --train --verify): every step's loss,
the last step's gradients and the final weights must equal the single-device
training run's (relative error 1e-4), each run routing on its own (but the
capacity entries by "probs", which replay the routing and the drops: a
near-tie of weights flips which choices are dropped), and the bytes and arena peak the
report's, with every cp_comm (ring attention's backward circulates K, V and
their gradients; the scans' state passing through the exchange's dual). A
family in TRAIN_WITHOUT_CP (one whose backward does not cover cp; none today)
trains without cp: its mixed entries are tp2 sp dp2 ep2 and tp2 sp dp4 ep4
instead. The whole nam56r-tiny trains for WHOLE_MODEL_STEPS step on 8 ranks
(tp2 sp cp2 dp2 ep2, ep folded onto tp; and tp2 sp dp4 ep4).
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SMALL = {"vocab": 64, "hidden": 32, "seq": 32, "batch": 4}
FAMILIES = {
    "attention": dict(SMALL, pattern="AA",
                      attention={"heads": 8, "kv_heads": 4, "head_dim": 4}),
    "mlp": dict(SMALL, pattern="FF", mlp={"ffn_hidden": 64}),
    "mamba": dict(SMALL, pattern="MM",
                  mamba={"heads": 8, "head_dim": 4, "state": 8, "groups": 4, "conv": 4}),
    "moe": dict(SMALL, pattern="EE", moe={"experts": 4, "top_k": 2, "ffn_hidden": 48}),
    "recurrent": dict(SMALL, pattern="RR", recurrent={"width": 32, "conv": 4}),
    # Window 6: the 5-token halo lies within the previous chunk at cp 2 (chunks
    # of 8 or 16 tokens) and reaches across more than one at cp 4 zigzag (4).
    "local_attention": dict(SMALL, pattern="LL", local_attention={
        "heads": 8, "kv_heads": 4, "head_dim": 4, "window": 6}),
}


TRAIN_STEPS = 20
TRAINABLE = {
    "attention": FAMILIES["attention"],
    "mlp": FAMILIES["mlp"],
    "moe": FAMILIES["moe"],
    "dense": dict(SMALL, pattern="AF", attention={"heads": 8, "kv_heads": 4, "head_dim": 4},
                  mlp={"ffn_hidden": 64}),
    "mamba": FAMILIES["mamba"],
    "recurrent": FAMILIES["recurrent"],
    # The halos' gradients go back through sl.halo_add.
    "local_attention": FAMILIES["local_attention"],
}
TRAIN_WITHOUT_CP = set()
# The whole nam56r-tiny trains too, on 8 ranks (tp2 sp cp2 dp2 ep2, the README's strategy, and
# tp2 sp dp4 ep4), for one step: its gradients agree to 3e-6. Over many steps its MoE routing turns
# rounding differences into other expert choices and the runs part (docs/training.md, "Long runs").
WHOLE_MODEL_STEPS = 1
WHOLE_MODEL_TRAINING = [["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "2"],
                        ["--tp", "2", "--sp", "--dp", "4", "--ep", "4"]]


# nam56r-tiny's 8 experts let ep take all 8 ranks, over dp, cp and tp: the
# tokens reach the experts by two all-to-alls, over dp (by batch) and over cp
# and tp (by sequence).
NAM56R_EP8 = {name: ["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "8"]
              for name in ("nam56r-tiny", "nam56r-bf16")}


# Capacity-mode MoE (--moe-expert-capacity-factor): the moe family with 8 experts (so that ep
# may take all 8 ranks) with ep folded over cp, over dp and cp, over cp and tp under sp, and
# cutting cp 4 in two, each at F 1.0 dropping by "probs" (the small spec drops choices there: the
# entry requires it) and at F 1.25 by "position"; the dropped counts must equal the single-device
# run's. One entry runs under mpirun.
CAPACITY_SPEC = dict(FAMILIES["moe"], moe=dict(FAMILIES["moe"]["moe"], experts=8))
CAPACITY_MESHES = [["--dp", "2", "--cp", "4", "--ep", "4"],
                   ["--dp", "2", "--cp", "4", "--ep", "8"],
                   ["--tp", "2", "--sp", "--cp", "4", "--ep", "8"],
                   ["--dp", "2", "--cp", "4", "--ep", "2"]]
CAPACITY_MODES = [["--moe-expert-capacity-factor", "1.0", "--moe-token-drop-policy", "probs"],
                  ["--moe-expert-capacity-factor", "1.25", "--moe-token-drop-policy", "position"]]
CAPACITY_MPI = CAPACITY_MESHES[2] + CAPACITY_MODES[0] + ["--mpi"]
# Expert tensor parallelism (etp 2): the expert weights split on ffn over tp, the experts over cp,
# the buffers gathered over tp after the all-to-all and reduce-scattered back; one entry on
# threads, one over dp too under mpirun, each at F 1.0 by "probs".
CAPACITY_ETP = [["--tp", "2", "--sp", "--cp", "4", "--ep", "4", "--etp", "2"] + CAPACITY_MODES[0],
                ["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "2", "--etp", "2"]
                + CAPACITY_MODES[0] + ["--mpi"]]
# Dropless MoE (the default) on the same meshes, forward and training: the routed rows travel by
# count, so the bytes of its exchanges are checked against the counts, and the rest against the
# report. One entry runs under mpirun.
DROPLESS_MPI = CAPACITY_MESHES[2] + ["--mpi"]
# And with expert tensor parallelism, the meshes of CAPACITY_ETP: the received rows gathered over
# etp (tp) and the partial outputs reduce-scattered back inside sl.moe_dropless.
DROPLESS_ETP = [["--tp", "2", "--sp", "--cp", "4", "--ep", "4", "--etp", "2"],
                ["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "2", "--etp", "2", "--mpi"]]


def capacity_entries():
    return ([mesh + mode for mesh in CAPACITY_MESHES for mode in CAPACITY_MODES] + [CAPACITY_MPI]
            + CAPACITY_ETP)


def dropless_entries():
    return CAPACITY_MESHES + [DROPLESS_MPI] + DROPLESS_ETP


def entries(has_attention, mixes_only=False, cp=True):
    """(flags, description) of the matrix for one family; without cp, no
    entry splits the sequence over cp."""
    out = [["--tp", "1", "--sp=false"]]
    for tp in ("2", "4"):
        out += [["--tp", tp, "--sp=false"], ["--tp", tp, "--sp"]]
    comms = ("ring", "allgather", "a2a") if has_attention else ("ring",)
    for size in ("2", "4") if cp else ():
        for order in ("zigzag", "contiguous"):
            for comm in comms:
                out.append(["--cp", size, "--cp-order", order, "--cp-comm", comm])
    # ep folds onto the ranks that hold different tokens (tp under sp, then
    # cp, then dp): over each alone, and cutting an axis it covers in part.
    out += [["--tp", "2", "--sp", "--ep", "2"], ["--dp", "2", "--ep", "2"],
            ["--dp", "4", "--ep", "4"], ["--tp", "4", "--sp", "--ep", "2"]]
    if cp:
        out += [["--cp", "2", "--ep", "2"], ["--cp", "4", "--ep", "2"]]
    if not cp:
        mixes = [["--tp", "2", "--sp", "--dp", "2", "--ep", "2"],
                 ["--tp", "2", "--sp", "--dp", "4", "--ep", "4"]]
        return mixes if mixes_only else out + mixes
    # 8 ranks: ep over tp, over cp and tp, and over tp and half of cp.
    mixes = [["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "2", "--cp-comm", comm]
             for comm in comms]
    mixes.append(["--tp", "2", "--sp", "--cp", "2", "--dp", "2", "--ep", "4"])
    mixes.append(["--tp", "2", "--sp", "--cp", "4", "--ep", "4"])
    mixes.append(["--tp", "2", "--sp=false", "--cp", "2", "--cp-order", "contiguous", "--dp", "2"])
    return mixes if mixes_only else out + mixes


def full_flags(flags):
    """Every axis the entry does not name is 1 (the example spec sets its own)."""
    base = {"--tp": "1", "--cp": "1", "--ep": "1", "--etp": "1", "--dp": "1"}
    named = set(f for f in flags if f.startswith("--"))
    extra = []
    for k, v in base.items():
        if k not in named:
            extra += [k, v]
    if "--sp" not in named and "--sp=false" not in named:
        extra.append("--sp=false")
    return flags + extra


def run_entry(bin_dir, family, spec_path, flags, workdir, index, train=False):
    plan = os.path.join(workdir, f"{family}-{index}.slp")
    mpi = "--mpi" in flags
    compile_flags = [f for f in flags if f != "--mpi"]
    compile_cmd = [os.path.join(bin_dir, "shardline-compile"), spec_path,
                   *full_flags(compile_flags), "--emit", "plan", "-o", plan] + (
                       ["--train"] if train else [])
    c = subprocess.run(compile_cmd, capture_output=True, text=True)
    if c.returncode != 0:
        # a2a needs the heads to divide over the group; that is the only
        # combination the matrix may find not to apply.
        if "a2a" in flags and "heads" in c.stderr:
            return ("n/a", c.stderr.strip().splitlines()[0])
        return ("FAIL", "compile: " + c.stderr.strip())
    run_cmd = [os.path.join(bin_dir, "shardline-run"), plan, "--verify"]
    if mpi:
        # One process per rank: the plan's mesh size, which the report names.
        if not shutil.which("mpirun"):
            return ("n/a", "mpirun is not installed")
        ranks = 1
        for axis in ("--tp", "--cp", "--dp"):
            if axis in compile_flags:
                ranks *= int(compile_flags[compile_flags.index(axis) + 1])
        run_cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks),
                   *run_cmd, "--comm", "mpi"]
    if train:
        steps = WHOLE_MODEL_STEPS if family == "nam56r-tiny" else TRAIN_STEPS
        # Every router chooses for itself: over the matrix's 20 steps no near-tie may flip,
        # the stricter check (--verify replays the expert choices by default). But for the
        # "probs" drop policy: it ranks each expert's choices by weight, and a near-tie there
        # flips which are dropped on one machine's rounding and not another's (measured: 2 of
        # 5120 choices within 10 steps); those entries replay the routing and the drops, and
        # print how many choices would have been kept or dropped otherwise.
        probs = "--moe-token-drop-policy" in flags and \
            flags[flags.index("--moe-token-drop-policy") + 1] == "probs"
        run_cmd += ["--train", "--steps", str(steps), "--verify-routing",
                    "replay" if probs else "own"]
    r = subprocess.run(run_cmd, capture_output=True, text=True, timeout=600)
    out = r.stdout
    ranks = re.search(r"on (\d+) ranks", out)
    err = re.search(r"single-device run: max abs error \S+, max rel error ([^;]+);", out)
    bytes_ = re.search(r"bytes sent per rank: (\d+) measured, (\d+) in the report", out)
    peak = re.search(r"arena peak per rank: (\d+) measured, (\d+) in the report", out)
    # Dropless MoE's exchanges send what the routing sends: the report states them at balanced
    # routing, and --verify checks them against their counts.
    moe = re.search(r"MoE rows: (\d+) bytes per rank measured, (\d+) at balanced routing; every "
                    r"rank sent exactly what its counts imply", out)
    moe_measured, moe_balanced = (int(moe.group(1)), int(moe.group(2))) if moe else (0, 0)
    ok = (r.returncode == 0 and out.rstrip().endswith("PASS") and bytes_ and peak
          and int(bytes_.group(1)) - moe_measured == int(bytes_.group(2)) - moe_balanced
          and peak.group(1) == peak.group(2))
    trained = re.search(r"loss max rel error (\S+), weights max rel error (\S+) \(\S+; "
                        r"elementwise (\S+),", out)
    if not (ranks and err and bytes_ and peak and (trained or not train)):
        return ("FAIL", "run: " + (r.stderr.strip() or out.strip()))
    detail = (f"{ranks.group(1)} ranks, rel err {err.group(1)}, bytes {bytes_.group(1)}/"
              f"{bytes_.group(2)}, arena {peak.group(1)}/{peak.group(2)}")
    if train:
        detail += (f", loss {trained.group(1)}, weights {trained.group(2)} "
                   f"(elementwise {trained.group(3)})")
    if moe:
        detail += f", MoE rows {moe_measured} (balanced {moe_balanced})"
    elif family.startswith("moe-dropless"):
        return ("FAIL", "run: no MoE rows line: " + out.strip())
    if "--moe-expert-capacity-factor" in flags:
        # Both runs drop as many choices (--verify's PASS needs it where it
        # replays the routing; a training entry by "position" routes on its
        # own, and in f32 the matrix holds it to the same); at F 1.0 the entry
        # must drop some, or it would not test the drops.
        drops = re.search(r"dropped routed rows: (\d+) partitioned, (\d+) single-device", out)
        if not drops:
            return ("FAIL", "run: no dropped-rows line: " + out.strip())
        detail += f", dropped {drops.group(1)}/{drops.group(2)}"
        flips = re.search(r"kept or dropped otherwise (\d+) of (\d+) routed choices", out)
        if flips:
            detail += f" (replayed; {flips.group(1)} of {flips.group(2)} would differ)"
        if drops.group(1) != drops.group(2):
            ok, detail = False, detail + " (the drops differ)"
        factor = flags[flags.index("--moe-expert-capacity-factor") + 1]
        if factor == "1.0" and drops.group(1) == "0":
            ok, detail = False, detail + " (F 1.0 must drop)"
    return ("PASS" if ok else "FAIL", detail)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory with shardline-compile and -run")
    ap.add_argument("--examples", required=True, help="the examples/ directory")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", help="run only families whose name contains this")
    ap.add_argument("--train", action="store_true",
                    help=f"train the families that train for {TRAIN_STEPS} steps instead")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory() as workdir:
        specs = {}
        for name, spec in (TRAINABLE if args.train else FAMILIES).items():
            path = os.path.join(workdir, name + ".json")
            with open(path, "w") as f:
                json.dump(dict(spec, name=name), f)
            specs[name] = (path, "attention" in spec)
        if not args.train:
            specs["nam56r-tiny"] = (os.path.join(args.examples, "models", "nam56r-tiny.json"),
                                    True)
            with open(specs["nam56r-tiny"][0]) as f:
                bf16 = dict(json.load(f), name="nam56r-tiny-bf16", dtype="bf16")
            specs["nam56r-bf16"] = (os.path.join(workdir, "bf16.json"), True)
            with open(specs["nam56r-bf16"][0], "w") as f:
                json.dump(bf16, f)
        jobs = []
        if args.train and not (args.only and args.only not in "nam56r-tiny"):
            whole = os.path.join(args.examples, "models", "nam56r-tiny.json")
            jobs += [("nam56r-tiny", whole, f, i) for i, f in enumerate(WHOLE_MODEL_TRAINING)]
        for name, (path, has_attention) in specs.items():
            if args.only and args.only not in name:
                continue
            flags_list = entries(has_attention, mixes_only=name == "nam56r-bf16",
                                 cp=not (args.train and name in TRAIN_WITHOUT_CP))
            if name in NAM56R_EP8:
                flags_list.append(NAM56R_EP8[name])
            for i, flags in enumerate(flags_list):
                jobs.append((name, path, flags, i))
        if not (args.only and args.only not in "moe-dropless"):
            path = os.path.join(workdir, "moe-dropless.json")
            with open(path, "w") as f:
                json.dump(dict(CAPACITY_SPEC, name="moe-dropless"), f)
            jobs += [("moe-dropless", path, f, i) for i, f in enumerate(dropless_entries())]
        if not (args.only and args.only not in "moe-capacity"):
            path = os.path.join(workdir, "moe-capacity.json")
            with open(path, "w") as f:
                json.dump(dict(CAPACITY_SPEC, name="moe-capacity"), f)
            jobs += [("moe-capacity", path, f, i) for i, f in enumerate(capacity_entries())]
        counts = {"PASS": 0, "FAIL": 0, "n/a": 0}
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_entry, args.bin, n, p, f, workdir, i, args.train)
                       for n, p, f, i in jobs]
            for (name, _, flags, _), fut in zip(jobs, futures):
                status, detail = fut.result()
                counts[status] += 1
                print(f"{status:4}  {name:12} {' '.join(flags):58} {detail}", flush=True)
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed"
          + (f" ({counts['n/a']} not applicable)" if counts["n/a"] else ""))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
