#!/usr/bin/env bash
# The accelerator one-shot (issue 17): every GPU measurement in one command.
#
#   bash benchmarks/device_check.sh --cpu-smoke   # here, on CPU: every step at tiny sizes (~7 min)
#   bash benchmarks/device_check.sh               # on the GPU machine: the real sizes (< 10 min)
#
# On the device machine (see ../.library/device/README.md): the repo travels, ../shared does
# not. Before the call, copy the data and the wheels the image lacks into ignored folders:
#   mkdir -p .devdata && cp -r ../shared/data/mnist .devdata/      # carry: .devdata
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 -d .whl ml_collections tensorboardX \
#     tensorflow-datasets array-record etils dm-tree promise simple-parsing \
#     immutabledict toml wrapt termcolor                                  # carry: .whl
# then run `bash benchmarks/device_check.sh` with OUT set by the tool: every JSON lands in $OUT
# (at most 8 files come back) and in benchmarks/results/ otherwise. Each step has its own time
# limit and a failed step does not stop the others.
#
# Written: train_throughput_gpu.json (mlp + paper_cnn at 1/4/16/64 seeds: engine vmap, map,
# unroll; JAX per-seed loop; PyTorch loop and torch.func.vmap), sequence_throughput_gpu.json
# (the whole sequence_phases experiment against the hand-written loop at 2 and 16 seeds x
# 1,000 steps, and the training step's profile), eval_overhead_10k_gpu.json,
# mi_bench_gpu.json (N up to 10^6, K = 2, 10, 100), roofline_gpu.json (float32 and bfloat16
# peaks) and lp_mnist_mlp_16seeds_gpu.json (the full linear_phase:mnist_mlp, 16 seeds). Each
# records its backend and device kind; the --cpu-smoke files end in _cpusmoke.json.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
MODE=${1:-full}
case "$MODE" in full|--cpu-smoke) ;; *) echo "usage: $0 [--cpu-smoke]" >&2; exit 2 ;; esac
export PYTHONUNBUFFERED=1
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .devdata ] && export SGD_PHASES_SHARED_DATA="$PWD/.devdata"

FAILED=()
step() {  # step NAME SECONDS CMD...: runs CMD under a time limit, records a failure, goes on
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - t))s"
  [ "$rc" -eq 0 ] || FAILED+=("$name(rc=$rc)")
}

if [ "$MODE" = --cpu-smoke ]; then
  export JAX_PLATFORMS=cpu
  SUF=cpusmoke
  step train_throughput 420 "$PY" -m benchmarks.train_throughput --quick --models mlp,paper_cnn \
    --seeds 1,2 --variants engine_vmap,engine_map,engine_unroll,jax_loop,torch_loop,torch_vmap \
    --out "$DEST/train_throughput_$SUF.json"
  step sequence_throughput 300 "$PY" -m benchmarks.sequence_throughput --quick --no-bare \
    --out "$DEST/sequence_throughput_$SUF.json"
  step eval_overhead 120 "$PY" -m benchmarks.eval_overhead --quick \
    --out "$DEST/eval_overhead_10k_$SUF.json"
  step mi_bench 120 "$PY" -m benchmarks.mi_bench --quick --repeats 3 \
    --out "$DEST/mi_bench_$SUF.json"
  step roofline 120 "$PY" -m benchmarks.roofline --quick --dtypes float32,bfloat16 \
    --out "$DEST/roofline_$SUF.json"
  step linear_phase 240 "$PY" -m benchmarks.run_summary --out "$DEST/lp_mnist_mlp_$SUF.json" -- \
    --config=experiments/linear_phase.py:mnist_mlp,quick --config.num_seeds=2
else
  "$PY" -c "import jax, sys; b = jax.default_backend(); print('backend', b, jax.devices()); \
sys.exit(0 if b in ('gpu', 'tpu') else 'no accelerator: use --cpu-smoke')" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  SUF=gpu
  step train_throughput 220 "$PY" -m benchmarks.train_throughput --models mlp,paper_cnn \
    --seeds 1,4,16,64 --rounds 3 \
    --variants engine_auto,engine_vmap,engine_map,engine_unroll,jax_loop,torch_loop,torch_vmap \
    --out "$DEST/train_throughput_$SUF.json"
  step sequence_throughput 240 "$PY" -m benchmarks.sequence_throughput --cells 2x1000,16x1000 \
    --rounds 1 --no-bare --out "$DEST/sequence_throughput_$SUF.json"
  step eval_overhead 60 "$PY" -m benchmarks.eval_overhead --steps 10000 --seeds 16 --rounds 1 \
    --out "$DEST/eval_overhead_10k_$SUF.json"
  step mi_bench 60 "$PY" -m benchmarks.mi_bench --repeats 5 --sklearn-pairs 16 \
    --out "$DEST/mi_bench_$SUF.json"
  step roofline 40 "$PY" -m benchmarks.roofline --seeds 1,4,16,64 --matmul-size 8192 \
    --dtypes float32,bfloat16 --out "$DEST/roofline_$SUF.json"
  step linear_phase 90 "$PY" -m benchmarks.run_summary --out "$DEST/lp_mnist_mlp_16seeds_$SUF.json" \
    -- --config=experiments/linear_phase.py:mnist_mlp --config.num_seeds=16
fi
ls -l "$DEST"/*_"$SUF".json 2>/dev/null
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "failed steps: ${FAILED[*]}"
  exit 1
fi
echo "all steps passed"
