#!/bin/sh
# How far sl-elide-gathers is from the brute-force optimum: runs
# ElideProperty.Report of test/Unit/ElidePropertyTest.cpp (which only prints,
# never fails) on its 400 rich programs and its 300 one-kind programs and
# prints one line per set: programs at, above and below the Tree optimum
# (relayout trees whose nodes are needed layouts, what emitRelayout writes),
# at the Steiner optimum (relayout trees through any layouts), the total
# bytes of the inputs, the outputs and both optima, their ratios, and the
# worst output / Steiner ratio with its seed (rerun that program with
# ELIDE_PROPERTY_SEED=<seed>). Twice: the pass as it runs (with its exact
# search), then with the moves alone (ELIDE_PROPERTY_EXACT=0).
#
# Usage: bench/compile/elide_quality.sh [BUILD_DIR]   (default: build)
set -eu
build=${1:-build}
tests="$build/bin/shardline-unit-tests"
if [ ! -x "$tests" ]; then
  echo "elide_quality.sh: $tests not found: build the target shardline-unit-tests first" >&2
  exit 1
fi
report() {
  out=$(ELIDE_PROPERTY_REPORT=1 ELIDE_PROPERTY_EXACT=$1 "$tests" --gtest_filter=ElideProperty.Report) || {
    echo "$out" >&2
    echo "elide_quality.sh: ElideProperty.Report failed" >&2
    exit 1
  }
  lines=$(echo "$out" | grep -E '^(rich|one kind): ') || {
    echo "$out" >&2
    echo "elide_quality.sh: ElideProperty.Report printed no figures" >&2
    exit 1
  }
  echo "$lines" | sed "s/^/$2: /"
}
report 1 "the pass"
report 0 "the moves alone"
