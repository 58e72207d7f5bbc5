#!/bin/sh
# Plans of several ranks on several GPUs over NCCL (docs/runtime.md, NCCL): equivalence-matrix
# entries, their layout transitions and the kernels' own exchanges (ring attention, halos, the
# scans' state exchange, the vocabulary-parallel loss, dropless MoE's rows by count), run with
# --device cuda --comm nccl --verify (one process driving one GPU per rank) and pass when the
# outputs agree with the CPU's single-device run and the bytes and arena peak equal the report's;
# training plans of the same entries (--train --steps 3 --verify), which run the backward of those
# exchanges; dense under tp 2 with sequence parallelism again with SHARDLINE_NCCL_OVERLAP=0 (its
# gathers and reduce-scatters whole instead of in pieces with their linears), which must pass the
# same check; under
# mpirun the same with --comm mpi+nccl; and a rank that stalls or dies ends the
# job with an error naming the NCCL call and its group within the timeout, never a hang. Exits 77
# (skipped) without a CUDA device or with fewer than two GPUs.
# With `short` (scripts/gpu-check.sh's nccl part, which has a minute) it runs the named subset
# below instead: one run per kind of exchange, not the ~50 of the whole test.
# Plans come from a folder instead of the compiler with SHARDLINE_PLAN_DIR (gpu_plans.sh).
# usage: cuda_nccl_test.sh BIN_DIR [short]
set -eu
bin=$1
subset=${2:-all}
case "$subset" in
all | short) ;;
*)
  echo "cuda_nccl_test.sh: unknown subset '$subset' (all, short)" >&2
  exit 2
  ;;
esac
# The short subset: the gradients' all-reduce over dp, ring attention's K, V ring, the
# vocabulary-parallel loss under tp with sequence parallelism (its gathers in pieces under their
# linears, and whole; and in bf16, its reduce-scatters summed in order), dropless MoE's rows by count and
# capacity mode's all-to-alls, forward and trained (dense and dropless MoE), and the stalled rank.
# Left out: the other families and orders, cp allgather and a2a, every entry of 4 and 8 ranks,
# etp, the other training runs, the run under mpirun and the killed rank.
short_set='|dense --dp 2|attention --cp 2 --cp-comm ring --cp-order zigzag|dense --tp 2 --sp|dense16 --tp 2 --sp|dense --tp 2 --sp (gathers whole)|moe --dp 2 --ep 2|moe --dp 2 --ep 2 --moe-expert-capacity-factor 1.0|training dense --dp 2|training moe --dp 2 --ep 2|'
left_out=0
chosen() { # LABEL: whether the subset runs it (the plans are saved for every label)
  if [ "$subset" = short ] && ! $saving; then
    case "$short_set" in
    *"|$1|"*) ;;
    *)
      left_out=$((left_out + 1))
      return 1
      ;;
    esac
  fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
compile="$bin/shardline-compile"
run="$bin/shardline-run"
. "$(dirname "$0")/gpu_plans.sh"

small='"vocab": 64, "hidden": 32, "seq": 32, "batch": 4, "dtype": "f32"'
attention='"attention": {"heads": 8, "kv_heads": 4, "head_dim": 4}'
model() { # NAME PATTERN SECTIONS
  printf '{"name": "%s", "pattern": "%s", %s, %s}\n' "$1" "$2" "$small" "$3" > "$tmp/$1.json"
}
model mlp FF '"mlp": {"ffn_hidden": 64}'
model attention AA "$attention"
model dense AF "$attention, \"mlp\": {\"ffn_hidden\": 64}"
model moe EE '"moe": {"experts": 4, "top_k": 2, "ffn_hidden": 48}'
model mamba MM '"mamba": {"heads": 8, "head_dim": 4, "state": 8, "groups": 4, "conv": 4}'
model recurrent RR '"recurrent": {"width": 32, "conv": 4}'
model local LL '"local_attention": {"heads": 8, "kv_heads": 4, "head_dim": 4, "window": 6}'

plan "$tmp/dense.json" --dp 2 --emit plan -o "$tmp/probe.slp"
if ! $saving && ! probe=$("$run" "$tmp/probe.slp" --device cuda --comm nccl 2>&1); then
  case "$probe" in
  *"no CUDA device"* | *"GPUs, this machine has"*)
    echo "skipped: ${probe#*error: }"
    exit 77
    ;;
  esac
  echo "$probe"
  exit 1
