#!/usr/bin/env python3
"""One hybrid layer's forward on a GPU: PyTorch eager against shardline-run.

The model of bench/gpu/block.json (a Mamba-2 block, an attention block and a
SwiGLU MLP block between the embedding and the LM head, with the loss; bf16
weights and activations) runs twice on the same GPU:

- in eager PyTorch, the ops of docs/model-spec.md ("Numerical conventions")
  written as a PyTorch user writes them: torch.matmul for every projection,
  F.rms_norm, F.scaled_dot_product_attention (causal, grouped-query), the
  depthwise causal conv as F.conv1d, the Mamba-2 scan chunked (SSD, chunks of
  256, in f32), F.cross_entropy; timed between CUDA events, the median of
  --steps forwards after two warm-up ones;
- through the project: `shardline-run PLAN --device cuda --steps N --report
  R.json` on the same spec compiled beforehand (`shardline-compile
  bench/gpu/block.json --emit plan -o PLAN`), the median of the report's step
  times (while it times a run, shardline-run waits for the stream after each
  op to time the op, so a step's time holds one host wait per op).

It prints both times and the ratio PyTorch / shardline (the target is 1.0 or
more: the project at least as fast), and with --json writes them. Without
PyTorch, or where torch.cuda is unavailable, it prints why and exits 77.

--check runs the eager model in float64 on the CPU at a small size against
the project's PyTorch oracle (test/oracle/oracle.py), so the block timed is
the block the project computes.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# Whether F.scaled_dot_product_attention takes enable_gqa (PyTorch 2.5 and
# later); set in main. Older versions repeat k and v per query head first.
SDPA_GQA = False


def weight_shapes(spec):
    """Every weight of the spec by its plan name, with its shape
    (docs/model-spec.md, "What the import produces")."""
    h, v = spec["hidden"], spec["vocab"]
    shapes = {"embedding.table": [v, h], "final_norm": [h], "lm_head": [h, v]}
    for i, letter in enumerate(spec["pattern"]):
        p = f"blocks.{i}."
        shapes[p + "norm"] = [h]
        if letter == "A":
            a = spec["attention"]
            q, kv = a["heads"] * a["head_dim"], a.get("kv_heads", a["heads"]) * a["head_dim"]
            shapes.update({p + "attn.wq": [h, q], p + "attn.wk": [h, kv],
                           p + "attn.wv": [h, kv], p + "attn.wo": [q, h]})
        elif letter == "F":
            f = spec["mlp"]["ffn_hidden"]
            shapes.update({p + "mlp.w_gate": [h, f], p + "mlp.w_up": [h, f],
                           p + "mlp.w_down": [f, h]})
        elif letter == "M":
            m = spec["mamba"]
            inner, bc, nh, w = m["heads"] * m["head_dim"], m.get("groups", 1) * m["state"], \
                m["heads"], m.get("conv", 4)
            q = p + "mamba."
            shapes.update({q + "w_z": [h, inner], q + "w_x": [h, inner], q + "w_B": [h, bc],
                           q + "w_C": [h, bc], q + "w_dt": [h, nh],
                           q + "conv_x.weight": [inner, w], q + "conv_x.bias": [inner],
                           q + "conv_B.weight": [bc, w], q + "conv_B.bias": [bc],
                           q + "conv_C.weight": [bc, w], q + "conv_C.bias": [bc],
                           q + "a_log": [nh], q + "d": [nh], q + "dt_bias": [nh],
                           q + "norm": [inner], q + "w_out": [inner, h]})
        else:
            raise SystemExit(f"block_torch.py: pattern letter '{letter}' is not one it builds "
                             "(A, F, M)")
    return shapes


def make_weights(torch, spec, dtype, device, seed):
    """Random weights of the spec's shapes: projections scaled by
    1/sqrt(fan-in), norms 1, a_log and dt_bias small."""
    g = torch.Generator(device=device).manual_seed(seed)
    # Drawn where they are used, in float64 for a float64 model, else f32.
    drawn = torch.float64 if dtype == torch.float64 else torch.float32
    w = {}
    for name, shape in weight_shapes(spec).items():
        if name.endswith("norm"):
            t = torch.ones(shape, dtype=drawn, device=device)
        elif name.endswith(("a_log", "dt_bias", ".bias", ".d")):
            t = 0.5 * torch.rand(shape, generator=g, dtype=drawn, device=device)
        else:
            t = torch.randn(shape, generator=g, dtype=drawn, device=device) / math.sqrt(shape[0])
            if name.endswith(("conv_x.weight", "conv_B.weight", "conv_C.weight")):
                t = t / math.sqrt(shape[1])
        w[name] = t.to(dtype)
    return w


def segsum(torch, a):
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above."""
    n = a.shape[-1]
    c = torch.cumsum(a, -1)
    out = c[..., :, None] - c[..., None, :]
    keep = torch.tril(torch.ones(n, n, dtype=torch.bool, device=a.device))
    return out.masked_fill(~keep, -math.inf)


