#!/usr/bin/env bash
# Builds every *-fuzzer target (fuzz/, runtime/fuzz/) with libFuzzer, ASan and UBSan in a build
# directory of its own and runs each for SECONDS on its corpus, one after the other.
#
#   scripts/fuzz.sh [SECONDS] [NAME...]     # default: 60 seconds, every fuzzer
#
# Seeds are read from fuzz/corpus/<name>/ (or runtime/fuzz/corpus/<name>/); what a run learns goes to
# build-fuzz/corpus/<name>/, crashing and hanging inputs to build-fuzz/artifacts/<name>/.
# docs/reliability.md ("Fuzzing") has the measured runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${1:-60}"
[ $# -gt 0 ] && shift
case "$seconds" in '' | *[!0-9]*)
  echo "usage: scripts/fuzz.sh [SECONDS] [NAME...]" >&2
  exit 2
  ;;
esac

# libFuzzer and the sanitizer runtimes of clang 22 come with libclang-rt-22-dev (Debian's
# libfuzzer-22-dev only adds a libFuzzer for other compilers); scripts/setup.sh installs the rest.
need=()
for p in clang-22 libclang-rt-22-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "fuzz: missing ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi

# Our code is instrumented; Debian's libMLIR and libLLVM are not.
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -g"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DSHARDLINE_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fuse-ld=lld -fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS=-fuse-ld=lld \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir >/dev/null
fi

all=$(cmake --build "$build" --target help | sed -n 's/^\([A-Za-z0-9_.-]*-fuzzer\):.*/\1/p' | sort -u)
if [ -z "$all" ]; then
  echo "fuzz: no *-fuzzer target in $build" >&2
  exit 1
fi
names=("$@")
[ ${#names[@]} -gt 0 ] || mapfile -t names <<<"$all"
for n in "${names[@]}"; do
  grep -qx -- "$n" <<<"$all" || { echo "fuzz: no target $n (have: $(echo $all))" >&2; exit 2; }
done
cmake --build "$build" -j "${SHARDLINE_FUZZ_JOBS:-2}" --target "${names[@]}"

# Uninstrumented libMLIR allocates and frees what instrumented code touches:
# - allow_user_poisoning=0: LLVM's allocator headers, instrumented in our code, poison storage that
#   libMLIR's uninstrumented copies hand out again, which reads as use-after-poison;
# - detect_container_overflow=0: std containers are annotated on one side of the boundary only.
# Options given in the environment come after these and win.
export ASAN_OPTIONS="allow_user_poisoning=0:detect_container_overflow=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

status=0
summary=()
for n in "${names[@]}"; do
  seeds=""
  for d in "$root/fuzz/corpus/$n" "$root/runtime/fuzz/corpus/$n"; do
    [ -d "$d" ] && seeds="$d"
  done
  work="$build/corpus/$n" artifacts="$build/artifacts/$n/"
  mkdir -p "$work" "$artifacts"
  log="$build/$n.log"
  # Only this run's findings count: the directory keeps earlier runs' too.
  stamp="$build/$n.started"
  touch "$stamp"
  echo "fuzz: $n for ${seconds}s (seeds: ${seeds:-none}, log: $log)"
  set +e
  # -timeout: an input that runs 10 s is a hang; -rss_limit_mb: one that needs 4 GiB is a bug too.
  "$build/bin/$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "$work" ${seeds:+"$seeds"} >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f -newer "$stamp" | wc -l)
  summary+=("$n: ${execs:-?} runs in ${seconds}s, exit $rc, $crashes new crashing or hanging inputs in $artifacts")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    grep -m1 -A12 -E "ERROR: |runtime error|==ERROR|deadly signal|timeout" "$log" || tail -20 "$log"
  fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
