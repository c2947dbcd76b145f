#!/bin/sh
# bench/sweep.sh BUILD: what a reclaim sweep costs (issue 21), as markdown.
# Runs build/bench/sweep under build/libdangless.so: sweep time per GiB
# scanned (live heap, the program's own anonymous memory), per stopped
# thread, what sweeps add to a malloc+free loop under alias_space=64M,
# and to real programs (python3, lua, perl, gcc) under the smallest cap
# they run under, against none.
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
echo "Real programs (host backend, strict): each run once as it is, then under"
echo "the smallest cap (a power of two, from the one over the live peak of the"
echo "first run, at least 256 MiB) under which it runs to the end within 6x its"
echo "time with the same output.  The live peak (alias_space_live_peak, the most"
echo "alias space live segments held at once, of one process) is the least cap"
echo "that could hold the program; smaller caps, more sweeps:"
echo
echo "| program | alias space handed out | live peak | default s | smallest cap | capped s | sweeps | reclaimed | slowdown | caps that failed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a C file of many small functions for gcc (no input files needed)
i=0; while [ $i -lt 400 ]; do
	echo "int f$i(int *v, int n) { int s = $i; for (int k = 0; k < n; k++) s += v[k] * (k ^ $i); return s; }"
	i=$((i + 1))
done > "$tmp/gen.c"
s=1; [ "$q" = 1 ] && s=0.3
# a stats=1 counter, summed over the processes (gcc's driver, cc1, as)
sum_stat() { sed -n "s/^dangless:   $1 = \([0-9]*\).*/\1/p" "$2" | awk '{ t += $1 } END { printf "%.0f\n", t }'; }
max_stat() { sed -n "s/^dangless:   $1 = \([0-9]*\).*/\1/p" "$2" | awk '$1 > m { m = $1 } END { printf "%.0f\n", m }'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# A cap must hold what the program keeps live (a page of alias space per
# small object) and the 2 MiB segments that one live or still pointed-to
# object keeps from reuse; under it the run ends in a report.
real() {
	name=$1; shift
	t0=$(now)
	LD_PRELOAD=$so DANGLESS_OPTIONS=stats=1 PYTHONMALLOC=malloc "$@" >"$tmp/out0" 2>"$tmp/err0" ||
		{ echo "| $name | failed without a cap | | | | | | | | |"; return; }
	t1=$(now)
	base=$(secs "$t0" "$t1")
	used=$(( $(sum_stat alias_bytes_used "$tmp/err0") >> 20 ))
	peak=$(( $(max_stat alias_space_live_peak "$tmp/err0") >> 20 ))
	limit=$(awk -v b="$base" 'BEGIN { printf "%d", b * 6 + 10 }')
	cap=256 failed=""
	while [ $cap -lt $peak ]; do cap=$((cap * 2)); done
	while [ $cap -le 16384 ]; do
		t1=$(now)
		rc=0
		LD_PRELOAD=$so DANGLESS_OPTIONS=stats=1:alias_space=${cap}M PYTHONMALLOC=malloc \
			timeout "$limit" "$@" >"$tmp/out1" 2>"$tmp/err1" || rc=$?
		if [ $rc = 0 ]; then
			t2=$(now)
			cmp -s "$tmp/out0" "$tmp/out1" || { echo "| $name | outputs differ under ${cap}M | | | | | | | | |"; return; }
			awk -v n="$name" -v used="$used" -v peak="$peak" -v base="$base" -v cap="$cap" \
			    -v t="$(secs "$t1" "$t2")" -v sw="$(sum_stat reclaims "$tmp/err1")" \
			    -v rec="$(sum_stat reclaimed_bytes "$tmp/err1")" -v f="${failed:-none}" 'BEGIN {
				printf "| %s | %d MiB | %d MiB | %.2f | %d MiB | %.2f | %d | %.0f MiB | %.2fx | %s |\n",
				       n, used, peak, base, cap, t, sw, rec / 1048576, t / base, f }'
			return
		fi
		if grep -q "is used up" "$tmp/err1"; then
			failed="$failed${failed:+, }${cap}M ran out"
		elif [ $rc = 124 ]; then
			failed="$failed${failed:+, }${cap}M over ${limit} s"
		else
			echo "| $name | $used MiB | $peak MiB | $base | | failed under ${cap}M: $(grep -m1 dangless: "$tmp/err1" | cut -c1-80) | | | | |"
			return
		fi
		cap=$((cap * 2))
	done
	echo "| $name | $used MiB | $peak MiB | $base | none up to 16 GiB | | | | | $failed |"
}
real python3 /usr/bin/python3 "$(dirname "$0")/real/alloc.py" "$(awk -v s=$s 'BEGIN{print 0.33*s}')"
real lua /usr/bin/lua5.4 "$(dirname "$0")/real/binary_trees.lua" "$([ "$q" = 1 ] && echo 10 || echo 12)"
real perl /usr/bin/perl "$(dirname "$0")/real/hash_churn.pl" "$(awk -v s=$s 'BEGIN{print 0.5*s}')"
real gcc /usr/bin/gcc -O2 -c "$tmp/gen.c" -o "$tmp/gen.o"
