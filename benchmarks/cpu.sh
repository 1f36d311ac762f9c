#!/usr/bin/env bash
# The CPU measurements on docs/performance.md (and the compilation cache's, on docs/gpu.md), in one command
# (run it on an idle machine):
#     SUBLIMINAL_MLP_DATA=/path/to/data benchmarks/cpu.sh [LOG_DIR] [protocol|step|theory|alignment|cache|memory ...]
# Each part writes LOG_DIR/<part>.log (default LOG_DIR: ./cpu-logs); docs/gen_tables.py builds the
# page's tables from the committed logs. With no part named, all five but memory run (protocol measures it too).
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-cpu-logs}"; shift || true
parts=("${@:-protocol step theory alignment cache}")
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
{ grep -m1 "model name" /proc/cpuinfo || uname -m; echo "cores: $(python -c 'import os; print(len(os.sched_getaffinity(0)))')"; uptime; } \
    | tee "$logs/machine.log"
for part in ${parts[*]}; do
    case "$part" in
        protocol)  python benchmarks/bench_protocol.py 2>&1 | tee "$logs/protocol.log" ;;
        memory)    python benchmarks/bench_protocol.py --runs 0 --scaling --memory-runs 100 2>&1 | tee "$logs/memory.log" ;;
        step)      python benchmarks/bench_step.py 2>&1 | tee "$logs/step.log" ;;
        theory)    python benchmarks/bench_theory.py 2>&1 | tee "$logs/theory.log" ;;
        alignment) python benchmarks/bench_alignment.py 2>&1 | tee "$logs/alignment.log" ;;
        cache)     python benchmarks/bench_compile_cache.py 2>&1 | tee "$logs/cache.log" ;;
        *) echo "unknown part: $part" >&2; exit 2 ;;
    esac
done
