#!/usr/bin/python3
"""The PyTorch oracle: the model of a spec (docs/model-spec.md) written again
from the public definitions of its blocks, in float64, against what a
shardline run wrote.

    oracle.py MODEL.json --weights W.safetensors --outputs O.safetensors [--rtol X]

W is `shardline-run --save-weights` (every weight whole, by name), O is
`shardline-run --save-outputs` (the last forward pass's `logits` and `loss`
and the `tokens` and `labels` it ran on). The oracle computes logits and loss
from W and the tokens, and compares each with O's: the relative error of a
tensor is its largest absolute error over its largest reference magnitude, as
`--verify` measures it, and must be at most --rtol (1e-4, the f32 tolerance
of --verify: f32 sums in another order move the last bits only). When O holds
gradients (`grad.<weight name>`, written by training runs) it also computes
every weight's gradient of the loss by autograd and compares those; a file
without any says "no gradients in O".

Every convention the two implementations share (weight orientation, RoPE
pairing, the SSD and RG-LRU recurrences, routing) is stated in
docs/model-spec.md, "Numerical conventions". Exit status: 0 when everything
agrees, 1 when something does not, 2 on bad input.
"""

import argparse
import json
import math
import struct
import sys

import numpy as np
import torch

F = torch.float64


class Bad(Exception):
    """Bad input: a file or spec the oracle cannot read."""


# -- safetensors ---------------------------------------------------------------

_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "U16": np.uint16,
           "U32": np.uint32, "I64": np.int64, "F64": np.float64}


def read_safetensors(path):
    """name -> numpy array (BF16 widened to f32) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise Bad(f"cannot read {path}: {e.strerror}")
    if len(blob) < 8:
        raise Bad(f"{path}: not a safetensors file (shorter than its header size)")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise Bad(f"{path}: the header size {size} exceeds the file")
    try:
        header = json.loads(blob[8:8 + size])
    except ValueError as e:
        raise Bad(f"{path}: the header is not JSON: {e}")
    data = memoryview(blob)[8 + size:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = entry["dtype"], entry["shape"]
        begin, end = entry["data_offsets"]
        if dtype == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _DTYPES:
            array = np.frombuffer(data[begin:end], dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise Bad(f"{path}: tensor '{name}' has dtype {dtype}, which the oracle does not read")
        if array.size != math.prod(shape):
            raise Bad(f"{path}: tensor '{name}' has {array.size} elements, its shape {shape} "
                      f"needs {math.prod(shape)}")
        out[name] = array.reshape(shape)
    return out


# -- the spec ------------------------------------------------------------------

def read_spec(path):
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise Bad(f"cannot read the model spec {path}: {e}")
    sections = {"A": "attention", "L": "local_attention", "M": "mamba", "E": "moe",
                "R": "recurrent", "F": "mlp"}
    for key in ("pattern", "vocab", "hidden", "seq", "batch"):
        if key not in spec:
            raise Bad(f"{path}: the spec has no '{key}'")
    for letter in spec["pattern"]:
        if letter not in sections:
            raise Bad(f"{path}: pattern letter '{letter}' is not a block family")
        if sections[letter] not in spec:
            raise Bad(f"{path}: the pattern uses {letter} but the spec has no "
                      f"'{sections[letter]}' section")
    spec.setdefault("norm_eps", 1e-5)
    for section in ("attention", "local_attention"):
        if section in spec:
            spec[section].setdefault("kv_heads", spec[section]["heads"])
            spec[section].setdefault("rope_theta", 10000.0)
    if "mamba" in spec:
        spec["mamba"].setdefault("groups", 1)
        spec["mamba"].setdefault("conv", 4)
    if "recurrent" in spec:
        spec["recurrent"].setdefault("conv", 4)
    if "moe" in spec and "capacity_factor" in spec["moe"]:
        spec["moe"].setdefault("token_drop_policy", "probs")
        spec["moe"]["group"] = capacity_group(spec)
    return spec


def capacity_group(spec):
    """Capacity mode's token group: the [rows, positions] one rank holds for
    the MoE layer under the spec's own strategy (`parallel`): rows = batch /
    dp; positions = seq over the contiguous runs of the sequence, cp of them
    (twice as many in zigzag order) times tp under sequence parallelism."""
    par = spec.get("parallel", {})
    pieces = par.get("cp", 1) * (par.get("tp", 1) if par.get("sp", False) else 1)
    if par.get("cp", 1) > 1 and par.get("cp_order", "zigzag") == "zigzag":
        pieces *= 2
    rows, positions = spec["batch"] // par.get("dp", 1), spec["seq"] // pieces
    if rows * par.get("dp", 1) != spec["batch"] or positions * pieces != spec["seq"]:
        raise Bad(f"the strategy {par} does not cut batch {spec['batch']} and seq {spec['seq']} "
                  "into whole groups")
    return rows, positions


# -- the blocks ----------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, head_dim, theta):
    """Rotates each head's channel i with channel i + head_dim/2 (the
    half-split pairing) by position * theta^(-2i/head_dim)."""
    b, s, width = x.shape
    half = head_dim // 2
    freq = theta ** (-2.0 * torch.arange(half, dtype=F) / head_dim)
    angle = torch.arange(s, dtype=F)[:, None] * freq[None, :]
    cos, sin = torch.cos(angle)[None, :, None, :], torch.sin(angle)[None, :, None, :]
    h = x.reshape(b, s, width // head_dim, head_dim)
    x1, x2 = h[..., :half], h[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(b, s, width)


def attention(q, k, v, heads, kv_heads, head_dim, window=0):
    """Causal grouped-query attention: query head h reads kv head
    h // (heads / kv_heads); a window w keeps the keys at [p - w + 1, p]."""
    b, s, _ = q.shape
    q = q.reshape(b, s, heads, head_dim).transpose(1, 2)
    k = k.reshape(b, s, kv_heads, head_dim).transpose(1, 2)
    v = v.reshape(b, s, kv_heads, head_dim).transpose(1, 2)
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    pos = torch.arange(s)
    visible = pos[None, :] <= pos[:, None]
    if window > 0:
        visible &= pos[:, None] - pos[None, :] < window
    scores = scores.masked_fill(~visible, float("-inf"))
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, s, heads * head_dim)


