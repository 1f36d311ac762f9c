#!/usr/bin/env bash
# The GPU measurements recorded in the docs, in one command, on a machine with an NVIDIA GPU:
#     pip install -e '.[cuda,test]'
# (On a machine whose image already has a CUDA jax outside pyproject's bounds and no network, as the lent
# H100s had: this script installs the checkout with `pip install --no-deps --no-build-isolation -e .`, and
# puts it on PYTHONPATH. Installed, the library knows its version, which the figures pipeline's tests compare
# with the committed records'.)
#     SUBLIMINAL_MLP_DATA=/path/to/data benchmarks/gpu.sh [LOG_DIR] [tests|todo[:i/n]|protocol|batches|theory|cache ...]
# Each part writes LOG_DIR/<part>.log (default LOG_DIR: ./gpu-logs). With no part named, all but todo run.
# `todo:i/n` runs shard i of n of the tests that no log in benchmarks/gpu-logs/ names with an outcome yet
# (benchmarks/gpu_tests_todo.py), spread test by test (--dist load): the suite does not fit in one
# 10-minute command on a fresh GPU machine. The tests' parts print each failure's traceback as it comes
# (benchmarks/failures_now.py): a log cut off by a time limit still holds them.
# GPU_SH_TEST_LIMIT_S=N stops a tests part after N seconds (SIGINT: pytest prints what it has, every outcome
# so far named) so that a command under a time limit (the lent machines': 10 minutes) still brings its log back.
# GPU_SH_WORKERS=N sets the test processes sharing the GPU (default: 14 for tests, 15 for todo; fewer for the
# heaviest tests, which compile slowly when many processes compile and autotune at once); GPU_SH_PER_TEST_S=N
# stops any one test after N seconds and prints its threads' stacks (pytest-timeout, if installed: a slow test
# and a hung one are then told apart).
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-gpu-logs}"; shift || true
parts=("${@:-tests protocol batches theory cache}")
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's package, installed or not
python -c "from importlib.metadata import version; version('subliminal-mlp')" 2>/dev/null \
    || python -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || echo "gpu.sh: could not install the checkout: its version is unknown, and the figures pipeline" \
            "takes every committed record for out of date" >&2
# Several test processes share one GPU: each allocates what it needs instead of 75% of the memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
limit=()
if [ -n "${GPU_SH_TEST_LIMIT_S:-}" ]; then limit=(timeout -k 20 -s INT "$GPU_SH_TEST_LIMIT_S"); fi
pytest_opts=(-v --dist load -p no:cacheprovider -p benchmarks.failures_now)
if [ -n "${GPU_SH_PER_TEST_S:-}" ]; then pytest_opts+=(--timeout "$GPU_SH_PER_TEST_S"); fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$logs/device.log"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$logs/device.log"
python -c "from importlib.metadata import version as v
print('subliminal-mlp', v('subliminal-mlp'))" 2>&1 | tail -1 | tee -a "$logs/device.log"  # installed, or why not
for part in ${parts[*]}; do
    case "$part" in
        tests)    "${limit[@]}" python -m pytest -n "${GPU_SH_WORKERS:-14}" "${pytest_opts[@]}" 2>&1 | tee "$logs/tests.log" ;;
        todo*)    shard="${part#todo}"; shard="${shard#:}"; shard="${shard:-1/1}"; name="todo-${shard/\//-of-}"
                  if ! python benchmarks/gpu_tests_todo.py benchmarks/gpu-logs/*/tests*.log --shard "$shard" \
                          > "$logs/$name.txt" 2> "$logs/$name.err"; then
                      { echo "todo $shard: the tests could not be listed:"; cat "$logs/$name.err"; } \
                          | tee "$logs/tests-$name.log"
                      continue
                  fi
                  cat "$logs/$name.err"
                  mapfile -t ids < <(grep -v '^[[:space:]]*$' "$logs/$name.txt")
                  if [ "${#ids[@]}" -eq 0 ]; then  # pytest with no test named would run the whole suite
                      echo "todo $shard: no test left to run" | tee "$logs/tests-$name.log"
                  else
                      "${limit[@]}" python -m pytest -n "${GPU_SH_WORKERS:-15}" "${pytest_opts[@]}" "${ids[@]}" 2>&1 \
                          | tee "$logs/tests-$name.log"
                  fi ;;
        protocol) python benchmarks/bench_protocol.py --runs 100 --repeats 2 --scaling --memory-runs 0 \
                      2>&1 | tee "$logs/protocol.log" ;;
        batches)  python benchmarks/bench_protocol.py --runs 100 --repeats 1 --scaling --memory-runs 0 \
                      --run-batches 100 32 16 4 1 2>&1 | tee "$logs/batches.log" ;;
        theory)   python benchmarks/bench_theory.py 2>&1 | tee "$logs/theory.log" ;;
        cache)    python benchmarks/bench_compile_cache.py --runs 100 2>&1 | tee "$logs/cache.log" ;;
        *) echo "unknown part: $part" >&2; exit 2 ;;
    esac
done