def ssd(torch, x, dt, a, bm, cm, chunk):
    """The Mamba-2 recurrence s <- exp(dt A) s + dt x B^T, y = C s, from a zero
    state, computed by chunks (the SSD form): x [b, s, h, p], dt [b, s, h],
    a [h], bm and cm [b, s, h, n]; the sequence a multiple of `chunk`."""
    b, s, h, p = x.shape
    c = s // chunk
    xs = (x * dt[..., None]).reshape(b, c, chunk, h, p)
    ad = (dt * a).reshape(b, c, chunk, h).permute(0, 3, 1, 2)  # b h c l
    bm = bm.reshape(b, c, chunk, h, -1)
    cm = cm.reshape(b, c, chunk, h, -1)
    cum = torch.cumsum(ad, -1)
    within = torch.exp(segsum(torch, ad))  # b h c l l
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", cm, bm, within, xs)
    to_end = torch.exp(cum[..., -1:] - cum)  # b h c l
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", bm, to_end, xs)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], 1)
    across = torch.exp(segsum(torch, torch.nn.functional.pad(cum[..., -1], (1, 0))))
    states = torch.einsum("bhzc,bchpn->bzhpn", across, states)[:, :-1]
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", cm, states, torch.exp(cum))
    return y.reshape(b, s, h, p)