def causal_conv(x, weight, bias):
    """Depthwise causal convolution over the sequence: y[t, c] = bias[c] +
    sum_j weight[c, j] * x[t - (W - 1) + j, c], zeros before the start."""
    width = weight.shape[1]
    padded = torch.nn.functional.pad(x.transpose(1, 2), (width - 1, 0))
    y = torch.nn.functional.conv1d(padded, weight[:, None, :], bias, groups=x.shape[2])
    return y.transpose(1, 2)


def silu(x):
    return x * torch.sigmoid(x)


def mlp(n, w, p):
    return (silu(n @ w[p + "w_gate"]) * (n @ w[p + "w_up"])) @ w[p + "w_down"]


def mamba(n, w, p, m, eps):
    """Mamba-2: projections, causal convs with SiLU, the SSD recurrence per
    head (group h // (heads / groups) of B and C), the D skip, then the
    gated RMSNorm rms_norm(y) * w * silu(z) per group, and the out
    projection."""
    b, s, _ = n.shape
    nh, hp, ns, g = m["heads"], m["head_dim"], m["state"], m["groups"]
    z = n @ w[p + "w_z"]
    xs = silu(causal_conv(n @ w[p + "w_x"], w[p + "conv_x.weight"], w[p + "conv_x.bias"]))
    bm = silu(causal_conv(n @ w[p + "w_B"], w[p + "conv_B.weight"], w[p + "conv_B.bias"]))
    cm = silu(causal_conv(n @ w[p + "w_C"], w[p + "conv_C.weight"], w[p + "conv_C.bias"]))
    dt = torch.nn.functional.softplus(n @ w[p + "w_dt"] + w[p + "dt_bias"])
    a = -torch.exp(w[p + "a_log"])
    xs = xs.reshape(b, s, nh, hp)
    per_group = nh // g
    bm = bm.reshape(b, s, g, ns).repeat_interleave(per_group, dim=2)
    cm = cm.reshape(b, s, g, ns).repeat_interleave(per_group, dim=2)
    state = torch.zeros(b, nh, hp, ns, dtype=F)
    ys = []
    for t in range(s):
        decay = torch.exp(dt[:, t] * a)[:, :, None, None]
        state = decay * state + (dt[:, t, :, None, None] * xs[:, t, :, :, None]
                                 * bm[:, t, :, None, :])
        ys.append((state * cm[:, t, :, None, :]).sum(-1) + w[p + "d"][None, :, None] * xs[:, t])
    y = torch.stack(ys, 1).reshape(b, s, nh * hp)
    yg = y.reshape(b, s, g, -1)
    yg = yg * torch.rsqrt((yg * yg).mean(-1, keepdim=True) + eps)
    y = yg.reshape(b, s, nh * hp) * w[p + "norm"] * silu(z)
    return y @ w[p + "w_out"]