fi
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "$gpus" -ge 2 ] 2>/dev/null || gpus=2
# Compiling the plans for another machine: every entry's, for up to 8 GPUs.
if $saving; then
  gpus=8
fi
echo "$gpus GPUs"

failures=0
rtol=1e-3
check() { # LABEL PLAN RUN-FLAGS...: the plan on the GPUs against the CPU's single-device run
  label=$1
  file=$2
  shift 2
  if $saving; then
    return
  fi
  if out=$("$run" "$file" --device cuda --comm nccl "$@" --verify --rtol "$rtol" 2>&1); then
    echo "PASS $label"
  else
    echo "FAIL $label"
    echo "$out"
    failures=$((failures + 1))
  fi
}
entry() { # NAME RANKS FLAGS...
  name=$1
  ranks=$2
  shift 2
  chosen "$name $*" || return 0
  if [ "$ranks" -gt "$gpus" ]; then
    echo "SKIP $name $* (needs $ranks GPUs)"
    return
  fi
  file="$tmp/$name-$ranks$(printf '%s' "$*" | tr -c 'A-Za-z0-9' '_').slp"
  plan "$tmp/$name.json" "$@" --emit plan -o "$file"
  check "$name $*" "$file"
}

# Every family over dp (the loss).
for family in mlp attention dense mamba recurrent local; do
  entry $family 2 --dp 2
done
# Context parallelism where attention computes on whole K, V blocks: all-gathered (zigzag and
# contiguous) or all-to-all'd.
entry attention 2 --cp 2 --cp-comm allgather --cp-order zigzag
entry attention 2 --cp 2 --cp-comm allgather --cp-order contiguous
entry attention 2 --cp 2 --cp-comm a2a
entry attention 4 --cp 4 --cp-comm allgather
entry dense 4 --dp 2 --cp 2 --cp-comm allgather
entry dense 4 --dp 4
# dp 8 splits a batch of 8.
sed 's/"batch": 4/"batch": 8/; s/"name": "dense"/"name": "dense8"/' "$tmp/dense.json" \
  >"$tmp/dense8.json"
entry dense8 8 --dp 8
# The kernels' own exchanges: ring attention's K, V ring and the log-sum-exp merge of its steps
# (zigzag and contiguous), the halos of the convolutions and of local attention, the scans'
# state exchange and corrections, under cp 2 for every family but MoE; the vocabulary-parallel
# loss under tp 2 (with and without sequence parallelism); the ring of 4 where there are GPUs.
for family in mlp attention dense mamba recurrent local; do
  entry $family 2 --cp 2 --cp-comm ring --cp-order zigzag
  entry $family 2 --cp 2 --cp-comm ring --cp-order contiguous
done
entry dense 2 --tp 2 --sp=false
entry dense 2 --tp 2 --sp
# A bf16 model under tp 2: its reduce-scatters and all-reduces cross in 16 bits and are summed on
# arrival in f32 in group order (the CPU collectives' bits); the bf16 GEMMs hold it to 0.03.
sed 's/"dtype": "f32"/"dtype": "bf16"/; s/"name": "dense"/"name": "dense16"/' "$tmp/dense.json" \
  >"$tmp/dense16.json"
rtol=0.03
entry dense16 2 --tp 2 --sp=false
entry dense16 2 --tp 2 --sp
rtol=1e-3
# Sequence parallelism's gathers run in pieces under the linears that read them, and its
# reduce-scatters with the linears that make their operands (docs/runtime.md, NCCL); the same
# plans with that off (SHARDLINE_NCCL_OVERLAP=0: every gather and reduce-scatter one call)
# must pass the same check, forward and trained.
whole() { # forward|training NAME FLAGS... (two ranks): the entry again, every gather whole
  mode=$1
  name=$2
  shift 2
  label="$name $* (gathers whole)"
  if [ "$mode" = training ]; then
    label="training $label"
  fi
  chosen "$label" || return 0
  file="$tmp/$name-whole-$mode$(printf '%s' "$*" | tr -c 'A-Za-z0-9' '_').slp"
  export SHARDLINE_NCCL_OVERLAP=0
  if [ "$mode" = training ]; then
    plan "$tmp/$name.json" "$@" --train --emit plan -o "$file"
    check "$label" "$file" --train --steps 3
  else
    plan "$tmp/$name.json" "$@" --emit plan -o "$file"
    check "$label" "$file"
  fi
  unset SHARDLINE_NCCL_OVERLAP
}
whole forward dense --tp 2 --sp
entry attention 4 --cp 4 --cp-comm ring --cp-order zigzag
entry dense 4 --tp 2 --sp --cp 2 --cp-comm ring