def rope_tables(torch, spec, device):
    a = spec["attention"]
    d, s = a["head_dim"], spec["seq"]
    half = d // 2
    freq = a.get("rope_theta", 10000.0) ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    angle = torch.arange(s, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cos(angle).to(device), torch.sin(angle).to(device)


def forward(torch, spec, w, tokens, labels, rope, compute, chunk=256):
    """Logits and loss, eager; the scan in `compute`, by chunks of `chunk`."""
    F = torch.nn.functional
    eps = spec.get("norm_eps", 1e-5)
    dtype = w["lm_head"].dtype

    def norm(x, weight):
        if hasattr(F, "rms_norm"):  # PyTorch 2.4 and later
            return F.rms_norm(x, (x.shape[-1],), weight, eps)
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight

    def attend(q, k, v):
        """Causal attention of q [b, hq, s, d] over k, v [b, hkv, s, d], query
        head h reading kv head h // (hq / hkv)."""
        if q.shape[1] != k.shape[1] and not SDPA_GQA:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
        if SDPA_GQA:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  enable_gqa=q.shape[1] != k.shape[1])
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        s = q.shape[2]
        visible = torch.tril(torch.ones(s, s, dtype=torch.bool, device=q.device))
        return torch.softmax(scores.masked_fill(~visible, -math.inf), -1) @ v

    def conv(x, weight, bias):
        width = weight.shape[1]
        y = F.conv1d(F.pad(x.transpose(1, 2), (width - 1, 0)), weight[:, None, :], bias,
                     groups=x.shape[2])
        return y.transpose(1, 2)

    def rotate(x, heads, d):
        b, s, _ = x.shape
        cos, sin = rope
        t = x.reshape(b, s, heads, d)
        x1, x2 = t[..., : d // 2], t[..., d // 2:]
        c, sn = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
        return torch.cat([x1 * c - x2 * sn, x2 * c + x1 * sn], -1)

    x = w["embedding.table"][tokens]
    b, s = tokens.shape
    for i, letter in enumerate(spec["pattern"]):
        p = f"blocks.{i}."
        n = norm(x, w[p + "norm"])
        if letter == "A":
            a = spec["attention"]
            hq, hkv, d = a["heads"], a.get("kv_heads", a["heads"]), a["head_dim"]
            q = rotate(n @ w[p + "attn.wq"], hq, d).transpose(1, 2)
            k = rotate(n @ w[p + "attn.wk"], hkv, d).transpose(1, 2)
            v = (n @ w[p + "attn.wv"]).reshape(b, s, hkv, d).transpose(1, 2)
            o = attend(q, k, v)
            y = o.transpose(1, 2).reshape(b, s, hq * d) @ w[p + "attn.wo"]
        elif letter == "F":
            q = p + "mlp."
            y = (F.silu(n @ w[q + "w_gate"]) * (n @ w[q + "w_up"])) @ w[q + "w_down"]
        else:
            m, q = spec["mamba"], p + "mamba."
            nh, hp, ns, g = m["heads"], m["head_dim"], m["state"], m.get("groups", 1)
            z = n @ w[q + "w_z"]
            xs = F.silu(conv(n @ w[q + "w_x"], w[q + "conv_x.weight"], w[q + "conv_x.bias"]))
            bm = F.silu(conv(n @ w[q + "w_B"], w[q + "conv_B.weight"], w[q + "conv_B.bias"]))
            cm = F.silu(conv(n @ w[q + "w_C"], w[q + "conv_C.weight"], w[q + "conv_C.bias"]))
            dt = F.softplus((n @ w[q + "w_dt"] + w[q + "dt_bias"]).to(compute))
            a = -torch.exp(w[q + "a_log"].to(compute))
            per = nh // g
            xh = xs.reshape(b, s, nh, hp).to(compute)
            bh = bm.reshape(b, s, g, ns).repeat_interleave(per, 2).to(compute)
            ch = cm.reshape(b, s, g, ns).repeat_interleave(per, 2).to(compute)
            yh = ssd(torch, xh, dt, a, bh, ch, min(chunk, s)) + w[q + "d"].to(compute)[:, None] * xh
            yg = yh.reshape(b, s, g, -1)
            yg = yg * torch.rsqrt((yg * yg).mean(-1, keepdim=True) + eps)
            y = (yg.reshape(b, s, nh * hp).to(dtype) * w[q + "norm"] * F.silu(z)) @ w[q + "w_out"]
        x = x + y
    logits = norm(x, w["final_norm"]) @ w["lm_head"]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).to(compute), labels.reshape(-1))
    return logits, loss


def check(torch):
    """The eager model against the oracle, float64 on the CPU, at a small size."""
    sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "oracle"))
    import oracle

    spec = {"name": "check", "pattern": "MAF", "vocab": 97, "hidden": 64, "seq": 64, "batch": 2,
            "dtype": "f32", "norm_eps": 1e-5,
            "attention": {"heads": 4, "kv_heads": 2, "head_dim": 16, "rope_theta": 10000.0},
            "mamba": {"heads": 8, "head_dim": 8, "state": 16, "groups": 2, "conv": 4},
            "mlp": {"ffn_hidden": 96}}
    w = make_weights(torch, spec, torch.float64, "cpu", 3)
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, spec["vocab"], (2, 64), generator=g)
    labels = torch.randint(0, spec["vocab"], (2, 64), generator=g)
    # Chunks of 16: the chunked form is checked across chunk boundaries.
    logits, loss = forward(torch, spec, w, tokens, labels, rope_tables(torch, spec, "cpu"),
                           torch.float64, chunk=16)
    want_logits, want_loss = oracle.forward(spec, w, tokens, labels)
    err = ((logits - want_logits).abs().max() / want_logits.abs().max()).item()
    loss_err = abs(loss.item() - want_loss.item()) / abs(want_loss.item())
    F = torch.nn.functional
    paths = ("F.rms_norm" if hasattr(F, "rms_norm") else "rms_norm by hand") + ", " + (
        "SDPA with enable_gqa" if SDPA_GQA else "SDPA" if hasattr(
            F, "scaled_dot_product_attention") else "attention by hand")
    print(f"eager block against the oracle (float64, CPU, PyTorch {torch.__version__}: {paths}): "
          f"logits max rel error {err:.2e}, loss rel error {loss_err:.2e}")
    return 0 if err < 1e-10 and loss_err < 1e-10 else 1