def capacity_kept(chosen, weights, b, s, e):
    """Which (token, choice) pairs capacity mode keeps, [b*s, k]. Tokens are
    cut into groups of rows x positions of the [b, s] grid; in a group, an
    expert's candidates are the pairs that chose it, tokens in row-major
    order and then the choice; it keeps C = ceil(F * k * rows * positions /
    experts) (at least 1) of them: the first C ("position"), or the C of
    largest weight, the earlier candidate on a tie ("probs")."""
    k, experts = chosen.shape[1], e["experts"]
    rows, positions = e["group"]
    capacity = max(1, math.ceil(e["capacity_factor"] * k * rows * positions / experts))
    ids = chosen.reshape(b, s, k)
    w = weights.detach().reshape(b, s, k)
    kept = torch.zeros(b, s, k, dtype=torch.bool)
    for r0 in range(0, b, rows):
        for s0 in range(0, s, positions):
            group = [(r, q, j) for r in range(r0, r0 + rows) for q in range(s0, s0 + positions)
                     for j in range(k)]
            for expert in range(experts):
                cand = [(i, t) for i, t in enumerate(group) if int(ids[t]) == expert]
                if e["token_drop_policy"] == "probs":
                    cand.sort(key=lambda c: (-float(w[c[1]]), c[0]))
                for _, t in cand[:capacity]:
                    kept[t] = True
    return kept.reshape(b * s, k)


def moe(n, w, p, e):
    """Top-k MoE: the router's softmax over every expert, the k largest
    logits chosen, their probabilities renormalised to sum to one; each
    expert a SwiGLU MLP. In capacity mode (`capacity_factor`) only the
    choices capacity_kept keeps reach their expert; a token's dropped
    choices add nothing (the residual carries it)."""
    b, s, h = n.shape
    x = n.reshape(b * s, h)
    logits = x @ w[p + "router"]
    probs = torch.softmax(logits, -1)
    chosen = torch.topk(logits, e["top_k"], dim=-1).indices
    weights = probs.gather(1, chosen)
    weights = weights / weights.sum(-1, keepdim=True)
    routed = chosen
    if "capacity_factor" in e:
        routed = torch.where(capacity_kept(chosen, weights, b, s, e), chosen, -1)
    out = torch.zeros_like(x)
    for expert in range(e["experts"]):
        rows, slot = torch.nonzero(routed == expert, as_tuple=True)
        if rows.numel() == 0:
            continue
        xe = x[rows]
        ye = (silu(xe @ w[p + "w_gate"][expert]) * (xe @ w[p + "w_up"][expert])) \
            @ w[p + "w_down"][expert]
        out = out.index_add(0, rows, weights[rows, slot][:, None] * ye)
    return out.reshape(b, s, h)


def rglru(n, w, p, r):
    """Griffin's recurrent block: gelu(n W_gate) times the RG-LRU of the
    causal conv of n W_in, with per-channel gates a_t = wa x + ba, i_t =
    wx x + bx, log a = 8 sigmoid(a_t) log sigmoid(lambda), and
    h = a h + sqrt(1 - a^2) sigmoid(i_t) x."""
    gate = torch.nn.functional.gelu(n @ w[p + "w_gate"])
    x = causal_conv(n @ w[p + "w_in"], w[p + "conv.weight"], w[p + "conv.bias"])
    gate_a = w[p + "wa"] * x + w[p + "ba"]
    gate_x = w[p + "wx"] * x + w[p + "bx"]
    log_a = 8.0 * torch.sigmoid(gate_a) * torch.nn.functional.logsigmoid(w[p + "lambda"])
    norm = torch.sqrt(-torch.expm1(2.0 * log_a))
    h = torch.zeros(x.shape[0], x.shape[2], dtype=F)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(log_a[:, t]) * h + norm[:, t] * torch.sigmoid(gate_x[:, t]) * x[:, t]
        ys.append(h)
    return (gate * torch.stack(ys, 1)) @ w[p + "w_out"]


