#!/usr/bin/env bash
# The GPU check: on a machine with a GPU, from a bundle made by scripts/gpu-bundle.sh, runs
#   kernels  every CUDA kernel against its CPU kernel (shardline-runtime-cuda-test), 60 s at most
#   model    runtime.cuda-model's 17 runs: plans on the GPU against the CPU (cuda_model_test.sh),
#            120 s (one shardline-run start, a few small steps and the CPU's reference each:
#            about 5 s a run at most)
#   nccl     runtime.cuda-nccl's short subset over NCCL (cuda_nccl_test.sh BIN short: 8 runs and
#            a stalled rank, an estimated 45 s where there are two GPUs; the whole test's ~50 runs do not
#            fit), 60 s; skipped at its first run with one GPU, as on the H200 that is lent
#   bench    the kernels against the device's peak (shardline-bench-gpu --json bench.json), 60 s
#   block    a hybrid layer's forward against PyTorch eager (bench/gpu/block_torch.py), 120 s
# each under its own timeout (7 minutes in all, 7 min 50 s with each part's 10 s to end), and writes the log (gpu-check.log) and the
# figures (bench.json, block.json) to $OUT (default BUNDLE_DIR/out). A part that finds no GPU
# (or PyTorch without CUDA) is skipped with its reason. Exits 0 when every part passed or was
# skipped, 1 when one failed or ran out of time.
#
# Usage: scripts/gpu-check.sh [BUNDLE_DIR] [PART...]   (default .gpu/ and every part)
# docs/benchmarks.md ("GPU figures") gives the device machine's `run` call.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${1:-$root/.gpu}"
[ $# -gt 0 ] && shift
if [ ! -f "$bundle/bin/shardline-run" ]; then
  echo "gpu-check.sh: $bundle holds no bundle: run scripts/gpu-bundle.sh first" >&2
  exit 2
fi
bundle="$(cd "$bundle" && pwd)"
# A copy of the bundle may have lost its modes on the way.
chmod u+x "$bundle"/bin/* "$bundle"/test/* 2>/dev/null
parts="${*:-kernels model nccl bench block}"
for part in $parts; do
  case "$part" in
  kernels | model | nccl | bench | block) ;;
  *)
    echo "gpu-check.sh: unknown part '$part' (kernels, model, nccl, bench, block)" >&2
    exit 2
    ;;
  esac
done
out="${OUT:-$bundle/out}"
mkdir -p "$out"
log="$out/gpu-check.log"
: >"$log"

# The bundle's libraries (packed by gpu-bundle.sh; unpacked into a folder of their own, so that
# the bundle may be read-only) first, then the CUDA toolkit's and those of PyTorch's CUDA wheels
# (cuBLASLt, NCCL), which the bundle leaves to the machine.
libs="$bundle/lib"
if [ -f "$bundle/lib.tar.gz" ]; then
  unpacked="$(mktemp -d)"
  trap 'rm -rf "$unpacked"' EXIT
  if ! tar -C "$unpacked" -xzf "$bundle/lib.tar.gz"; then
    echo "gpu-check.sh: cannot unpack $bundle/lib.tar.gz" >&2
    exit 2
  fi
  libs="$bundle/lib:$unpacked/lib"
fi
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$dir" ] && libs="$libs:$dir"
done
wheels=$(python3 -c 'import glob, os, sys
print(":".join(sorted({d for p in sys.path if p
                       for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))})))' 2>/dev/null ||
  true)
# Only the project's binaries get them: python3 and PyTorch keep the machine's own.
shardline_libs="$libs${wheels:+:$wheels}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
  echo "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle $bundle"
  head -n 1 "$bundle/MANIFEST" 2>/dev/null
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
      --format=csv 2>&1
  else
    echo "no nvidia-smi"
  fi
} | tee -a "$log"

failed=0
summary=""
part() { # NAME SECONDS COMMAND...
  local name=$1 seconds=$2 status start
  shift 2
  case " $parts " in *" $name "*) ;; *) return ;; esac
  echo "== $name (at most ${seconds}s): $*" | tee -a "$log"
  start=$(date +%s)
  timeout -k 10 "$seconds" "$@" 2>&1 | tee "$out/part.txt"
  status=${PIPESTATUS[0]}
  cat "$out/part.txt" >>"$log"
  local took=$(($(date +%s) - start)) verdict
  case $status in
  0) verdict=PASS ;;
  77) verdict="SKIP ($(grep -m1 '^skipped' "$out/part.txt" || tail -n 1 "$out/part.txt"))" ;;
  124 | 137) verdict="TIMEOUT after ${seconds}s" ;;
  *) verdict="FAIL (exit $status)" ;;
  esac
  case $status in 0 | 77) ;; *) failed=1 ;; esac
  echo "== $name: $verdict, ${took}s" | tee -a "$log"
  summary="$summary$name: $verdict, ${took}s"$'\n'
}

part kernels 60 env LD_LIBRARY_PATH="$shardline_libs" "$bundle/test/shardline-runtime-cuda-test"
part model 120 env LD_LIBRARY_PATH="$shardline_libs" SHARDLINE_PLAN_DIR="$bundle/plans/model" \
  sh "$root/runtime/test/cuda_model_test.sh" "$bundle/bin" "$root/examples"
part nccl 60 env LD_LIBRARY_PATH="$shardline_libs" SHARDLINE_PLAN_DIR="$bundle/plans/nccl" \
  sh "$root/runtime/test/cuda_nccl_test.sh" "$bundle/bin" short
part bench 60 env LD_LIBRARY_PATH="$shardline_libs" "$bundle/bin/shardline-bench-gpu" --json "$out/bench.json"
part block 120 python3 "$root/bench/gpu/block_torch.py" --plan "$bundle/plans/block.slp" \
  --run "$bundle/bin/shardline-run" --library-path "$shardline_libs" --steps 5 \
  --json "$out/block.json"

rm -f "$out/part.txt"
echo "== summary" | tee -a "$log"
printf '%s' "$summary" | tee -a "$log"
exit $failed
