#!/bin/sh
# bench/sweep.sh BUILD: what a reclaim sweep costs (issue 21), as markdown.
# Runs build/bench/sweep under build/libdangless.so: sweep time per GiB
# scanned (live heap, the program's own anonymous memory), per stopped
# thread, what sweeps add to a malloc+free loop under alias_space=64M,
# and to real programs (python3, lua, perl, gcc) under a cap against none.
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
echo
echo "Real programs (host backend, strict), each run alone and then under a"
echo "cap that forces sweeps; the output must be the same both ways:"
echo
echo "| program | alias space handed out | default s | capped s | cap | sweeps | reclaimed | slowdown |"
echo "|---|---|---|---|---|---|---|---|"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a C file of many small functions for gcc (no input files needed)
i=0; while [ $i -lt 400 ]; do
	echo "int f$i(int *v, int n) { int s = $i; for (int k = 0; k < n; k++) s += v[k] * (k ^ $i); return s; }"
	i=$((i + 1))
done > "$tmp/gen.c"
s=1; [ "$q" = 1 ] && s=0.3
# name, cap, command.  The cap forces sweeps but must hold what the program
# keeps: reuse is per 2 MiB segment, and one live object keeps its segment
# (lua ran out at 64M, python3 at 1G: its survivors are scattered).
# a stats=1 counter, summed over the processes (gcc's driver, cc1, as)
sum_stat() { sed -n "s/^dangless:   $1 = \([0-9]*\).*/\1/p" "$2" | awk '{ t += $1 } END { printf "%.0f\n", t }'; }
real() {
	name=$1 cap=$2; shift 2
	t0=$(date +%s.%N)
	LD_PRELOAD=$so DANGLESS_OPTIONS=stats=1 PYTHONMALLOC=malloc "$@" >"$tmp/out0" 2>"$tmp/err0" || { echo "| $name | failed | | | | | | |"; return; }
	t1=$(date +%s.%N)
	if ! LD_PRELOAD=$so DANGLESS_OPTIONS=stats=1:alias_space=$cap PYTHONMALLOC=malloc "$@" >"$tmp/out1" 2>"$tmp/err1"; then
		why="capped run failed"
		grep -q "is used up" "$tmp/err1" && why="ran out: live objects and pinned ranges fill the cap"
		echo "| $name | $(( $(sum_stat alias_bytes_used "$tmp/err0") >> 20 )) MiB | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | $why | $cap | | | |"
		return
	fi
	t2=$(date +%s.%N)
	cmp -s "$tmp/out0" "$tmp/out1" || { echo "| $name | outputs differ | | | | | | |"; return; }
	awk -v n="$name" -v cap="$cap" -v a="$t0" -v b="$t1" -v c="$t2" \
	    -v used="$(sum_stat alias_bytes_used "$tmp/err0")" -v sw="$(sum_stat reclaims "$tmp/err1")" \
	    -v rec="$(sum_stat reclaimed_bytes "$tmp/err1")" 'BEGIN {
		printf "| %s | %.0f MiB | %.2f | %.2f | %s | %d | %.0f MiB | %.2fx |\n",
		       n, used / 1048576, b - a, c - b, cap, sw, rec / 1048576, (c - b) / (b - a) }'
}
real python3 2G /usr/bin/python3 "$(dirname "$0")/real/alloc.py" "$(awk -v s=$s 'BEGIN{print 0.33*s}')"
real lua 256M /usr/bin/lua5.4 "$(dirname "$0")/real/binary_trees.lua" "$([ "$q" = 1 ] && echo 10 || echo 12)"
real perl 2G /usr/bin/perl "$(dirname "$0")/real/hash_churn.pl" "$(awk -v s=$s 'BEGIN{print 0.5*s}')"
real gcc 1G /usr/bin/gcc -O2 -c "$tmp/gen.c" -o "$tmp/gen.o"