def forward(spec, w, tokens, labels):
    """Logits and the mean cross-entropy loss of the model on the tokens."""
    eps = spec["norm_eps"]
    x = w["embedding.table"][tokens]
    for i, letter in enumerate(spec["pattern"]):
        p = f"blocks.{i}."
        n = rms_norm(x, w[p + "norm"], eps)
        if letter in "AL":
            section = "attention" if letter == "A" else "local_attention"
            a, q = spec[section], p + ("attn." if letter == "A" else "local_attn.")
            rq = rope(n @ w[q + "wq"], a["head_dim"], a["rope_theta"])
            rk = rope(n @ w[q + "wk"], a["head_dim"], a["rope_theta"])
            o = attention(rq, rk, n @ w[q + "wv"], a["heads"], a["kv_heads"], a["head_dim"],
                          a.get("window", 0) if letter == "L" else 0)
            y = o @ w[q + "wo"]
        elif letter == "F":
            y = mlp(n, w, p + "mlp.")
        elif letter == "M":
            y = mamba(n, w, p + "mamba.", spec["mamba"], eps)
        elif letter == "E":
            y = moe(n, w, p + "moe.", spec["moe"])
        elif letter == "R":
            y = rglru(n, w, p + "rglru.", spec["recurrent"])
        else:
            raise Bad(f"pattern letter '{letter}' is not one the oracle knows")
        x = x + y
    logits = rms_norm(x, w["final_norm"], eps) @ w["lm_head"]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             labels.reshape(-1))
    return logits, loss


# -- comparison ----------------------------------------------------------------

def relative_error(got, want):
    """The largest absolute error over the largest reference magnitude."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return math.inf, f"shape {list(got.shape)}, the oracle's {list(want.shape)}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got - want).max()) if want.size else 0.0
    return (err / scale if scale > 0 else err), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="the model spec (JSON) the plan was compiled from")
    ap.add_argument("--weights", required=True, help="shardline-run --save-weights file")
    ap.add_argument("--outputs", required=True, help="shardline-run --save-outputs file")
    ap.add_argument("--rtol", type=float, default=1e-4,
                    help="largest relative error accepted (default 1e-4, for f32 plans)")
    args = ap.parse_args()
    try:
        spec = read_spec(args.spec)
        stored = read_safetensors(args.weights)
        outputs = read_safetensors(args.outputs)
        for name in ("tokens", "labels", "logits", "loss"):
            if name not in outputs:
                raise Bad(f"{args.outputs} has no tensor '{name}' "
                          "(shardline-run --save-outputs writes it)")
        # The optimizer's moments, and the f32 main copies of a bf16 model's
        # weights, are weights of the plan but not of the model.
        names = [k for k in stored if not k.endswith((".adam_m", ".adam_v")) and
                 not (k.endswith(".main") and k[:-len(".main")] in stored)]
        weights = {k: torch.tensor(stored[k], dtype=F, requires_grad=True) for k in names}
        tokens = torch.tensor(outputs["tokens"].astype(np.int64))
        labels = torch.tensor(outputs["labels"].astype(np.int64))
        try:
            logits, loss = forward(spec, weights, tokens, labels)
        except KeyError as e:
            raise Bad(f"{args.weights} has no weight {e} that the spec's model needs")
    except Bad as e:
        print(f"oracle.py: error: {e}", file=sys.stderr)
        return 2

    ok = True

    def check(name, got, want):
        nonlocal ok
        rel, why = relative_error(got, want)
        good = why is None and rel <= args.rtol
        ok = ok and good
        print(f"{name}: " + (why if why else f"relative error {rel:.3g}") +
              ("" if good else f" > {args.rtol:g}: MISMATCH"))

    check("logits", outputs["logits"], logits.detach().numpy())
    check("loss", outputs["loss"], loss.detach().numpy())
    grads = {k[len("grad."):]: v for k, v in outputs.items() if k.startswith("grad.")}
    if not grads:
        print(f"no gradients in {args.outputs}")
    else:
        loss.backward()
        for name in sorted(grads):
            if name not in weights:
                print(f"grad.{name}: the model has no weight '{name}': MISMATCH")
                ok = False
                continue
            grad = weights[name].grad
            check(f"grad.{name}", grads[name],
                  grad.numpy() if grad is not None else np.zeros(weights[name].shape))
        missing = [k for k in names if k not in grads]
        if missing:
            ok = False
            print(f"{len(missing)} weights have no gradient in {args.outputs}: "
                  + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    print(f"oracle: {'PASS' if ok else 'FAIL'} (relative error at most {args.rtol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
