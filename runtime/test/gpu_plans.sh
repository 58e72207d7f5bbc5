# Sourced by the GPU test scripts (cuda_model_test.sh, cuda_nccl_test.sh): `plan ARGS... -o FILE`
# compiles a plan with $compile, as `"$compile" ARGS... -o FILE` does, unless the machine that
# runs the test has no compiler (a GPU machine lent without LLVM/MLIR): with SHARDLINE_PLAN_DIR
# set it takes FILE's name from that folder instead, where scripts/gpu-bundle.sh put the plans
# it compiled beforehand. With SHARDLINE_PLAN_SAVE set it compiles and also keeps a copy of
# each plan in that folder, and `saving` is true: the scripts then stop before running anything.
saving=false
[ -n "${SHARDLINE_PLAN_SAVE:-}" ] && saving=true
plan() {
  out=
  prev=
  for arg in "$@"; do
    [ "$prev" = "-o" ] && out=$arg
    prev=$arg
  done
  if [ -z "$out" ]; then
    echo "plan: no -o FILE in: $*" >&2
    return 1
  fi
  if [ -n "${SHARDLINE_PLAN_DIR:-}" ]; then
    if [ ! -f "$SHARDLINE_PLAN_DIR/${out##*/}" ]; then
      echo "plan: $SHARDLINE_PLAN_DIR holds no ${out##*/} (run scripts/gpu-bundle.sh again)" >&2
      return 1
    fi
    cp "$SHARDLINE_PLAN_DIR/${out##*/}" "$out"
  else
    "$compile" "$@"
  fi
  if [ -n "${SHARDLINE_PLAN_SAVE:-}" ]; then
    cp "$out" "$SHARDLINE_PLAN_SAVE/${out##*/}"
  fi
}