# Training (three steps, each step's loss and every final weight against the CPU's
# single-device run): the backward of the kernels' own exchanges (ring attention's backward
# ring, halo_add, the state exchange's dual, the vocabulary-parallel loss's backward) and the
# backward of the conv, local attention and the scans over halos and sequence chunks, under cp 2
# for every family but MoE; dense under tp 2 with and without sequence parallelism; every family
# but MoE over dp 2 (the gradients' all-reduce).
train() { # NAME FLAGS... (two ranks, or as many as the caller checked there are GPUs for)
  name=$1
  shift
  chosen "training $name $*" || return 0
  file="$tmp/$name-train$(printf '%s' "$*" | tr -c 'A-Za-z0-9' '_').slp"
  plan "$tmp/$name.json" "$@" --train --emit plan -o "$file"
  check "training $name $*" "$file" --train --steps 3
}
for family in mlp attention dense mamba recurrent local; do
  train $family --cp 2 --cp-comm ring --cp-order zigzag
  train $family --cp 2 --cp-comm ring --cp-order contiguous
  train $family --dp 2
done
train dense --tp 2 --sp=false
train dense --tp 2 --sp
whole training dense --tp 2 --sp

# MoE over an expert group: dropless (counts, then the rows by count over NCCL; with etp the
# gather and reduce-scatter over the expert-tensor group) and capacity mode (its all-to-alls are
# layout transitions), forward and trained; --verify needs the bytes each rank sent equal to
# what its counts imply, and capacity mode's dropped rows equal to the CPU's.
entry moe 2 --dp 2 --ep 2
entry moe 2 --dp 2 --ep 2 --moe-expert-capacity-factor 1.0
entry moe 4 --cp 2 --dp 2 --ep 2 --etp 2
train moe --dp 2 --ep 2
train moe --dp 2 --ep 2 --moe-expert-capacity-factor 1.0
if [ "$gpus" -ge 4 ] || [ "$subset" = short ]; then
  train moe --cp 2 --dp 2 --ep 2 --etp 2
else
  echo "SKIP training moe --cp 2 --dp 2 --ep 2 --etp 2 (needs 4 GPUs)"
fi

if $saving; then
  exit 0
fi

# One MPI process per GPU.
if [ "$subset" = all ] && command -v mpirun >/dev/null 2>&1; then
  if out=$(mpirun --allow-run-as-root --oversubscribe -np 2 "$run" "$tmp/probe.slp" \
    --device cuda --comm mpi+nccl --verify --rtol 1e-3 2>&1); then
    echo "PASS dense --dp 2 under mpirun"
  else
    echo "FAIL dense --dp 2 under mpirun"
    echo "$out"
    failures=$((failures + 1))
  fi
fi

# A rank that stalls or dies: the others' NCCL wait gives up at --timeout, aborts its
# communicators and names the call and its group; the job ends well within the guard.
faults="stall:1:0 kill:1:0"
[ "$subset" = short ] && faults=stall:1:0
for fault in $faults; do
  status=0
  out=$(SHARDLINE_FAULT=$fault timeout 120 "$run" "$tmp/probe.slp" --device cuda --comm nccl \
    --timeout 5 2>&1) || status=$?
  case "$status:$out" in
  124:*)
    echo "FAIL $fault: the job hung"
    failures=$((failures + 1))
    ;;
  0:*)
    echo "FAIL $fault: the run succeeded"
    failures=$((failures + 1))
    ;;
  *"NCCL: nccl"*"on the group [dp] (ranks 0, 1)"*"did not finish within"*)
    echo "PASS $fault: $(echo "$out" | grep -m1 NCCL)"
    ;;
  *)
    echo "FAIL $fault: exit $status"
    echo "$out"
    failures=$((failures + 1))
    ;;
  esac
done

[ "$subset" = short ] && echo "short subset: $left_out runs and the killed rank left out"
echo "$failures failed"
[ "$failures" -eq 0 ]
