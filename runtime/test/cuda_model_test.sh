#!/bin/sh
# Dense models on the CUDA backend against the CPU: shardline-run --device cuda --verify runs
# the plan on the GPU and its single-device reference on the CPU, and passes when the loss and
# the logits agree within the tolerance below and the bytes sent and the arena peak equal the
# report's. Exits 77 (skipped) on a machine without a CUDA device.
# Plans come from a folder instead of the compiler with SHARDLINE_PLAN_DIR (gpu_plans.sh).
# usage: cuda_model_test.sh BIN_DIR EXAMPLES_DIR
set -eu
bin=$1
examples=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
compile="$bin/shardline-compile"
run="$bin/shardline-run"
. "$(dirname "$0")/gpu_plans.sh"
# Compiling the plans for another machine (gpu_plans.sh): nothing runs.
if $saving; then
  run=true
fi

plan "$examples/models/gpt-dense.json" --tp 1 --sp=false --emit plan -o "$tmp/f32.slp"
if ! $saving && ! probe=$("$run" "$tmp/f32.slp" --device cuda 2>&1); then
  case "$probe" in
  *"no CUDA device"*)
    echo "skipped: no CUDA device ${probe#*no CUDA device }"
    exit 77
    ;;
  esac
  echo "$probe"
  exit 1
fi

# f32: cuBLASLt's f32 GEMMs and the kernels' f32 exponentials sum in another order than
# OpenBLAS and the CPU's double softmax, a few units in the last place per op: 1e-4 relative
# (shardline-run's default for f32) over the eight blocks.
"$run" "$tmp/f32.slp" --device cuda --verify --steps 3
# Grouped-query attention with a head dim of 64 and a sequence that is not a whole number of
# the kernel's query blocks or key tiles.
cat > "$tmp/gqa.json" <<'SPEC'
{"name": "gqa", "pattern": "AFAF", "vocab": 300, "hidden": 256, "seq": 100, "batch": 3,
 "dtype": "f32", "attention": {"heads": 4, "kv_heads": 2, "head_dim": 64},
 "mlp": {"ffn_hidden": 384}}
SPEC
plan "$tmp/gqa.json" --emit plan -o "$tmp/gqa.slp"
"$run" "$tmp/gqa.slp" --device cuda --verify
# Mamba-2 and RG-LRU with their convolutions, and sliding-window attention: the scans run step
# by step in double on the GPU against the CPU's chunked scan in f32 GEMMs, 1e-4 apart per scan.
cat > "$tmp/mr.json" <<'SPEC'
{"name": "mr", "pattern": "MRLMRL", "vocab": 256, "hidden": 128, "seq": 128, "batch": 2,
 "dtype": "f32", "mamba": {"heads": 8, "head_dim": 16, "state": 16, "groups": 2, "conv": 4},
 "recurrent": {"width": 128, "conv": 4},
 "local_attention": {"heads": 4, "kv_heads": 2, "head_dim": 32, "window": 24}}
SPEC
plan "$tmp/mr.json" --emit plan -o "$tmp/mr.slp"
"$run" "$tmp/mr.slp" --device cuda --verify --rtol 1e-3
# The whole nam56r-tiny (attention, MoE, Mamba-2, RG-LRU) at world size 1. A router that sees
# a rounding difference may pick another expert for a token (docs/runtime.md, --verify's
# tolerances): the f32 run agrees to the scans' 1e-3 unless that happens.
plan "$examples/models/nam56r-tiny.json" --tp 1 --sp=false --cp 1 --ep 1 --emit plan \
  -o "$tmp/nam.slp"
