#!/usr/bin/env bash
# The main job: set up, build, and compile the example hybrid model nam56r-tiny (pattern
# AEMEAEMEAEMR) for 8 ranks with tensor parallelism 2 + sequence parallelism, context
# parallelism 2 and data parallelism 2, with expert parallelism 2 folded onto the tp ranks as in
# Megatron Core; print the summary of the sharded program and its report
# (every collective with its bytes per rank), and write the report as JSON and HTML. Then run it
# partitioned on 8 thread ranks and verify it against the single-device run. Last, train it for
# 20 steps on the same 8 ranks on the byte dataset, beside single-device training, with its
# training report, the report of the run and the loss curve (scripts/train-example.sh; SHARDLINE_TRAIN_STEPS=200 for the
# README's longer run). Then train it in bf16 as Megatron's --bf16 does (f32 main copies of the
# weights beside f32 AdamW moments) for as many steps on the same ranks and data, and print its
# last loss beside the f32 run's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${SHARDLINE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
cmake --build "$build" -j "${SHARDLINE_JOBS:-2}" --target shardline-compile shardline-opt shardline-run \
  shardline-byte-dataset
set -x
"$build/bin/shardline-compile" "$root/examples/models/nam56r-tiny.json" \
  --tp 2 --sp --cp 2 --dp 2 --ep 2 --emit summary
"$build/bin/shardline-compile" "$root/examples/models/nam56r-tiny.json" \
  --tp 2 --sp --cp 2 --dp 2 --ep 2 --emit report \
  --report "$build/nam56r-tiny.report.json" --report-html "$build/nam56r-tiny.report.html"
# Run it: the same model on 8 ranks that are threads, checked against the single-device run of
# the same model and seed, with the bytes each rank sent beside the report's.
"$build/bin/shardline-compile" "$root/examples/models/nam56r-tiny.json" \
  --tp 2 --sp --cp 2 --dp 2 --ep 2 --emit plan -o "$build/nam56r-tiny.slp"
"$build/bin/shardline-run" "$build/nam56r-tiny.slp" --ranks 8 --verify
# Train: forward, backward and AdamW in one sharded program, on the bytes of a text Debian ships;
# every step's loss and the final weights checked against single-device training.
set +x
"$root/scripts/train-example.sh" "${SHARDLINE_TRAIN_STEPS:-20}"
"$root/scripts/train-example.sh" --bf16 "${SHARDLINE_TRAIN_STEPS:-20}"
