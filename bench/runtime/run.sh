#!/usr/bin/env bash
# Executor figures on CPU: tokens/s for nam56r-tiny on 1 rank, on 8 thread ranks and on 8 MPI
# processes (tp2·sp·cp2·dp2·ep2), and the executor's own overhead per op on a model so small that
# the kernels cost next to nothing. Usage: bench/runtime/run.sh [BUILD_DIR] [STEPS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build}"
steps="${2:-10}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
compile="$build/bin/shardline-compile"
run="$build/bin/shardline-run"

"$compile" "$root/examples/models/nam56r-tiny.json" --tp 1 --sp=false --cp 1 --dp 1 --ep 1 \
  --emit plan -o "$tmp/n1.slp"
"$compile" "$root/examples/models/nam56r-tiny.json" --tp 2 --sp --cp 2 --dp 2 --ep 2 \
  --emit plan -o "$tmp/n8.slp"
cat > "$tmp/tiny.json" <<'SPEC'
{"name": "tiny", "pattern": "FFFFFFFF", "vocab": 8, "hidden": 8, "seq": 8, "batch": 1,
 "mlp": {"ffn_hidden": 8}}
SPEC
"$compile" "$tmp/tiny.json" --emit plan -o "$tmp/tiny.slp"

echo "nam56r-tiny, 1 rank:";  "$run" "$tmp/n1.slp" --steps "$steps" | grep steps
echo "nam56r-tiny, 8 thread ranks (tp2 sp cp2 dp2 ep2):"; "$run" "$tmp/n8.slp" --steps "$steps" | grep steps
if command -v mpirun > /dev/null; then
  echo "nam56r-tiny, 8 MPI processes (tp2 sp cp2 dp2 ep2):"
  OPENBLAS_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -np 8 \
    "$run" "$tmp/n8.slp" --comm mpi --steps "$steps" | grep steps
fi
echo "overhead (8 MLP blocks of width 8, 1 rank):"; "$run" "$tmp/tiny.slp" --steps "$((steps * 100))" | grep steps
