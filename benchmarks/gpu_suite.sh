#!/usr/bin/env bash
# The GPU benchmark suite: <= 10 minutes on one H100, most important first, each item under its
# own timeout (a timed-out item loses only itself), everything under $OUT.
#
#   OUT=/path/to/results bash benchmarks/gpu_suite.sh            # on the GPU machine
#   OUT=/tmp/suite bash benchmarks/gpu_suite.sh --tiny           # tiny sizes: checks it runs (CPU)
#
# Writes $OUT/<item>.log, $OUT/status.jsonl, $OUT/trace/ (profiles) and $OUT/RESULTS.md (text for
# benchmarks/RESULTS.md: device string, results, the decisions the rules imply). Run it from the
# repository root with the package's dependencies installed (jax with CUDA: BUILD.md, Install).
set -u
OUT=${OUT:?set OUT to a directory for the results}
TINY=${SUITE_TINY:-0}
[[ "${1:-}" == "--tiny" ]] && TINY=1
PY=${PYTHON:-python}
mkdir -p "$OUT"
: > "$OUT/status.jsonl"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR="$OUT/jax_cache" XLA_PYTHON_CLIENT_PREALLOCATE=false

item() {  # item NAME TIMEOUT_S command...
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  local start=$SECONDS status=ok
  echo "== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  case $? in 0) ;; 124|137) status=timeout ;; *) status=failed ;; esac
  echo "{\"item\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - start))}" \
      >> "$OUT/status.jsonl"
  grep -E '^[a-z_]+: ' "$OUT/$name.log" | tail -n 1
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
PEAK=$(grep -E '^calibrate_matmul_tflops: ' "$OUT/1_calibrate.log" | awk '{print $2}')
item 2_step 210 $PY benchmarks/step.py $STEP --batch=$B --dtype=bfloat16 --remat=True \
    --repeats=$R --peak_tflops=${PEAK:-0}
item 3_abstopk 70 $PY benchmarks/gpu/abstopk_bench.py --rows=$ROWS --widths=$WIDTHS --repeats=$R
item 4_attention 40 $PY benchmarks/gpu/attention_bench.py $ATT --repeats=$R
item 5_projection 50 $PY benchmarks/gpu/projection_bench.py --e=$E --candidates=7,15 --repeats=$R
item 6_prune_vmap 60 $PY benchmarks/prune_vmap.py $PRUNE
item 7_topk 40 $PY benchmarks/topk.py $TOPK
item 8_profile 60 $PY benchmarks/gpu/profile_step.py --profile_e=$E --profile_batch=$((B / 2)) \
    --steps=$R --out="$OUT/trace"
item 9_scan 40 $PY benchmarks/step.py $STEP --batch=$B --dtype=bfloat16 --remat=True \
    --repeats=$R --scan --configs=dense,"sparse weights + AbsTopK x8" --peak_tflops=${PEAK:-0}

$PY benchmarks/gpu/summarize.py "$OUT" > "$OUT/RESULTS.md"
echo "results: $OUT/RESULTS.md"