def median_ms(times):
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=os.path.join(HERE, "block.json"))
    ap.add_argument("--plan", help="the spec compiled with shardline-compile --emit plan")
    ap.add_argument("--run", help="shardline-run (default: beside --plan's bin, or on PATH)",
                    default="shardline-run")
    ap.add_argument("--library-path", help="LD_LIBRARY_PATH for shardline-run alone")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--check", action="store_true",
                    help="check the eager model against test/oracle/oracle.py on the CPU")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps takes a count of 1 or more")
    try:
        import torch
    except ImportError as e:
        print(f"skipped: no PyTorch ({e})")
        return 77
    global SDPA_GQA
    SDPA_GQA = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)
    if args.check:
        return check(torch)
    if not torch.cuda.is_available():
        print(f"skipped: torch.cuda is not available (PyTorch {torch.__version__}, "
              f"CUDA {torch.version.cuda})")
        return 77
    with open(args.spec) as f:
        spec = json.load(f)
    if spec.get("dtype") != "bf16":
        raise SystemExit(f"block_torch.py: {args.spec} is {spec.get('dtype')}, not bf16")
    dev = "cuda"
    w = make_weights(torch, spec, torch.bfloat16, dev, 1)
    g = torch.Generator().manual_seed(2)
    shape = (spec["batch"], spec["seq"])
    tokens = torch.randint(0, spec["vocab"], shape, generator=g).to(dev)
    labels = torch.randint(0, spec["vocab"], shape, generator=g).to(dev)
    rope = rope_tables(torch, spec, dev)
    name = torch.cuda.get_device_name(0)
    times = []
    with torch.no_grad():
        for i in range(args.steps + 2):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            _, loss = forward(torch, spec, w, tokens, labels, rope, torch.float32)
            stop.record()
            stop.synchronize()
            if i >= 2:
                times.append(start.elapsed_time(stop) / 1e3)
    torch_ms = median_ms(times)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del w
    torch.cuda.empty_cache()
    describe = (f"{spec['pattern']}: hidden {spec['hidden']}, seq {spec['seq']}, batch "
                f"{spec['batch']}, vocab {spec['vocab']}, bf16")
    print(f"block {describe} on {name}")
    print(f"PyTorch {torch.__version__} eager: {torch_ms:.2f} ms (median of {args.steps} "
          f"forwards after 2 warm-up; loss {loss.item():.4f}; peak memory {peak:.1f} GiB)")
    result = {"device": name, "spec": spec, "torch": torch.__version__, "torch_ms": torch_ms,
              "steps": args.steps}
    if not args.plan:
        print("shardline: no --plan given, not run")
        code = 0
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "report.json")
            cmd = [args.run, args.plan, "--device", "cuda", "--steps", str(args.steps),
                   "--report", report]
            env = dict(os.environ)
            if args.library_path:
                env["LD_LIBRARY_PATH"] = args.library_path
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"shardline-run failed (exit {done.returncode}): {' '.join(cmd)}")
                print(done.stdout + done.stderr)
                result["error"] = (done.stdout + done.stderr)[-2000:]
                code = 1
            else:
                with open(report) as f:
                    steps = [s["seconds"] for s in json.load(f)["steps"]]
                ours = median_ms(steps)
                ratio = torch_ms / ours
                print(f"shardline-run --device cuda: {ours:.2f} ms (median of {len(steps)} "
                      f"steps after a warm-up one)")
                print(f"ratio PyTorch / shardline: {ratio:.2f} (target 1.0 or more: "
                      f"{'meets' if ratio >= 1.0 else 'below'})")
                result.update({"shardline_ms": ours, "ratio": ratio})
                code = 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
