#!/usr/bin/env bash
# The GPU benchmark suite: <= 10 minutes on one H100, most important first, each item under its
# own timeout (a timed-out item loses only itself), everything under $OUT.
#
#   OUT=/path/to/results bash benchmarks/gpu_suite.sh            # on the GPU machine
#   OUT=/tmp/suite bash benchmarks/gpu_suite.sh --tiny           # tiny sizes: checks it runs (CPU)
#
# Writes two files, $OUT/RESULTS.md (text for benchmarks/RESULTS.md: device string, results, every
# item's table, the decisions the rules imply; rewritten after each item, so a suite cut short
# still leaves its finished items) and $OUT/status.jsonl. The raw item logs go to $SUITE_LOGS
# (default: a temporary directory), profiles to $SUITE_TRACE (default: none). Run it from the
# repository root with the package's dependencies installed (jax with CUDA, ml_collections:
# BUILD.md, Install); it stops at once, with the missing module named, when they are not.
set -u
OUT=${OUT:?set OUT to a directory for the results}
TINY=${SUITE_TINY:-0}
[[ "${1:-}" == "--tiny" ]] && TINY=1
PY=${PYTHON:-python}
LOGS=${SUITE_LOGS:-$(mktemp -d)}
mkdir -p "$OUT" "$LOGS"
: > "$OUT/status.jsonl"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import jax, flax, optax, ml_collections, absl, sparsejax" 2>"$LOGS/preflight.log"; then
  echo "gpu_suite: cannot import the package's dependencies: $(tail -n 1 "$LOGS/preflight.log")" >&2
  exit 1
fi
export JAX_COMPILATION_CACHE_DIR="$LOGS/jax_cache" XLA_PYTHON_CLIENT_PREALLOCATE=false

item() {  # item NAME TIMEOUT_S command...
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  local start=$SECONDS status=ok
  echo "== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  case $? in 0) ;; 124|137) status=timeout ;; *) status=failed ;; esac
  echo "{\"item\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - start))}" \
      >> "$OUT/status.jsonl"
  $PY benchmarks/gpu/summarize.py "$OUT" "$LOGS" > "$OUT/RESULTS.md.tmp" && \
      mv "$OUT/RESULTS.md.tmp" "$OUT/RESULTS.md"
  grep -E '^[a-z_]+: ' "$LOGS/$name.log" | tail -n 1
}

SCALE=1
if [[ $TINY == 1 ]]; then  # every item at toy sizes, slower limits: minutes on a CPU
  SCALE=${SUITE_TIMEOUT_SCALE:-6}; E=1; B=2; ROWS=64; WIDTHS=64,128; N=256; MB=8; R=2; ATT="--batch=2 --seq=32 --heads=2"
  STEP="--d_model=32 --n_layer=2 --seq=32 --vocab=64"; PRUNE="--tasks=2 --steps=2 --repeats=1"
  TOPK="--sizes=4096 --repeats=2"
else
  E=4; B=64; ROWS=65536; WIDTHS=1024,4096; N=8192; MB=2048; R=10; ATT="--batch=64"
  STEP="--e=4"; PRUNE="--tasks=20 --steps=20"; TOPK="--sizes=4194304,16777216 --repeats=5"
fi

item 1_calibrate 30 $PY benchmarks/gpu/calibrate.py --n=$N --copy_mb=$MB --repeats=$R
PEAK=$(grep -E '^calibrate_matmul_tflops: ' "$LOGS/1_calibrate.log" | awk '{print $2}')
item 2_step 210 $PY benchmarks/step.py $STEP --batch=$B --dtype=bfloat16 --remat=True \
    --repeats=$R --peak_tflops=${PEAK:-0}
item 3_abstopk 70 $PY benchmarks/gpu/abstopk_bench.py --rows=$ROWS --widths=$WIDTHS --repeats=$R
item 4_attention 40 $PY benchmarks/gpu/attention_bench.py $ATT --repeats=$R
item 5_projection 50 $PY benchmarks/gpu/projection_bench.py --e=$E --candidates=7,15 --repeats=$R
item 6_prune_vmap 60 $PY benchmarks/prune_vmap.py $PRUNE
item 7_topk 40 $PY benchmarks/topk.py $TOPK
item 8_profile 60 $PY benchmarks/gpu/profile_step.py --profile_e=$E --profile_batch=$((B / 2)) \
    --steps=$R ${SUITE_TRACE:+--out="$SUITE_TRACE"}
item 9_scan 40 $PY benchmarks/step.py $STEP --batch=$B --dtype=bfloat16 --remat=True \
    --repeats=$R --scan --configs=dense,"sparse weights + AbsTopK x8" --peak_tflops=${PEAK:-0}

echo "results: $OUT/RESULTS.md (item logs: $LOGS)"
