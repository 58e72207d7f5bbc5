#!/usr/bin/env bash
# The main job: set up, build, and compile the example hybrid model nam56r-tiny (pattern
# AEMEAEMEAEMR) for 8 ranks with tensor parallelism 2 + sequence parallelism, context
# parallelism 2 and expert parallelism 2; print the summary of the sharded program and its report
# (every collective with its bytes per rank), and write the report as JSON and HTML. Then run the
# dense example partitioned on 8 thread ranks and verify it against the single-device run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
cmake --build "$build" -j "${SHARDLINE_JOBS:-2}" --target shardline-compile shardline-opt shardline-run
set -x
"$build/bin/shardline-compile" "$root/examples/models/nam56r-tiny.json" \
  --tp 2 --sp --cp 2 --ep 2 --emit summary
"$build/bin/shardline-compile" "$root/examples/models/nam56r-tiny.json" \
  --tp 2 --sp --cp 2 --ep 2 --emit report \
  --report "$build/nam56r-tiny.report.json" --report-html "$build/nam56r-tiny.report.html"
# The executor runs attention and MLP blocks so far: run the dense example partitioned over 8
# thread ranks (tp2·sp·cp2·ep2) and check it against the single-device run.
"$build/bin/shardline-compile" "$root/examples/models/gpt-dense.json" \
  --tp 2 --sp --cp 2 --ep 2 --emit plan -o "$build/gpt-dense.slp"
"$build/bin/shardline-run" "$build/gpt-dense.slp" --ranks 8 --verify
