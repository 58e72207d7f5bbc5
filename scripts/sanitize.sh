#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: sets up the machine
# (scripts/setup.sh), configures build-asan/ (Debug, SHARDLINE_SANITIZE=ON, clang 22 and lld),
# builds everything and runs every ctest test there, the lit suites, the equivalence matrix and the
# runtime built on its own included; they all run the instrumented binaries of build-asan/.
# Any sanitizer report fails the test that hit it, and so the script. Arguments go to ctest
# (scripts/sanitize.sh -R lit runs the lit suites alone).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_ASAN_BUILD_DIR:-$root/build-asan}"
jobs="${SHARDLINE_JOBS:-2}"

SHARDLINE_BUILD_DIR="$build" "$root/scripts/setup.sh"
cmake "$build" -DSHARDLINE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
cmake --build "$build" -j "$jobs"

# Debian's libMLIR and libLLVM are not instrumented, while LLVM's allocators in the headers we
# compile poison and unpoison memory when built with ASan: memory that uninstrumented library code
# hands back still reads as poisoned to our instrumented code, and ASan reports use-after-poison
# inside MLIR's attribute and type storage. allow_user_poisoning=0 ignores those manual poisonings
# (ASan's own redzones, use-after-free and overflows are still checked).
asan="allow_user_poisoning=0:strict_string_checks=1:detect_stack_use_after_return=1"
asan+=":check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export ASAN_OPTIONS="$asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-22)}"
# OpenMPI leaves memory allocated at exit. The suppressions name its libraries only, and they can
# match only when a leak's allocation stack reaches into them: OpenMPI is built without frame
# pointers, so ASan's fast unwinder stops after one frame, often a bogus one. The full unwinder
# costs time on every allocation: mpirun hands it to the ranks it launches, and to them alone.
export OMPI_MCA_mca_base_env_list="ASAN_OPTIONS=$asan:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$root/scripts/sanitize-mpi.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
