#!/bin/sh
# bench/sweep.sh BUILD: what a reclaim sweep costs (issue 21), as markdown.
# Runs build/bench/sweep under build/libdangless.so: sweep time per GiB
# scanned (live heap, the program's own anonymous memory), per stopped
# thread, and what sweeps add to a malloc+free loop under alias_space=64M.
# QUICK=1 makes the sizes smaller.
set -eu
build=${1:-build}
so=$build/libdangless.so
bin=$build/bench/sweep
q=${QUICK:-0}
run() { LD_PRELOAD=$so DANGLESS_OPTIONS=${OPTS:-} "$bin" "$@"; }
echo "# Sweep cost ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), library at $(git log -1 --format=%h -- libdangless 2>/dev/null || echo '?'))"
echo
echo "Each row: 5 or 9 sweeps (dangless_reclaim), each after 2 MiB of objects were freed."
echo
echo "| what | size | best ms | mean ms | MiB scanned | s per GiB scanned | threads stopped |"
echo "|---|---|---|---|---|---|---|"
if [ "$q" = 1 ]; then heaps="16 64"; roots="64"; threads="1 8"; else heaps="16 64 256"; roots="64 512"; threads="1 4 16 64"; fi
for h in $heaps; do run heap "$h"; done
for m in $roots; do run roots "$m"; done
for t in $threads; do run threads "$t"; done
echo
echo "malloc+free of 64 B with and without a cap that forces sweeps:"
echo
n=200000; [ "$q" = 1 ] && n=50000
run churn $n
OPTS=alias_space=64M run churn $n