"$run" "$tmp/nam.slp" --device cuda --verify --rtol 1e-3
# bf16 storage: linear's and lm_head's GEMMs take the bf16 tensors to the tensor cores with f32
# accumulation and write bf16 (the CPU widens them to f32 first: the same products, exact in f32,
# summed in another order), the other kernels compute in f32 on both devices. Each side rounds
# at the same op boundaries, and a sum that lands on the other side of a rounding moves an
# output by an ulp of bf16: 0.03 relative, as for the CPU's 16-bit runs without routers
# (docs/runtime.md).
sed 's/"dtype": "f32"/"dtype": "bf16"/' "$examples/models/gpt-dense.json" > "$tmp/bf16.json"
plan "$tmp/bf16.json" --tp 1 --sp=false --emit plan -o "$tmp/bf16.slp"
"$run" "$tmp/bf16.slp" --device cuda --verify --rtol 0.03
# Head dim 256 in bf16 (Gemma's): the tensor-core attention's 192.6 KiB layout, one block an SM,
# over grouped-query heads and a sequence that is not a whole number of query blocks.
cat > "$tmp/d256.json" <<'SPEC'
{"name": "d256", "pattern": "AF", "vocab": 300, "hidden": 512, "seq": 100, "batch": 2,
 "dtype": "bf16", "attention": {"heads": 2, "kv_heads": 1, "head_dim": 256},
 "mlp": {"ffn_hidden": 512}}
SPEC
plan "$tmp/d256.json" --emit plan -o "$tmp/d256.slp"
"$run" "$tmp/d256.slp" --device cuda --verify --rtol 0.03
# SHARDLINE_CUDA_TF32=1: the f32 plan's GEMMs on the tensor cores, their factors rounded to
# TF32's 10-bit mantissas (finer than bf16's 7), held to the 16-bit runs' 0.03; the run prints
# the error it reached.
SHARDLINE_CUDA_TF32=1 "$run" "$tmp/f32.slp" --device cuda --verify --rtol 0.03
# Training at world size 1: three steps of forward, backward (the backward kernels, linear's
# GEMMs through cuBLASLt) and AdamW of gpt-dense on the GPU beside the same steps on the CPU.
# Each step's loss and every final weight must agree within 1e-3: the backward's f32
# attention probabilities and cuBLASLt's sums differ from the CPU's by roundings, and AdamW's
# first steps divide each gradient by its own magnitude, which carries those roundings into
# the weights of the elements whose gradients are near zero.
plan "$examples/models/gpt-dense.json" --tp 1 --sp=false --train --emit plan \
  -o "$tmp/train.slp"
"$run" "$tmp/train.slp" --device cuda --train --steps 3 --verify --rtol 1e-3
# Training that diverges stops at the first step whose gradients are not finite: the step's
# first AdamW reads the device's count of a non-finite sum of squares (one host synchronisation
# a step), and the step's other updates skip themselves in their kernels.
if ! $saving; then
  if diverged=$("$run" "$tmp/train.slp" --device cuda --train --steps 4 --lr 1e30 \
    --lr-decay-style constant 2>&1); then
    echo "$diverged"
    echo "cuda_model_test.sh: diverging training did not stop"
    exit 1
  fi
  case "$diverged" in
  *"(sl.adamw) at "*"the gradients' sum of squares is "*" at training step 2: no update"*) ;;
  *)
    echo "$diverged"
    echo "cuda_model_test.sh: diverging training stopped with another error"
    exit 1
    ;;
  esac
fi
# gpt-dense in bf16, trained through f32 main copies: the bf16 GEMMs of the backward, the widened
# backward kernels and adamw_main (the weight's bits rounded from its main copy in place) on the
# GPU beside the CPU's bf16 training, within the 0.05 bf16 training reaches between CPU runs of
# different summation orders (docs/training.md, "Mixed precision").
sed 's/"dtype": "f32"/"dtype": "bf16"/' "$examples/models/gpt-dense.json" > "$tmp/gpt16.json"
plan "$tmp/gpt16.json" --tp 1 --sp=false --train --emit plan -o "$tmp/train16.slp"
"$run" "$tmp/train16.slp" --device cuda --train --steps 3 --verify --rtol 0.05
# The same with Megatron's --grad-reduce-in-bf16: the backward kernels write the parameters'
# gradients in bf16 and adamw_main widens them as it reads.
plan "$tmp/gpt16.json" --tp 1 --sp=false --train --grad-reduce-in-bf16 --emit plan \
  -o "$tmp/train16g.slp"
