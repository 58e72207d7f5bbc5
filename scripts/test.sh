#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (packages, configure), builds everything and runs the whole
# test suite under ctest: C++ unit tests, the lit suites, the equivalence matrix and the runtime
# built on its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
cmake --build "$build" -j "${SHARDLINE_JOBS:-2}"
ctest --test-dir "$build" --output-on-failure -j "${SHARDLINE_JOBS:-2}"