"$run" "$tmp/train16g.slp" --device cuda --train --steps 3 --verify --rtol 0.05
# Mamba-2, RG-LRU, sliding-window and grouped-query attention trained the same way (the gated
# norm's, the conv's and the scans' backward over whole sequences, local_attention_grad,
# attention_grad with two query heads per kv head).
cat > "$tmp/hybrid.json" <<'SPEC'
{"name": "hybrid", "pattern": "MRLFAF", "vocab": 256, "hidden": 128, "seq": 128, "batch": 2,
 "dtype": "f32", "attention": {"heads": 4, "kv_heads": 2, "head_dim": 32},
 "mamba": {"heads": 8, "head_dim": 16, "state": 16, "groups": 2, "conv": 4},
 "local_attention": {"heads": 4, "kv_heads": 2, "head_dim": 32, "window": 24},
 "recurrent": {"width": 128, "conv": 4}, "mlp": {"ffn_hidden": 256}}
SPEC
plan "$tmp/hybrid.json" --train --emit plan -o "$tmp/hybrid-train.slp"
"$run" "$tmp/hybrid-train.slp" --device cuda --train --steps 3 --verify --rtol 1e-3
# The whole nam56r-tiny trained (dropless MoE's backward over the routed rows, each expert's
# SwiGLU differentiated by the grouped GEMMs); --verify's single-device run replays the GPU's
# expert choices (--verify-routing replay, the default), so a near-tie the GPU rounds the
# other way does not change which tokens each expert trains on.
plan "$examples/models/nam56r-tiny.json" --tp 1 --sp=false --cp 1 --ep 1 --train \
  --emit plan -o "$tmp/nam-train.slp"
"$run" "$tmp/nam-train.slp" --device cuda --train --steps 3 --verify --rtol 1e-3
# MoE alone at world size 1, dropless (the routed rows' sort and grouped GEMMs) and in capacity
# mode (the slots' drop order, the buffers, moe_experts over them), forward and trained; capacity
# mode's --verify also needs the dropped rows counted on the GPU equal to the CPU's.
cat > "$tmp/moe.json" <<'SPEC'
{"name": "moe", "pattern": "EE", "vocab": 64, "hidden": 32, "seq": 32, "batch": 4,
 "dtype": "f32", "moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48}}
SPEC
plan "$tmp/moe.json" --emit plan -o "$tmp/moe.slp"
"$run" "$tmp/moe.slp" --device cuda --verify --rtol 1e-3
plan "$tmp/moe.json" --train --emit plan -o "$tmp/moe-train.slp"
"$run" "$tmp/moe-train.slp" --device cuda --train --steps 3 --verify --rtol 1e-3
plan "$tmp/moe.json" --moe-expert-capacity-factor 1.0 --emit plan -o "$tmp/cap.slp"
"$run" "$tmp/cap.slp" --device cuda --verify --rtol 1e-3
plan "$tmp/moe.json" --moe-expert-capacity-factor 1.0 --train --emit plan \
  -o "$tmp/cap-train.slp"
"$run" "$tmp/cap-train.slp" --device cuda --train --steps 3 --verify --rtol 1e-3
# The same MoE model in bf16, forward: the router, dropless MoE's rows and grouped GEMMs, capacity
# mode's slots, dispatch and combine, and the experts' GEMMs over the buffers keep their tensors in
# bf16; routers hold a 16-bit model to 0.04 (docs/runtime.md, Weights, inputs, verification).
sed 's/"dtype": "f32"/"dtype": "bf16"/' "$tmp/moe.json" > "$tmp/moe16.json"
plan "$tmp/moe16.json" --emit plan -o "$tmp/moe16.slp"
"$run" "$tmp/moe16.slp" --device cuda --verify --rtol 0.04
plan "$tmp/moe16.json" --moe-expert-capacity-factor 1.0 --emit plan -o "$tmp/cap16.slp"
"$run" "$tmp/cap16.slp" --device cuda --verify --rtol 0.04
