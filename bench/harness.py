#!/usr/bin/python3
"""Dangless benchmark harness: every workload under every allocator,
interleaved, several runs; medians and ratios to glibc; the page-table floor
measured in the same run; results in bench/results/ (Markdown, SVG, JSON).

Usage: bench/harness.py --build BUILD [--quick] [--runs N] [--only w1,w2]
                        [--alloc a1,a2] [--out DIR] [--no-install]
Run by `make bench` (bench/bench.mk).  Debian python3 only, no pip.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ---------------------------------------------------------------------------
# The allocators.  Dangless modes: edit this one list (or set
# BENCH_DANGLESS_MODES="strict batch:64 ...").
DANGLESS_MODES = os.environ.get("BENCH_DANGLESS_MODES", "strict batch:64 batch:1024").split()
# A second libdangless.so (e.g. built from main) to run side by side with
# build/'s as dangless-base-<mode>, for before/after figures from one run.
DANGLESS_BASELINE = os.environ.get("BENCH_DANGLESS_BASELINE")
# How Dangless is asked for its counters at exit (appended after a ':').
DANGLESS_STATS_OPT = os.environ.get("BENCH_DANGLESS_STATS_OPT", "stats=1")

LIBDIR = "/usr/lib/x86_64-linux-gnu"


def allocators(build):
    so = os.path.join(build, "libdangless.so")
    allocs = [
        # glibc: nothing preloaded.  (For redis-server, which Debian links
        # against libjemalloc, libc.so.6 is preloaded so glibc's malloc wins.)
        dict(name="glibc", preload=None, env={}),
        dict(name="jemalloc", preload=LIBDIR + "/libjemalloc.so.2", env={}),
        dict(name="mimalloc", preload=LIBDIR + "/libmimalloc.so.2", env={}),
        # the naive page-per-object reference: freed pages stay PROT_NONE
        dict(name="efence", preload="/usr/lib/libefence.so.0",
             env={"EF_PROTECT_FREE": "1", "EF_ALLOW_MALLOC_0": "1"}),
    ]
    for m in DANGLESS_MODES:
        allocs.append(dict(name="dangless-" + m.replace(":", ""), preload=so,
                           env={"DANGLESS_OPTIONS": "revoke=" + m}, mode=m, dangless=True))
    if DANGLESS_BASELINE:
        for m in DANGLESS_MODES:
            allocs.append(dict(name="dangless-base-" + m.replace(":", ""), preload=DANGLESS_BASELINE,
                               env={"DANGLESS_OPTIONS": "revoke=" + m}, mode=m, dangless=True,
                               baseline=True))
    for a in allocs:
        if a["preload"] and not os.path.exists(a["preload"]):
            a["missing"] = "not built" if a.get("dangless") else "not installed"
    return allocs


# ---------------------------------------------------------------------------
# The workloads.  kind: synth (ours, C), real (Debian programs), micro (pair).
# Base sizes are chosen so that Dangless in strict mode (a few us per
# malloc+free) finishes each run in seconds: 10^5-10^6 allocations at 1.0.

def workloads(build, inputs, scale):
    b = os.path.join(build, "bench")
    w = []
    for name, what in [
        ("churn", "small-object churn (cfrac/espresso style), 4e5 ops"),
        ("churn_scattered", "scattered frees: 3e5 random replacements in 2e4 live objects of 16 B-64 KiB"),
        ("larson", "larson-like server churn, 4 threads, frees from other threads, 4e5 ops"),
        ("xmalloc", "producer/consumer, 2+2 threads, 4e5 objects"),
        ("bintree", "binary-trees depth 12, 16-byte nodes, ~7e5 nodes"),
        ("realloc", "realloc growth: doubling vectors and exact-size strings, 3e5 appends"),
        ("large", "large objects 64 KiB-64 MiB, every page written, 400 ops"),
        ("longlived", "10^6 live small objects, slow turnover of half of them"),
        ("threads", "the same 1.6e5 replacements by 1, 2, 4 and 8 threads, cross-thread frees, a process each"),
        ("forkheap", "fork server: a parent with a 10 MB live heap forks 300 children that write 64 objects and exit"),
    ]:
        w.append(dict(name=name, kind="synth", what=what,
                      argv=[os.path.join(b, name), "%g" % scale]))
    w.append(dict(name="python3", kind="real",
                  what="python3 (PYTHONMALLOC=malloc): dicts, strings, JSON round trip, sort",
                  argv=["/usr/bin/python3", os.path.join(HERE, "real/alloc.py"), "%g" % (0.33 * scale)],
                  env={"PYTHONMALLOC": "malloc"}))
    w.append(dict(name="sqlite3", kind="real",
                  what="sqlite3 :memory: inserts, indexes, group by, update, delete, join",
                  argv=["/usr/bin/sqlite3", ":memory:"], stdin=inputs["sql"]))
    w.append(dict(name="lua", kind="real", what="lua5.4 binary-trees (tables as nodes)",
                  argv=["/usr/bin/lua5.4", os.path.join(HERE, "real/binary_trees.lua"),
                        str(max(6, 12 + int(round(math.log2(scale)))))]))
    w.append(dict(name="perl", kind="real", what="perl hash churn (string keys, array values)",
                  argv=["/usr/bin/perl", os.path.join(HERE, "real/hash_churn.pl"), "%g" % (0.5 * scale)]))
    w.append(dict(name="gcc", kind="real", what="gcc -O2 -c of a generated C file",
                  argv=["/usr/bin/gcc", "-O2", "-c", inputs["c"], "-o", "/dev/null"]))
    w.append(dict(name="redis", kind="real", what="redis-server on 127.0.0.1 driven by redis-benchmark",
                  redis=dict(requests=max(2000, int(40000 * scale)))))
    w.append(dict(name="pair", kind="micro", what="one malloc+free pair, 16 B..1 MiB",
                  argv=[os.path.join(b, "pair"), "%g" % scale]))
    w.append(dict(name="large_pair", kind="micro",
                  what="malloc+free of 64 KiB-1 MiB, every page written, 2000 ops",
                  argv=[os.path.join(b, "large_pair"), "%g" % scale]))
    return w


def make_inputs(build, scale):
    d = os.path.join(build, "bench", "inputs")
    os.makedirs(d, exist_ok=True)
    rows = max(2000, int(100000 * scale))
    sql = os.path.join(d, "bench-%d.sql" % rows)
    with open(sql, "w") as f:
        f.write(f"""CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < {rows})
INSERT INTO t SELECT x, 'name' || x || substr('abcdefghijklmnop', 1, x % 16), x % 97, x * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
CREATE INDEX t_grp ON t(grp, val);
SELECT grp, count(*), sum(val), length(group_concat(substr(name, 1, 3))) FROM t GROUP BY grp ORDER BY 2 DESC LIMIT 3;
UPDATE t SET name = name || '-' || grp WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), max(length(a.name)) FROM t a JOIN t b ON a.grp = b.grp AND a.id = b.id + 97;
SELECT name FROM t ORDER BY val DESC, name LIMIT 1 OFFSET 1000;
""")
    nfun = max(8, int(40 * scale))
    c = os.path.join(d, "big-%d.c" % nfun)
    seed = 7
    out = ["#include <string.h>",
           "struct rec { int a; long b; char name[32]; double v[4]; };"]
    for i in range(nfun):
        out.append(f"long f{i}(struct rec *r, int n, const char *s) {{")
        out.append("  long acc = 0; struct rec loc[8]; memset(loc, 0, sizeof loc);")
        out.append("  for (int k = 0; k < n; k++) {")
        out.append("    switch ((k + r->a) % 8) {")
        for cse in range(8):
            seed = (seed * 1103515245 + 12345) % 2147483648
            out.append(f"    case {cse}: acc += r[k].b * {1 + seed % 99} + loc[{cse}].a; "
                       f"loc[{cse}].b ^= acc >> {cse + 1}; if (s[k % 7] == '{chr(97 + cse)}') "
                       f"acc -= strlen(s) * {cse}; break;")
        out.append("    }")
        out.append(f"    if (acc > {1000 + seed % 9000}) {{ acc = acc * 3 + r->v[k & 3]; }} "
                   f"else {{ acc += (long)(r->v[(k+1) & 3] * 0.{seed % 997}); }}")
        out.append("  }")
        out.append(f"  return acc + (n > 3 ? f{i - 1}(r + 1, n - 1, s + 1) : 0);" if i else "  return acc;")
        out.append("}")
    with open(c, "w") as f:
        f.write("\n".join(out) + "\n")
    return dict(sql=sql, c=c)


# ---------------------------------------------------------------------------
# Running one process and watching it.

def tree_pids(pid):
    """pid and all its descendants (through /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{t}/children") as f:
                        todo.extend(int(x) for x in f.read().split())
                except OSError:
                    pass
        except OSError:
            pass
    return out


def read_sec_page_tables():
    """/proc/meminfo's SecPageTables (kB; Linux 6.0 on), or None: KVM's
    nested page tables (NPT/EPT), kernel memory no /proc/PID file counts."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SecPageTables:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Sampler(threading.Thread):
    """Samples VmPTE, VmHWM/VmRSS and the /proc/PID/maps line count of a
    process tree every few ms (summed over the tree), keeping the peaks;
    and the machine's SecPageTables above its level when the sampler was
    made (right after the launch: a process makes its VM well after exec),
    the nested page tables of a kvm run.  Same method for every allocator.
    Reading maps of a process with very many mappings is slow, so the
    interval backs off to keep the sampler's share of time small."""

    def __init__(self, pid, skip_root=False):
        super().__init__(daemon=True)
        self.pid = pid
        self.skip_root = skip_root
        self.stop = threading.Event()
        self.pte = None   # None: the process ended before the first sample
        self.maps = None
        self.shm = None
        self.foot = None
        self.pss_pte = None
        self.hwm = 0
        self.mmc_min = None  # lowest vm.max_map_count seen while it ran
        self.samples = 0
        self.npt_base = read_sec_page_tables()
        self.npt = None

    def sample(self):
        pte = maps = hwm = shm = foot = pss = pss_shm = 0
        seen = False
        memfds = {}
        for p in tree_pids(self.pid)[1 if self.skip_root else 0:]:
            try:
                with open(f"/proc/{p}/status") as f:
                    st = f.read()
                m = re.search(r"VmPTE:\s+(\d+)", st)
                if not m:
                    continue  # zombie or kernel thread
                seen = True
                pte += int(m.group(1))
                m = re.search(r"VmHWM:\s+(\d+)", st)
                hwm = max(hwm, int(m.group(1)) if m else 0)
                m = re.search(r"RssShmem:\s+(\d+)", st)
                shm += int(m.group(1)) if m else 0
                # footprint: private and file pages, plus memfd pages once
                # (RSS counts a memfd page once per mapping of it)
                for k in ("RssAnon", "RssFile"):
                    m = re.search(k + r":\s+(\d+)", st)
                    foot += int(m.group(1)) if m else 0
                # Pss counts a memfd page once however many aliases map it
                try:
                    with open(f"/proc/{p}/smaps_rollup") as f:
                        ro = f.read()
                    m = re.search(r"^Pss:\s+(\d+)", ro, re.M)
                    pss += int(m.group(1)) if m else 0
                    m = re.search(r"^Pss_Shmem:\s+(\d+)", ro, re.M)
                    pss_shm += int(m.group(1)) if m else 0
                except OSError:
                    pass
                with open(f"/proc/{p}/maps", "rb") as f:
                    n = 0
                    memfd_range = None
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        if memfd_range is None:
                            at = chunk.find(b" /memfd:")
                            if at >= 0:
                                start = chunk.rfind(b"\n", 0, at) + 1
                                if start or not n:
                                    memfd_range = chunk[start:chunk.index(b" ", start)].decode()
                        n += chunk.count(b"\n")
                maps += n
                # Dangless keeps no descriptor for its memfd: the file is
                # reached through a mapping of it instead.
                if memfd_range:
                    try:
                        st_ = os.stat(f"/proc/{p}/map_files/{memfd_range}")
                        memfds[(st_.st_dev, st_.st_ino)] = st_.st_blocks // 2
                    except OSError:
                        pass
            except OSError:
                pass
        mmc = read_max_map_count()
        if mmc:
            self.mmc_min = min(self.mmc_min or mmc, mmc)
        if not seen:
            return
        self.pte = max(self.pte or 0, pte)
        self.maps = max(self.maps or 0, maps)
        self.hwm = max(self.hwm, hwm)
        self.shm = max(self.shm or 0, shm)
        memfd = sum(memfds.values())
        self.foot = max(self.foot or 0, foot + memfd)
        # memfd pages held but mapped nowhere are not in Pss: added
        self.pss_pte = max(self.pss_pte or 0, pss + max(0, memfd - pss_shm) + pte)
        npt = read_sec_page_tables() if self.npt_base is not None else None
        if npt is not None:
            self.npt = max(self.npt or 0, npt - self.npt_base)
        self.samples += 1

    def run(self):
        start = time.monotonic()
        while not self.stop.is_set():
            t0 = time.monotonic()
            c0 = time.thread_time()
            self.sample()
            # the sampler's own CPU time: its wall time also counts waiting
            # for a CPU the workload holds (the rig's one vCPU), which
            # backed off to a sample every second or so there
            cost = time.thread_time() - c0
            # every ms for the first 50 ms (short runs), then every 10 ms;
            # at most ~10% of one CPU on sampling
            interval = 0.001 if t0 - start < 0.05 else 0.01
            self.stop.wait(max(interval, 10 * cost))


def sig_name(n):
    try:
        return signal.Signals(n).name
    except ValueError:
        return "signal %d" % n


def classify(rc_status, timed_out, stderr):
    """status string: ok | crash (SIGSEGV) | exit N | timeout"""
    if timed_out:
        return "timeout"
    if os.WIFSIGNALED(rc_status):
        return "crash (%s)" % sig_name(os.WTERMSIG(rc_status))
    rc = os.WEXITSTATUS(rc_status)
    if rc == 0:
        return "ok"
    return "exit %d" % rc


def stderr_note(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()
             and "Electric Fence 2.2" not in l and "Copyright" not in l]
    return lines[-1][:200] if lines else ""


SPAWN = None  # build/bench/spawn, set in main()


def spawn_env(env):
    """the launcher runs on glibc; it hands LD_PRELOAD on to the command"""
    e = dict(env)
    e["BENCH_PRELOAD"] = e.pop("LD_PRELOAD", "")
    return e


def read_report(path):
    """build/bench/spawn's report: status, wall (s), rss_kb, and the
    process tree's CPU times (s) and minor faults."""
    try:
        with open(path) as f:
            v = f.read().split()
        os.unlink(path)
        d = dict(zip(v[::2], v[1::2]))
        cpu = {k: (int(d[f]) / (1e9 if f.endswith("_ns") else 1) if f in d else None)
               for k, f in (("utime", "utime_ns"), ("stime", "stime_ns"), ("minflt", "minflt"))}
        return dict(status=int(d["status"]), wall=int(d["wall_ns"]) / 1e9,
                    rss_kb=int(d["maxrss_kb"]), **cpu)
    except (OSError, KeyError, ValueError):
        return None


def run_process(argv, env, timeout, stdin=None):
    """Runs argv through the launcher with a sampler on the launched tree."""
    rep = tempfile.mktemp(prefix="bench-report-")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
        t0 = time.monotonic()
        p = subprocess.Popen([SPAWN, rep] + argv, env=spawn_env(env), stdin=fin, stdout=out,
                             stderr=err, start_new_session=True)
        s = Sampler(p.pid, skip_root=True)
        s.start()
        timed_out = []

        def kill():
            timed_out.append(1)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            p.wait()
        except BaseException:  # ^C: take the workload down with us
            kill()
            timer.cancel()
            raise
        wall = time.monotonic() - t0
        timer.cancel()
        s.stop.set()
        s.join()
        try:  # leftovers of the process group
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        if stdin:
            fin.close()
        out.seek(0)
        err.seek(0)
        so = out.read().decode(errors="replace")
        se = err.read().decode(errors="replace")
    r = read_report(rep)
    if r:
        wall, rss = r["wall"], r["rss_kb"]
        st = classify(r["status"], False, se)
    else:
        rss = s.hwm
        st = "timeout" if timed_out else "launcher failed (exit %s)" % p.returncode
    m = re.search(r"^work_ns (\d+)", so, re.M)
    return dict(status=st, wall=wall, work=int(m.group(1)) / 1e9 if m else None, rss_kb=rss, pte_kb=s.pte, maps=s.maps, shm_kb=s.shm, foot_kb=s.foot, mmc_min=s.mmc_min,
                pss_pte_kb=pss_footprint(s.pss_pte, s.samples, so), npt_kb=s.npt,
                samples=s.samples, stdout=so, stderr=se, note=stderr_note(se),
                cpu=cpu_of(r))


def cpu_of(report):
    """The CPU times and minor faults of a spawn report (None without)."""
    return {k: report[k] for k in ("utime", "stime", "minflt")} if report else None


def pss_footprint(sampled, samples, stdout):
    """Pss + memfd pages mapped nowhere + VmPTE: the peak of the samples,
    or what the workload read itself with its live set in place
    (footprint_report() in workloads/common.h), whichever is higher.  A run
    too short for the sampler (fewer than 3 samples: the peak is likely
    missed) counts only with its own reading."""
    own = [int(v) for v in re.findall(r"^footprint_kb (\d+)", stdout, re.M)]
    vals = own + ([sampled] if sampled and samples >= 3 else [])
    return max(vals) if vals else None


DANGLESS_INFO = ""
AFL_RESULTS = []  # afl-fuzz runs: dicts from run_afl()
FLOOR_NOTES = []  # the floor program's notes: operations the kernel refused
MMC0 = None


def snapshot_dangless(build, allocs):
    """Copy build/libdangless.so once: the library may be rebuilt while the
    benchmarks run, and every Dangless run must use the same one."""
    so = os.path.join(build, "libdangless.so")
    if not os.path.exists(so):
        return ""
    import hashlib
    import shutil
    snap = os.path.join(build, "bench", "libdangless-snapshot.so")
    os.makedirs(os.path.dirname(snap), exist_ok=True)
    shutil.copy2(so, snap)
    with open(snap, "rb") as f:
        h = hashlib.sha256(f.read()).hexdigest()[:12]
    for a in allocs:
        if a.get("dangless") and not a.get("baseline"):
            a["preload"] = snap
    mt = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(so)))
    try:
        rev = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s", "--", "libdangless"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "libdangless"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    except OSError:
        rev, dirty = "?", ""
    return ("build/libdangless.so built %s UTC, sha256 %s, copied to build/bench/libdangless-snapshot.so "
            "for the whole run; libdangless/ at commit %s%s"
            % (mt, h, rev[:80], " (plus uncommitted changes)" if dirty else ""))


# ---------------------------------------------------------------------------
# Fuzzing: afl-fuzz -n (every input a fork+exec of the target) on the same
# target under each allocator, AFL_PRELOAD as a user would set it.

AFL_FUZZ = "/usr/bin/afl-fuzz"
AFL_SEED = b"GET /index.html HTTP/1.1\nHost: example.org\nAccept: text/html\n\nname=alice&pin=4711&name=bob\n"


def libdislocator_path():
    """afl++'s Electric-Fence-style allocator, where its package put it"""
    try:
        files = subprocess.run(["dpkg", "-L", "afl++"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL).stdout.decode().split()
    except OSError:
        files = []
    for f in files + ["/usr/lib/afl/libdislocator.so"]:
        if f.endswith("/libdislocator.so") and os.path.exists(f):
            return f
    return None


def afl_allocators(allocs):
    """glibc, libdislocator, and Dangless strict and batch:64 (when in DANGLESS_MODES)"""
    dis = libdislocator_path()
    out = [dict(name="glibc", preload=None, env={}),
           dict(name="libdislocator", preload=dis, env={}, missing=None if dis else "not installed (afl++)")]
    out += [a for a in allocs if a.get("dangless") and a.get("mode") in ("strict", "batch:64")]
    return out


def run_afl_once(target, a, seconds, base_env, workdir):
    d = tempfile.mkdtemp(prefix="afl-", dir=workdir)
    os.makedirs(os.path.join(d, "in"))
    with open(os.path.join(d, "in", "seed"), "wb") as f:
        f.write(AFL_SEED)
    env = dict(base_env)
    env.update(AFL_NO_UI="1", AFL_SKIP_CPUFREQ="1", AFL_NO_AFFINITY="1",
               AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES="1", AFL_NO_AUTODICT="1")
    env.update(a["env"])
    if a["preload"]:
        env["AFL_PRELOAD"] = a["preload"]
    x = dict(name=a["name"], status="ok", eps=None, execs=None, secs=None, crashes=None)
    with open(os.path.join(d, "afl.log"), "wb") as log:
        try:
            p = subprocess.run([AFL_FUZZ, "-n", "-t", "10000", "-V", str(seconds), "-i", os.path.join(d, "in"),
                                "-o", os.path.join(d, "out"), "--", target],
                               env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               timeout=seconds + 60, start_new_session=True)
            if p.returncode != 0:
                x["status"] = "exit %d" % p.returncode
        except subprocess.TimeoutExpired:
            x["status"] = "timeout"
    # the last line of plot_data: relative_time ... saved_crashes ... total_execs
    for pd in (os.path.join(d, "out", "plot_data"), os.path.join(d, "out", "default", "plot_data")):
        try:
            with open(pd) as f:
                rows = [l for l in f if l.strip() and not l.startswith("#")]
        except OSError:
            continue
        if rows:
            v = [c.strip() for c in rows[-1].split(",")]
            x["secs"], x["crashes"], x["execs"] = int(v[0]), int(v[7]), int(v[11])
            if x["secs"] > 0:
                x["eps"] = x["execs"] / x["secs"]
    if x["eps"] is None and x["status"] == "ok":
        x["status"] = "no plot_data"
    if x["status"] != "ok":
        with open(os.path.join(d, "afl.log"), "rb") as f:
            x["note"] = stderr_note(re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", f.read().decode(errors="replace")))
    subprocess.run(["rm", "-rf", d])
    return x


def run_afl(build, allocs, runs, seconds, base_env, workdir, say):
    target = os.path.join(build, "bench", "afl_target")
    if not os.path.exists(AFL_FUZZ):
        say("fuzzing: %s not installed (package afl++, in bench/apt-packages): skipped" % AFL_FUZZ)
        return []
    todo = [a for a in afl_allocators(allocs) if not a.get("missing")]
    out = []
    for r in range(runs):
        k = r % len(todo)
        for a in todo[k:] + todo[:k]:
            x = run_afl_once(target, a, seconds, base_env, workdir)
            x["run"] = r + 1
            out.append(x)
            say("fuzzing run %d/%d %-20s %-10s %s execs/s (%s execs in %s s, %s crashes)%s"
                % (r + 1, runs, a["name"], x["status"], "%.0f" % x["eps"] if x["eps"] else "-",
                   x["execs"], x["secs"], x["crashes"], ("  " + x["note"]) if x.get("note") else ""))
    return out


def read_max_map_count():
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def disturbed(x, mmc0):
    """why a run does not count, if vm.max_map_count was not mmc0 while it ran"""
    m = re.search(r"vm\.max_map_count is (\d+)", x.get("stderr", ""))
    if m and int(m.group(1)) != mmc0:
        return "vm.max_map_count was %s, not %s" % (m.group(1), mmc0)
    for k in ("mmc_min", "max_map_count"):  # seen while it ran, read right after
        if x.get(k) and x[k] != mmc0:
            return "vm.max_map_count was %s, not %s" % (x[k], mmc0)
    return None


def maps_per_live(stdout):
    """longlived prints "maps live=N maps=M" along the way: the worst
    (M - M0) / N, M0 being the count before the first allocation"""
    pts = [(int(a), int(b)) for a, b in re.findall(r"^maps live=(\d+) maps=(\d+)", stdout, re.M)]
    if len(pts) < 2:
        return None
    m0 = pts[0][1]
    return max((m - m0) / n for n, m in pts if n > 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_redis(spec, env, timeout, workdir):
    """redis-server under the allocator (127.0.0.1, a free port, no
    persistence), redis-benchmark (not preloaded) against it; wall time is the
    client's; RSS/PTE/maps are the server's."""
    port = free_port()
    srv_out = os.path.join(workdir, "redis-%d.log" % port)
    rep = os.path.join(workdir, "redis-%d.report" % port)
    with open(srv_out, "wb") as log:
        p = subprocess.Popen([SPAWN, rep, "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--daemonize", "no",
                              "--dir", workdir, "--protected-mode", "yes"],
                             env=spawn_env(env), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        return _run_redis(p, port, rep, srv_out, spec, timeout)
    except BaseException:  # ^C: never leave a redis-server behind
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        raise


def _run_redis(p, port, rep, srv_out, spec, timeout):
    s = Sampler(p.pid, skip_root=True)
    s.start()
    deadline = time.monotonic() + 15
    up = False
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    up = True
                    break
        except OSError:
            time.sleep(0.02)
    res = dict(status="ok", wall=float("nan"), note="")
    clean_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "DANGLESS_OPTIONS")}
    if up:
        n = spec["requests"]
        t0 = time.monotonic()
        try:
            cl = subprocess.run(["/usr/bin/redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                                 "-n", str(n), "-c", "8", "-r", "100000", "-d", "64", "-q",
                                 "-t", "set,get,incr,lpush,lpop,sadd,hset,mset"],
                                env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=timeout, stdin=subprocess.DEVNULL)
            res["wall"] = time.monotonic() - t0
            res["stdout"] = cl.stdout.decode(errors="replace")
            if p.poll() is not None:
                res["status"] = "server died"
            elif cl.returncode != 0:
                res["status"] = "client exit %d" % cl.returncode
        except subprocess.TimeoutExpired:
            res["status"] = "timeout"
    # stop the server: SHUTDOWN NOSAVE, then SIGKILL if it does not go
    if p.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"SHUTDOWN NOSAVE\r\n")
                c.recv(16)
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    if p.returncode is None:
        p.wait()
    s.stop.set()
    s.join()
    with open(srv_out, "rb") as f:
        log = f.read().decode(errors="replace")
    os.unlink(srv_out)
    r = read_report(rep)
    rc = None
    rss = s.hwm
    if r:
        st, rss = r["status"], r["rss_kb"]
        rc = os.WEXITSTATUS(st) if os.WIFEXITED(st) else None
        if os.WIFSIGNALED(st):
            res["status"] = "crash (%s)" % sig_name(os.WTERMSIG(st))
    if res["status"].startswith("crash"):
        pass
    elif not up:
        res["status"] = "server did not start" if rc is None or rc == 0 else "server exit %d" % rc
    if res["status"] != "ok":
        res["note"] = stderr_note(log)
    res.update(rss_kb=rss, pte_kb=s.pte, maps=s.maps, shm_kb=s.shm, foot_kb=s.foot,
               pss_pte_kb=pss_footprint(s.pss_pte, s.samples, ""), npt_kb=s.npt,
               mmc_min=s.mmc_min, samples=s.samples, stderr=log, cpu=cpu_of(r))
    return res


# ---------------------------------------------------------------------------
# Statistics and formatting.

# the floor program's figures, in the order of its table
FLOOR_ROWS = [
    ("bulk_map_populate_ns_per_page", "bulk map: one mmap(MAP_POPULATE) of 512 pages, per page"),
    ("first_touch_ns_per_page", "first touch: first write to each page of that mapping, per page"),
    ("second_touch_ns_per_page", "second write to each page, per page (for contrast)"),
    ("bulk_revoke_mprotect_ns_per_page", "bulk revoke: one mprotect(PROT_NONE) of 512 pages, per page"),
    ("bulk_map_fresh_pages_ns_per_page", "bulk map of memfd pages that do not exist yet (hole punched), per page"),
    ("first_touch_fresh_pages_ns_per_page", "first touch of those, per page"),
    ("single_revoke_mprotect_ns", "single-page revoke: mprotect(PROT_NONE) one page per call"),
    ("single_guard_install_ns", "single-page guard install: madvise(MADV_GUARD_INSTALL) one page per call"),
    ("bulk_guard_install_ns_per_page", "bulk guard install over 512 pages, per page"),
    ("batched_guard_install_64_ns_per_range",
     "batched scattered revoke: 64 non-adjacent one-page ranges per process_madvise(MADV_GUARD_INSTALL), per range"),
    ("batched_guard_install_256_ns_per_range", "the same, 256 ranges in one call, per range"),
    ("single_map_touch_ns", "single-page map: mmap(MAP_FIXED) one page + first touch"),
    ("single_munmap_ns", "single-page munmap"),
]

def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt_ratio(r):
    if r is None:
        return "-"
    return "%.2fx" % r if r < 10 else "%.1fx" % r if r < 100 else "%.0fx" % r


def fmt_abs(metric, v):
    if v is None:
        return "-"
    if metric in ("wall", "work"):
        return "%.1f ms" % (v * 1000) if v < 1 else "%.2f s" % v if v < 10 else "%.1f s" % v
    if metric in ("rss_kb", "pte_kb", "shm_kb", "foot_kb", "pss_pte_kb"):
        return "%.1f MiB" % (v / 1024) if v >= 1024 else "%d KiB" % v
    if metric == "rss_pte_kb":
        return "%.1f MiB" % (v / 1024)
    return "%d" % v


def fmt_rate(v):
    if v is None:
        return "-"
    return "%.2f M" % (v / 1e6) if v >= 1e6 else "%.0f k" % (v / 1e3) if v >= 1e3 else "%.0f" % v


def fmt_ns(v):
    return "-" if v is None else "%.0f ns" % v if v < 1000 else "%.2f us" % (v / 1000) if v < 1e6 else "%.1f ms" % (v / 1e6)


def ok_runs(res, wname, aname):
    return [x for x in res.get((wname, aname), []) if x["status"] == "ok"]


def key_values(words):
    """["a", "1", "b", "2.5"] -> {"a": 1.0, "b": 2.5}: a workload's "key value" pairs
    (ValueError where a value is not a number)"""
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


def parse_line(res, wname, aname, prefix):
    """from each ok run's stdout, the "key value" pairs of its line starting with prefix"""
    out = []
    for x in ok_runs(res, wname, aname):
        for line in x.get("stdout", "").splitlines():
            if line.startswith(prefix + " "):
                try:
                    out.append(key_values(line.split()[1:]))
                except ValueError:
                    pass
    return out


def threads_by_count(res, names):
    """allocator -> {thread count: median ops/s over the runs}"""
    thr = {}
    for n in names:
        per = {}
        for x in ok_runs(res, "threads", n):
            for m in re.finditer(r"^threads (\d+) ops \d+ ns [\d.]+ ops_per_s ([\d.]+)", x.get("stdout", ""), re.M):
                per.setdefault(int(m.group(1)), []).append(float(m.group(2)))
        if per:
            thr[n] = {t: med(v) for t, v in per.items()}
    return thr


SPLIT_PARTS = ("live", "slack", "free", "warm", "quarantine", "stale", "page_tables", "metadata", "program")
MEM_TARGET = 1.25  # issue 23: each backend within 1.25x glibc's footprint

# Issue 23: for a part named the largest beyond live, why it is what it is and what making it
# smaller costs (the measurements: bench/results/notes.md).  Keys as in SPLIT_PARTS.
SPLIT_WHY = {
    "slack": "the rest of each object's size class: classes step by 16 B to 256 B, then by "
             "a sixteenth, then by 1-4 KiB past a page; finer steps mean more classes, each "
             "with its own runs held.",
    "free": "freed slots wait for their row to be carved again. A chunk maps a whole row of "
            "a run (host: an mmap; kvm: 32 PTEs and 32 pages of alias space) and hands out "
            "the free slots it finds, so a class grows by a fresh run at three quarters "
            "carved to keep rows worth mapping: up to a quarter of a class is free by design, "
            "and a class in use holds at least one run (8 pages while narrow, then 32), so a "
            "small heap spread over many classes (churn) is mostly free slots. "
            "Growing at 15/16 instead cut the footprint 5% for 20% more kernel mappings, what "
            "vm.max_map_count kills programs for. Free slots share their pages with live ones "
            "(a row has a slot on every page of its run), so no page of them can go back; "
            "only a layout that maps single slots (more system calls) would.",
    "warm": "empty runs and freed large extents kept against the next wave's page faults: "
            "each at most a quarter of the live bytes (floors 512 KiB and 2 MiB). A program "
            "that frees its heap before exit shows what its peak allowed.",
    "quarantine": "freed objects waiting for their batch's revocation (batch modes): at most "
                  "a batch.",
    "stale": "kvm: freed canonical memory kept until one burst gives it back (an exit per "
             "range): at most a quarter of the live bytes, 1-16 MiB.",
    "page_tables": "an entry per object page, and a table page per 2 MiB of alias space that "
                   "holds a live object: survivors spread over a program's history (redis) "
                   "hold a table page each. An alias page per object is the design.",
    "metadata": "~1.4 KiB per live segment, and the report history (what names a freed "
                "allocation in a report) of the last 1 GiB of alias space.",
}


def largest_part(part, keys=SPLIT_PARTS):
    """The part of a split (a dict by part name) that is largest beyond live bytes and the
    program's own."""
    return max((k for k in keys if k not in ("live", "program")), key=lambda k: part[k])


def split_why_lines(named):
    """Lines saying why each part in named (largest parts, keys as in SPLIT_PARTS, or
    "page_table") is what it is."""
    seen = sorted(set("page_tables" if k == "page_table" else k for k in named),
                  key=SPLIT_PARTS.index)
    if not seen:
        return []
    return ["Why the largest parts cannot simply be smaller (issue 23; measurements in "
            "bench/results/notes.md):\n"] + [
        "- `%s`: %s" % (k.replace("_", " "), SPLIT_WHY[k]) for k in seen if k in SPLIT_WHY]


def split_table(res, table_wls, names):
    """Issue 23: where each Dangless run's footprint goes, by its own split
    (dangless_stats(), the footprint_split line the workloads print with
    their live set in place), against glibc's footprint at the same point;
    the 1.25x target marked, and for a miss the part most over."""
    L = ["## Where Dangless's footprint goes (its own split, live set in place)\n",
         "Medians over runs, MiB; `x glibc` is Dangless's footprint over glibc's (Pss + page tables, "
         "the same reading), target 1.25x. The last column names the largest part besides live bytes and "
         "the program's own, with its share of the footprint.\n",
         "| workload | allocator | footprint | x glibc | target 1.25x | " +
         " | ".join(p.replace("_", " ") for p in SPLIT_PARTS) + " | largest part beyond live |",
         "|---|---|---|---|---|" + "---|" * len(SPLIT_PARTS) + "---|"]
    rows, largest = 0, []
    for w in table_wls:
        gfoot = med([int(v) for x in ok_runs(res, w["name"], "glibc")
                     for v in re.findall(r"^footprint_kb (\d+)", x.get("stdout", ""), re.M)])
        for n in names:
            if not n.startswith("dangless"):
                continue
            lines = parse_line(res, w["name"], n, "footprint_split")
            if not lines:
                continue
            part = {k: med([x.get(k + "_kb", 0) for x in lines]) for k in ("footprint",) + SPLIT_PARTS}
            ratio = part["footprint"] / gfoot if gfoot else None
            worst = largest_part(part)
            L.append("| %s | %s | %.1f | %s | %s | %s | %s (%.0f%%) |" % (
                w["name"], n, part["footprint"] / 1024, fmt_ratio(ratio) if ratio else "-",
                "-" if ratio is None else ("met" if ratio <= MEM_TARGET else "missed"),
                " | ".join("%.1f" % (part[k] / 1024) for k in SPLIT_PARTS), worst.replace("_", " "),
                100.0 * part[worst] / part["footprint"] if part["footprint"] else 0))
            rows += 1
            if ratio is not None and ratio > MEM_TARGET:
                largest.append(worst)
    if not rows:
        return []
    L.append("")
    why = split_why_lines(largest)
    return L + (why + [""] if why else [])


def issue12_targets(res, cells, byname, dl, table_wls, fl, thr, ratio, verdict):
    """issue 12's targets: churn with scattered frees and large objects against
    their floors per operation, 8 threads against 1, footprint against glibc"""
    L = ["| target | mode | measured | floor | ratio | goal | verdict |",
         "|---|---|---|---|---|---|---|"]
    fm = fl.get("bulk_map_populate_ns_per_page")
    ft = fl.get("first_touch_ns_per_page")
    # the cheapest way this kernel offers to revoke, one page per call and in bulk
    one = [(v, how) for v, how in [(fl.get("single_revoke_mprotect_ns"), "mprotect"),
                                   (fl.get("single_guard_install_ns"), "guard install")] if v]
    bulk = [(v, how) for v, how in [(fl.get("bulk_revoke_mprotect_ns_per_page"), "mprotect"),
                                    (fl.get("bulk_guard_install_ns_per_page"), "guard install")] if v]
    one = min(one) if one else None
    bulk = min(bulk) if bulk else None

    def batched(mode):
        """per range, in batches of the mode's size (64, or 256 from batch:256 on)"""
        size = int(mode.split(":")[1]) if ":" in mode else 64
        k = "batched_guard_install_%d_ns_per_range" % (256 if size >= 256 else 64)
        return (fl.get(k), "process_madvise, %d ranges per call" % (256 if size >= 256 else 64))

    def per_op(wname, n, key_ns, key_ops=None):
        v = []
        for d in parse_line(res, wname, n, wname):
            if key_ops:
                if d.get(key_ops):
                    v.append(d[key_ns] / d[key_ops])
            elif key_ns in d:
                v.append(d[key_ns])
        return med(v)

    def failed(wname, n):
        c = cells.get((wname, n), {})
        return c.get("fail") or "not run"

    # churn with scattered frees, per operation (a free and a malloc)
    cs = parse_line(res, "churn_scattered", "glibc", "churn_scattered") or \
        [d for n in dl for d in parse_line(res, "churn_scattered", n, "churn_scattered")]
    span = med([d.get("pages_spanned_per_op") for d in cs])
    touch = med([d.get("pages_touched_per_op") for d in cs])
    g = per_op("churn_scattered", "glibc", "replace_ns", "ops")
    for n in dl:
        mode = byname[n]["mode"]
        v = per_op("churn_scattered", n, "replace_ns", "ops")
        rv = one if mode == "strict" else batched(mode)
        if mode != "strict" and rv[0] is None and one:
            # no batched call on this kernel: scattered ranges cost a call each
            rv = (one[0], one[1] + ", a call per range: batched guards refused")
        what = "one-page revoke" if mode == "strict" else "batched scattered revoke"
        goal = 1.25
        if None in (fm, ft, span, touch) or not rv or rv[0] is None:
            floor = None
        else:
            floor = span * fm + touch * ft + rv[0]
        r = v / floor if v and floor else None
        L.append("| churn_scattered per op <= %gx (map + first touch + %s) | %s | %s%s | %s | %s | %gx | %s |"
                 % (goal, what, mode, fmt_ns(v) if v else failed("churn_scattered", n),
                    " (glibc %s)" % fmt_ns(g) if g else "",
                    "%s = %.2f pages x %s + %.2f x %s + %s (%s)" % (fmt_ns(floor), span, fmt_ns(fm), touch, fmt_ns(ft),
                                                                   fmt_ns(rv[0]), rv[1]) if floor else "n/a",
                    fmt_ratio(r), goal, verdict(r, goal)))

    # large objects, every page written: per malloc+free
    lp = parse_line(res, "large_pair", "glibc", "large_pair") or \
        [d for n in dl for d in parse_line(res, "large_pair", n, "large_pair")]
    pages = med([d.get("pages_per_op") for d in lp])
    g = per_op("large_pair", "glibc", "ns_per_op")
    floor = pages * (fm + ft + bulk[0]) if None not in (pages, fm, ft, bulk) else None
    for n in dl:
        v = per_op("large_pair", n, "ns_per_op")
        r = v / floor if v and floor else None
        L.append("| malloc+free of 64 KiB-1 MiB (large_pair) <= 2x (bulk map + first touch + bulk revoke of its pages) "
                 "| %s | %s%s | %s | %s | 2x | %s |"
                 % (byname[n]["mode"], fmt_ns(v) if v else failed("large_pair", n), " (glibc %s)" % fmt_ns(g) if g else "",
                    "%s = %.1f pages x (%s + %s + %s by %s)" % (fmt_ns(floor), pages, fmt_ns(fm), fmt_ns(ft), fmt_ns(bulk[0]), bulk[1])
                    if floor else "n/a", fmt_ratio(r), verdict(r, 2)))

    # 8 threads against 1 (on this machine's cores)
    gl = thr.get("glibc", {})
    for n in dl:
        per = thr.get(n, {})
        top = max(per) if per else None
        r = per[top] / per[1] if per.get(1) and top and top > 1 else None
        L.append("| %s threads: throughput not below 1 thread's (%d CPUs) | %s | %s%s | - | %s | >= 1 | %s |"
                 % (top or 8, os.cpu_count(), byname[n]["mode"],
                    "%s ops/s at %d, %s at 1" % (fmt_rate(per[top]), top, fmt_rate(per[1])) if r else failed("threads", n),
                    " (glibc %.2f)" % (gl[max(gl)] / gl[1]) if gl.get(1) else "",
                    "%.2f" % r if r else "-", "n/a" if r is None else "met" if r >= 1 else "missed by %.2fx" % (1 / r)))

    # footprint: Pss + memfd pages mapped nowhere + page tables, against glibc
    for n in dl:
        rs = [(ratio(w["name"], n, "pss_pte_kb"), w["name"]) for w in table_wls]
        okr = [x for x in rs if x[0] is not None]
        gm = geomean([r for r, _ in okr])
        worst = max(okr) if okr else None
        over = [w for r, w in okr if r > 3]
        v = None if gm is None else "met" if gm <= 1.5 and not over else \
            "missed (geomean %s%s)" % ("%.2fx the goal" % (gm / 1.5) if gm > 1.5 else "met",
                                       "; over 3x: " + ", ".join(over) if over else "")
        L.append("| footprint (Pss + page tables, live set in place) geomean <= 1.5x glibc, no workload over 3x "
                 "| %s | geomean %s over %d/%d workloads, worst %s %s | - | %s | 1.5x, 3x | %s |"
                 % (byname[n]["mode"], fmt_ratio(gm), len(okr), len(table_wls), worst[1] if worst else "-",
                    fmt_ratio(worst[0]) if worst else "-", fmt_ratio(gm), v or "n/a"))
    L.append("")
    L.append("Floors from the table above (this run): map = bulk map per page, first touch = first write per page after "
             "it; a revocation by the cheapest way this kernel offers.  Pages per operation are the workload's own counts "
             "(churn_scattered: pages an object spans, and 1 or 2 written: its first and last byte).\n")
    return L


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for l in f:
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    with open("/proc/sys/vm/max_map_count") as f:
        mmc = f.read().strip()
    if MMC0:  # the value at the start of the run, not whatever it is now
        mmc = str(MMC0)
    osr = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'PRETTY_NAME="([^"]*)"', f.read())
            osr = m.group(1) if m else osr
    except OSError:
        pass
    return dict(nproc=os.cpu_count(), kernel=os.uname().release, cpu=cpu, mem_mib=mem,
                max_map_count=mmc, os=osr, load=os.getloadavg())


def pkg_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode().strip() or "?"
    except OSError:
        return "?"


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--scale", type=float)
    ap.add_argument("--timeout", type=float)
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--alloc", help="comma-separated allocator names")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--from-raw", help="only rewrite the report from a raw.json of an earlier run")
    args = ap.parse_args()
    if args.from_raw:
        return report_from_raw(args)

    # ^C or a SIGTERM (e.g. from a timeout around make) unwinds through the
    # runners, which then kill what they started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = args.quick or os.environ.get("BENCH_QUICK") in ("1", "yes")
    runs = args.runs or (2 if quick else 3)
    scale = args.scale or (0.2 if quick else 1.0)
    timeout = args.timeout or float(os.environ.get("BENCH_TIMEOUT", 30 if quick else 90))
    build = os.path.abspath(args.build)

    def say(msg):
        print("bench: " + msg, file=sys.stderr, flush=True)

    if not args.no_install:
        say("tools/install-deps --bench")
        try:
            rc = subprocess.run([os.path.join(ROOT, "tools/install-deps"), "--bench"]).returncode
        except OSError as e:
            rc = str(e)
        if rc != 0:
            say("install-deps failed (%s): running with what is installed" % rc)

    allocs = allocators(build)
    global DANGLESS_INFO
    DANGLESS_INFO = snapshot_dangless(build, allocs)
    if DANGLESS_INFO:
        say("dangless: %s" % DANGLESS_INFO)
    if args.alloc:
        keep = args.alloc.split(",")
        allocs = [a for a in allocs if a["name"] in keep or a["name"] == "glibc"]
    inputs = make_inputs(build, scale)
    wls = workloads(build, inputs, scale)
    if args.only:
        keep = args.only.split(",")
        wls = [w for w in wls if w["name"] in keep]
    for w in wls:
        exe = w["argv"][0] if "argv" in w else "/usr/bin/redis-server"
        if not os.path.exists(exe):
            w["missing"] = "%s not found" % exe
    floor_exe = os.path.join(build, "bench", "floor")
    global SPAWN
    SPAWN = os.path.join(build, "bench", "spawn")

    for a in allocs:
        say("%-20s %s" % (a["name"], a.get("missing") or (a["preload"] or "(none)")))
    active = [a for a in allocs if not a.get("missing")]
    todo = [w for w in wls if not w.get("missing")]
    total = runs * len(todo) * len(active)
    say("%s mode: scale %g, %d runs, %d workloads x %d allocators = %d runs, timeout %gs each"
        % ("quick" if quick else "full", scale, runs, len(todo), len(active), total, timeout))

    workdir = tempfile.mkdtemp(prefix="dangless-bench-")
    global MMC0
    mmc0 = MMC0 = read_max_map_count()
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("LD_PRELOAD", "DANGLESS_OPTIONS", "EF_PROTECT_FREE", "PYTHONMALLOC")}
    res = {}   # (workload, alloc) -> list of run dicts
    floors = []
    done = 0
    t_start = time.monotonic()
    for r in range(runs):
        # the floor, once per run, between the workloads like everything else
        fr = run_process([floor_exe, "%g" % scale], base_env, 60)
        fl = {}
        for line in fr["stdout"].splitlines():
            k, _, v = line.partition(" ")
            if k == "note":  # what the kernel refused, and why
                if v not in FLOOR_NOTES:
                    FLOOR_NOTES.append(v)
                    say("floor: " + v)
                continue
            try:
                fl[k] = None if v == "n/a" else float(v)  # n/a: refused by this kernel
            except ValueError:
                pass
        if fr["status"] != "ok":
            say("floor: %s %s" % (fr["status"], fr.get("note", "")))
        floors.append(fl)
        say("run %d/%d floor: %s" % (r + 1, runs, ", ".join("%s %s" % (k, "n/a" if v is None else "%.0f" % v)
                                                            for k, v in fl.items())))
        for wi, w in enumerate(todo):
            # rotate the allocator order so that none is always first after a given one
            k = (r + wi) % len(active)
            order = active[k:] + active[:k]
            for a in order:
                env = dict(base_env)
                env.update(w.get("env", {}))
                env.update(a["env"])
                if a["preload"]:
                    env["LD_PRELOAD"] = a["preload"]
                elif w["name"] == "redis":
                    env["LD_PRELOAD"] = "/lib/x86_64-linux-gnu/libc.so.6"
                prev = res.get((w["name"], a["name"]), [])
                if any(p["status"] == "timeout" for p in prev):
                    # a timeout is not retried: it would only burn the timeout again
                    x = dict(prev[0], note="not rerun after a timeout", stdout="", stderr="")
                    x["status"] = "timeout"
                else:
                    for attempt in range(3):
                        if "redis" in w:
                            x = run_redis(w["redis"], env, timeout, workdir)
                        else:
                            x = run_process(w["argv"], env, timeout, w.get("stdin"))
                        x["max_map_count"] = read_max_map_count()
                        d = disturbed(x, mmc0)
                        if not d:
                            break
                        # someone else on the machine lowered the global limit
                        # while this ran (a map-limit test): not our result
                        say("run %s/%s disturbed (%s), again" % (w["name"], a["name"], d))
                        time.sleep(2)
                    if d:
                        x["status"] = "disturbed"
                        x["note"] = d
                x["max_map_count"] = read_max_map_count()
                res.setdefault((w["name"], a["name"]), []).append(x)
                done += 1
                el = time.monotonic() - t_start
                eta = el / done * (total - done)
                say("[%3d/%d] run %d/%d %-10s %-20s %-16s %8.3f s  rss %7.1f MiB  pte %6s KiB  maps %6s  (eta %ds)%s"
                    % (done, total, r + 1, runs, w["name"], a["name"], x["status"], x["wall"],
                       x["rss_kb"] / 1024, x["pte_kb"], x["maps"], eta,
                       ("  " + x["note"]) if x["status"] != "ok" and x.get("note") else ""))

    # afl-fuzz execs/s, a fixed time per allocator ("afl" in --only selects it)
    AFL_RESULTS[:] = []
    if not args.only or "afl" in args.only.split(","):
        AFL_RESULTS.extend(run_afl(build, active, runs, 5 if quick else 20, base_env, workdir, say))

    # Dangless counters: one extra, untimed run of each workload per mode
    stats = {}
    for a in active:
        if not a.get("dangless"):
            continue
        for w in todo:
            wname = w["name"]
            if wname in ("pair", "redis"):
                continue
            env = dict(base_env)
            env["LD_PRELOAD"] = a["preload"]
            env["DANGLESS_OPTIONS"] = a["env"]["DANGLESS_OPTIONS"] + ":" + DANGLESS_STATS_OPT
            env["BENCH_STATS_AT_PEAK"] = "1"  # longlived prints the counters at its peak too
            env.update(w.get("env", {}))
            x = run_process(w["argv"], env, timeout, w.get("stdin"))
            stats[(wname, a["name"])] = dict(status=x["status"], env=env["DANGLESS_OPTIONS"],
                                             stderr=x["stderr"][-4000:])
            say("stats %s %s: %s" % (wname, a["name"], x["status"]))

    elapsed = time.monotonic() - t_start
    os.makedirs(args.out, exist_ok=True)
    save_raw(os.path.join(args.out, "raw.json"), quick, runs, scale, timeout, res, floors, stats, elapsed)
    report(args, quick, runs, scale, timeout, allocs, wls, res, floors, stats, inputs, elapsed)
    try:
        os.rmdir(workdir)
    except OSError:
        pass


def save_raw(path, quick, runs, scale, timeout, res, floors, stats, elapsed):
    """everything the report needs, so that it can be rewritten (--from-raw)"""
    def trim(x):
        y = dict(x)
        y["stderr"] = y.get("stderr", "")[-3000:]
        return y
    with open(path, "w") as f:
        json.dump(dict(quick=quick, runs=runs, scale=scale, timeout=timeout, elapsed=elapsed,
                       floors=floors, floor_notes=FLOOR_NOTES, modes=DANGLESS_MODES, dangless=DANGLESS_INFO,
                       afl=AFL_RESULTS,
                       machine=machine_info(), when=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                       res=[[w, a, [trim(x) for x in v]] for (w, a), v in res.items()],
                       stats=[[w, a, v] for (w, a), v in stats.items()]), f)


def report_from_raw(args):
    with open(args.from_raw) as f:
        raw = json.load(f)
    build = os.path.abspath(args.build)
    global SPAWN
    SPAWN = os.path.join(build, "bench", "spawn")
    allocs = allocators(build)
    inputs = make_inputs(build, raw["scale"])
    wls = workloads(build, inputs, raw["scale"])
    res = {(w, a): v for w, a, v in raw["res"]}
    global DANGLESS_INFO
    DANGLESS_INFO = raw.get("dangless", "")
    FLOOR_NOTES[:] = raw.get("floor_notes", [])
    AFL_RESULTS[:] = raw.get("afl", [])
    stats = {(w, a): v for w, a, v in raw["stats"]}
    names = {a for _, a in res}
    allocs = [a for a in allocs if a["name"] in names]
    for a in allocs:
        if a.get("dangless") and not a.get("baseline") and DANGLESS_INFO:
            a["preload"] = os.path.join(build, "bench", "libdangless-snapshot.so")
            a.pop("missing", None)
    wnames = {w for w, _ in res}
    wls = [w for w in wls if w["name"] in wnames]
    os.makedirs(args.out, exist_ok=True)
    report(args, raw["quick"], raw["runs"], raw["scale"], raw["timeout"], allocs, wls, res,
           raw["floors"], stats, inputs, raw["elapsed"], raw.get("machine"), raw.get("when"))


def cmdline(w, a):
    env = []
    env += ["%s=%s" % kv for kv in w.get("env", {}).items()]
    env += ["%s=%s" % kv for kv in a["env"].items()]
    if a["preload"]:
        env.append("LD_PRELOAD=" + a["preload"])
    if "redis" in w:
        return (" ".join(env) + " redis-server --port P --bind 127.0.0.1 --save '' --appendonly no; "
                "redis-benchmark -h 127.0.0.1 -p P -n %d -c 8 -r 100000 -d 64 -q "
                "-t set,get,incr,lpush,lpop,sadd,hset,mset" % w["redis"]["requests"]).strip()
    s = " ".join(env + [os.path.relpath(x, ROOT) if x.startswith(ROOT) else x for x in w["argv"]])
    if w.get("stdin"):
        s += " < " + os.path.relpath(w["stdin"], ROOT)
    return s


def sweep_section(args):
    """What a reclaim sweep costs (issue 21): `make bench-sweep` measures it
    apart from the timings (a sweep stops the world; it needs runs of its
    own); make bench runs it first.  Its build/bench/sweep.md is shown and
    kept in results/; without one, the last one kept there."""
    fresh = os.path.join(os.path.abspath(args.build), "bench", "sweep.md")
    kept = os.path.join(args.out, "sweep.md")
    L = ["## Reclaim sweeps (`make bench-sweep`, issue 21)\n"]
    path = fresh if os.path.exists(fresh) else kept
    if not os.path.exists(path):
        L.append("Not measured: `make bench-sweep` writes it (`make bench` runs it before the timings).\n")
        return L
    with open(path) as f:
        lines = f.read().rstrip("\n").split("\n")
    if path == fresh and os.path.abspath(fresh) != os.path.abspath(kept):
        shutil.copyfile(fresh, kept)
    m = re.match(r"# Sweep cost \((.*)\)$", lines[0]) if lines else None
    L.append("Measured apart from the timings above: sweep time per GiB scanned and per stopped "
             "thread, and the real programs under the smallest cap that forces sweeps, against "
             "none.  Shown: %s, %s.\n" % ("the latest `make bench-sweep` of this build" if path == fresh else
                                           "the last run kept in [sweep.md](sweep.md)",
                                           m.group(1) if m else "undated"))
    body = lines[1:] if m else lines
    while body and not body[0].strip():
        body = body[1:]
    L.extend(body)
    L.append("")
    return L


def kvm_model_section(args):
    """Issue 20's hardware model: the section of `make bench-kvm`'s output
    that prices the rig's kvm counts (bench/kvm_model.py).  The fresh
    build/bench/kvm-rig.md is kept in results/; without one, the kept one."""
    fresh = os.path.join(os.path.abspath(args.build), "bench", "kvm-rig.md")
    kept = os.path.join(args.out, "kvm-rig.md")
    head = "## What kvm would cost on hardware"
    L = [head + " (`make bench-kvm`: a model, not a measurement)\n"]
    found = []
    for path in (fresh, kept):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if any(l.startswith(head) for l in text.split("\n")):
            found.append((path, text))
    if not found:
        L.append("Not measured: `make bench-kvm` prints it (bench/README.md, \"What kvm would cost "
                 "on hardware\").\n")
        return L
    path, text = found[0]
    if path == fresh and os.path.abspath(fresh) != os.path.abspath(kept):
        shutil.copyfile(fresh, kept)
    lines = text.split("\n")
    start = next(i for i, l in enumerate(lines) if l.startswith(head))
    # up to the next section, or the rig's progress lines ("# ...") before it
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    L.append("Shown: %s; the whole run in [kvm-rig.md](kvm-rig.md).\n" % (
        "the latest `make bench-kvm` of this build" if path == fresh else "the last run kept"))
    body = lines[start + 1:end]
    while body and not body[0].strip():
        body = body[1:]
    L.extend(body)
    L.append("")
    return L


def report(args, quick, runs, scale, timeout, allocs, wls, res, floors, stats, inputs, elapsed,
           mi=None, when=None):
    mi = mi or machine_info()
    when = when or time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    names = [a["name"] for a in allocs]
    byname = {a["name"]: a for a in allocs}
    table_wls = [w for w in wls if w["kind"] != "micro"]
    dl = [a["name"] for a in allocs if a.get("dangless")]

    def cell(wname, aname):
        """median metrics over ok runs, or the failure"""
        runs_ = res.get((wname, aname))
        if byname[aname].get("missing"):
            return dict(fail=byname[aname]["missing"])
        if not runs_:
            return dict(fail="not run")
        if all(x["status"] == "disturbed" for x in runs_):
            return dict(fail="disturbed", n=len(runs_), fails=len(runs_), maps=0)
        runs_ = [x for x in runs_ if x["status"] != "disturbed"]
        ok = [x for x in runs_ if x["status"] == "ok"]
        fails = [x["status"] for x in runs_ if x["status"] != "ok"]
        if not ok:
            return dict(fail=fails[0], fails=len(fails), n=len(runs_),
                        maps=max(x["maps"] or 0 for x in runs_), note=runs_[0].get("note", ""))
        c = dict(n=len(runs_), fails=len(fails), failwhat=fails[0] if fails else None)
        for x in ok:
            # without shared memory the footprint is the RSS, and the kernel's
            # high-water mark beats a sample that may miss the peak of a short run
            if not x.get("shm_kb"):
                x["foot_kb"] = max(x.get("foot_kb") or 0, x["rss_kb"])
        for m in ("wall", "work", "rss_kb", "pte_kb", "maps", "shm_kb", "foot_kb", "pss_pte_kb"):
            c[m] = med([x.get(m) for x in ok])
        c["rss_pte_kb"] = med([x["rss_kb"] + (x["pte_kb"] or 0) for x in ok])
        c["foot_pte_kb"] = med([x["foot_kb"] + (x["pte_kb"] or 0) for x in ok if x.get("foot_kb") is not None])
        return c

    # runs that met a limit lowered by someone else do not count (also for
    # raw files written before the harness retried them)
    try:
        mmc0 = int(mi["max_map_count"])
    except (KeyError, ValueError, TypeError):
        mmc0 = None
    for rr in res.values():
        for x in rr:
            if mmc0 and x["status"] not in ("ok", "disturbed") and disturbed(x, mmc0):
                x["note"] = disturbed(x, mmc0)
                x["status"] = "disturbed"
    cells = {(w["name"], n): cell(w["name"], n) for w in wls for n in names}
    fl = {k: med([f.get(k) for f in floors]) for k in set().union(*floors)} if floors else {}

    def ratio(wname, aname, m):
        c, g = cells[(wname, aname)], cells[(wname, "glibc")]
        if c.get("fail") or g.get("fail") or not g.get(m) or c.get(m) is None:
            return None
        return c[m] / g[m]

    L = []
    L.append("# Dangless benchmarks, side by side\n")
    L.append("Generated by `bench/harness.py` (`make bench%s`) on %s UTC, in %.0f s.\n"
             % (" QUICK=1" if quick else "", when, elapsed))
    L.append("- Mode: **%s** (scale %g, %d runs per cell, interleaved; medians; per-run timeout %g s)"
             % ("quick" if quick else "full", scale, runs, timeout))
    L.append("- Machine: %s, kernel %s, %d CPUs (%s), %d MiB RAM, vm.max_map_count %s; load average at the end %.1f/%.1f/%.1f"
             % (mi["os"], mi["kernel"], mi["nproc"], mi["cpu"], mi["mem_mib"], mi["max_map_count"], *mi["load"]))
    L.append("- The machine is shared and noisy: compare ratios within this run, not absolute times across runs.")
    L.append("- Ratios are to glibc on the same workload in the same run (lower is better); "
             "cells show `ratio (median)`.\n")

    L.append("@@SUMMARY@@")
    L.append("## Allocators\n")
    if DANGLESS_INFO:
        L.append("Dangless: %s.\n" % DANGLESS_INFO)
    L.append("| name | library | environment | state |")
    L.append("|---|---|---|---|")
    ver = {"jemalloc": pkg_version("libjemalloc2"), "mimalloc": pkg_version("libmimalloc2.0"),
           "efence": pkg_version("electric-fence"), "glibc": pkg_version("libc6")}
    for a in allocs:
        lib = a["preload"] or "(system malloc)"
        st = a.get("missing") or ("Debian %s" % ver[a["name"]] if a["name"] in ver else "built")
        L.append("| %s | `%s` | %s | %s |" % (a["name"], os.path.relpath(lib, ROOT) if lib.startswith(ROOT) else lib,
                                            " ".join("`%s=%s`" % kv for kv in a["env"].items()) or "-", st))
    L.append("")

    # Floor
    L.append("## The page-table floor (measured in this run, `build/bench/floor`)\n")
    L.append("memfd pages mapped `MAP_SHARED`, each step at addresses never used before (as Dangless's aliases); "
             "every revocation on pages written first; medians over %d runs of the floor program.\n" % len(floors))
    L.append("| operation | ns |")
    L.append("|---|---|")
    for k, d in FLOOR_ROWS:
        if fl.get(k) is not None:
            L.append("| %s | %.0f |" % (d, fl[k]))
        elif k in fl:
            L.append("| %s | n/a (refused by this kernel) |" % d)
    L.append("")
    for note in FLOOR_NOTES:
        L.append("- floor: %s" % note)
    if FLOOR_NOTES:
        L.append("")

    # Per-object cost against the floor
    pair, pairmin = {}, {}
    for n in names:
        per, permin = {}, {}
        for x in res.get(("pair", n), []):
            for line in x.get("stdout", "").splitlines():
                m = re.match(r"size (\d+) ns ([\d.]+)(?: min ([\d.]+))?", line)
                if m:
                    per.setdefault(int(m.group(1)), []).append(float(m.group(2)))
                    if m.group(3):
                        permin.setdefault(int(m.group(1)), []).append(float(m.group(3)))
        pair[n] = {s: med(v) for s, v in per.items()}
        pairmin[n] = {s: min(v) for s, v in permin.items()}
    fs = (fl.get("bulk_map_populate_ns_per_page") or 0) + (fl.get("single_revoke_mprotect_ns") or 0)
    fsg = (fl.get("bulk_map_populate_ns_per_page") or 0) + (fl.get("single_guard_install_ns") or 0)
    fb = (fl.get("bulk_map_populate_ns_per_page") or 0) + (fl.get("bulk_revoke_mprotect_ns_per_page") or 0)
    L.append("## Cost per object (malloc(64)+write+free, `pair` microbenchmark) against the floor\n")
    L.append("Floor for strict mode = bulk map + single-page revoke (mprotect) = %.0f ns "
             "(with guard install instead of mprotect: %.0f ns); floor for batch mode = bulk map + bulk revoke = %.0f ns.\n"
             % (fs, fsg, fb))
    L.append("Median of the slices of each run, median over runs; the best slice of all runs in the next column "
             "(this machine is shared: the best slice is what the allocator costs when nothing else runs).\n")
    L.append("| allocator | ns per pair at 64 B | best slice | x glibc | x strict floor | x batch floor |")
    L.append("|---|---|---|---|---|---|")
    g64 = pair.get("glibc", {}).get(64)
    for n in names:
        v = pair.get(n, {}).get(64)
        if v is None:
            st = cells.get(("pair", n), {}).get("fail", "-") if ("pair", n) in cells else "-"
            L.append("| %s | %s | | | | |" % (n, st))
            continue
        vm = pairmin.get(n, {}).get(64)
        L.append("| %s | %.1f | %s | %s | %s | %s |" % (n, v, "%.1f" % vm if vm else "-", fmt_ratio(v / g64) if g64 else "-",
                                                  "%.2f" % (v / fs) if fs else "-", "%.2f" % (v / fb) if fb else "-"))
    L.append("")
    sizes = sorted(set().union(*[set(p) for p in pair.values()])) if pair else []
    if sizes:
        L.append("### ns per malloc+free pair by size\n")
        L.append("| size | " + " | ".join(names) + " |")
        L.append("|---|" + "---|" * len(names))
        for s in sizes:
            row = []
            for n in names:
                v = pair.get(n, {}).get(s)
                row.append("-" if v is None else ("%.1f" % v if v < 1000 else "%.0f" % v))
            L.append("| %s | %s |" % ("%d B" % s if s < 1024 else "%d KiB" % (s // 1024), " | ".join(row)))
        L.append("")

    # Metric tables
    metrics = [("wall", "Wall time"),
               ("work", "Work time (timed inside our C workloads: process start and exit left out)"), ("rss_kb", "Peak RSS (VmHWM / ru_maxrss)"),
               ("pte_kb", "Page-table memory at peak (VmPTE, sampled)"),
               ("maps", "Mappings at peak (/proc/PID/maps lines, sampled)"),
               ("foot_kb", "Memory footprint at peak (RssAnon + RssFile + memfd pages counted once, sampled; the peak RSS where there is no shared memory)"),
               ("pss_pte_kb", "Footprint with page tables, the live set in place: Pss + memfd pages mapped nowhere + VmPTE "
                "(higher of the sampled peak and the workload's own reading with its live set in place)"),
               ("shm_kb", "Shared-memory part of RSS at peak (RssShmem, sampled): memfd pages, counted once per mapping")]
    geo = {}
    for m, title in metrics:
        L.append("## %s\n" % title)
        L.append("| workload | " + " | ".join(names) + " |")
        L.append("|---|" + "---|" * len(names))
        rows_wls = [w for w in table_wls if w["kind"] == "synth"] if m == "work" else table_wls
        for w in rows_wls:
            row = []
            for n in names:
                c = cells[(w["name"], n)]
                if c.get("fail"):
                    f = c["fail"]
                    if c.get("n") and c.get("fails", 0) < c["n"]:
                        f += " %d/%d" % (c["fails"], c["n"])
                    elif c.get("n"):
                        f = "**%s**" % f
                    if m == "maps" and c.get("maps"):
                        f += " (maps %d)" % c["maps"]
                    row.append(f)
                    continue
                r = ratio(w["name"], n, m)
                if m == "shm_kb":
                    row.append(fmt_abs(m, c[m]) if c[m] is not None else "n/s")
                    continue
                if c[m] is None:
                    row.append("n/s")
                    continue
                s = fmt_abs(m, c[m]) if n == "glibc" else "%s (%s)" % (fmt_ratio(r), fmt_abs(m, c[m]))
                if c.get("fails"):
                    s += " [%s %d/%d]" % (c["failwhat"], c["fails"], c["n"])
                row.append(s)
            L.append("| %s | %s |" % (w["name"], " | ".join(row)))
        if m == "shm_kb":
            L.append("")
            continue
        row = []
        for n in names:
            rs = [ratio(w["name"], n, m) for w in rows_wls]
            ok = [x for x in rs if x]
            gm = geomean(ok)
            geo[(m, n)] = gm
            row.append("1" if n == "glibc" else "%s (%d/%d ok)" % (fmt_ratio(gm), len(ok), len(rows_wls)) if gm else "-")
        L.append("| **geomean** | %s |" % " | ".join("**%s**" % x for x in row))
        L.append("")
    L.extend(split_table(res, table_wls, names))
    L.append("`disturbed`: vm.max_map_count was lowered by someone else on the machine while it ran "
             "(tried 3 times); such runs are left out of the medians and the targets.\n")
    L.append("`n/s`: not sampled (the run ended before the first /proc sample). "
             "VmPTE and maps are sampled every 1-10 ms and summed over the process tree.\n")
    S = ["## Summary\n",
         "Geomeans of the ratios to glibc over the workloads each allocator completed (details below).\n",
         "| allocator | completed | wall time | work time (ours) | peak RSS | footprint | footprint (Pss) + page tables | page tables | mappings | ns per malloc+free (64 B) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        if byname[n].get("missing"):
            S.append("| %s | %s | | | | | | | | |" % (n, byname[n]["missing"]))
            continue
        okn = sum(1 for w in table_wls if not cells[(w["name"], n)].get("fail"))
        v = pair.get(n, {}).get(64)
        S.append("| %s | %d/%d | %s |" % (n, okn, len(table_wls), " | ".join(
            ["1" if n == "glibc" else fmt_ratio(geo.get((m, n))) for m in ("wall", "work", "rss_kb", "foot_kb", "pss_pte_kb", "pte_kb", "maps")]
            + ["%.1f" % v if v is not None else "-"])))
    S.append("")
    L[L.index("@@SUMMARY@@")] = "\n".join(S)
    L.append("Geomeans are over the workloads that completed under both glibc and that allocator; "
             "an allocator that crashed on the heavy workloads looks better than it is.\n")

    def verdict(val, goal):
        if val is None:
            return "n/a"
        return "met" if val <= goal else "missed by %.2fx" % (val / goal)

    thr = threads_by_count(res, names)
    if thr:
        counts = sorted({t for per in thr.values() for t in per})
        L.append("## Throughput by thread count (`threads`: the same work at each count, ops/s)\n")
        L.append("| allocator | " + " | ".join("%d thread%s" % (t, "s" if t > 1 else "") for t in counts)
                 + " | %d threads / 1 |" % counts[-1])
        L.append("|---|" + "---|" * (len(counts) + 1))
        for n in names:
            per = thr.get(n)
            if not per:
                continue
            last = per.get(counts[-1]) / per[1] if per.get(1) and per.get(counts[-1]) else None
            L.append("| %s | %s | %s |" % (n, " | ".join(fmt_rate(per.get(t)) for t in counts),
                                          "%.2f" % last if last else "-"))
        L.append("")

    fork_us = {n: med([v.get("fork_us") for v in parse_line(res, "forkheap", n, "forkheap")]) for n in names}
    if any(fork_us.values()):
        L.append("## Fork server (`forkheap`: fork + a child writing 64 objects + exit + waitpid, parent holding a 10 MB heap)\n")
        L.append("What a fork server (afl-fuzz with an instrumented target, or its QEMU mode) pays per input "
                 "on top of running the input.\n")
        L.append("| allocator | per fork | x glibc |")
        L.append("|---|---|---|")
        for n in names:
            v, g = fork_us.get(n), fork_us.get("glibc")
            L.append("| %s | %s | %s |" % (n, "%.0f us" % v if v else cells[("forkheap", n)].get("fail", "-"),
                                         "%.1fx" % (v / g) if v and g else "-"))
        L.append("")

    if AFL_RESULTS:
        secs = med([x["secs"] for x in AFL_RESULTS if x.get("secs")])
        L.append("## Fuzzing (afl-fuzz -n, `build/bench/afl_target`, %s s per run, execs per second)\n"
                 % ("%.0f" % secs if secs else "?"))
        L.append("`afl-fuzz -n -t 10000 -V S -i IN -o OUT -- build/bench/afl_target` with `AFL_PRELOAD` set to the "
                 "allocator (`AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1`); execs/s = total_execs / "
                 "relative_time from afl's plot_data; median of the runs.  Every input is a fork of afl-fuzz "
                 "and an exec of the target, so this is mostly start-up cost.\n")
        L.append("| allocator | execs/s | x glibc (throughput) | runs |")
        L.append("|---|---|---|---|")
        by = {}
        for x in AFL_RESULTS:
            by.setdefault(x["name"], []).append(x)
        g = med([x["eps"] for x in by.get("glibc", []) if x.get("eps")])
        for n, xs in by.items():
            e = med([x["eps"] for x in xs if x.get("eps")])
            bad = [x["status"] for x in xs if x["status"] != "ok"]
            L.append("| %s | %s | %s | %d%s |" % (n, "%.0f" % e if e else "-", "%.2fx" % (e / g) if e and g else "-",
                                                len(xs), " (%s)" % ", ".join(bad) if bad else ""))
        L.append("")

    L.append("## Targets\n")
    L.append("### Issue 12: each mode against its own floor, measured in this run\n")
    L.extend(issue12_targets(res, cells, byname, dl, table_wls, fl, thr, ratio, verdict))
    L.append("### Issue 3\n")
    L.append("| target | mode | measured | goal | verdict |")
    L.append("|---|---|---|---|---|")
    for n in dl:
        mode = byname[n].get("mode")
        v = pair.get(n, {}).get(64)
        if mode == "strict":
            L.append("| per object, strict <= 2x (bulk map + single-page revoke) | %s | %s | %s | %s |"
                     % (mode, "%.0f ns" % v if v else cells.get(("pair", n), {}).get("fail", "-"), "%.0f ns" % (2 * fs),
                        verdict(v, 2 * fs)))
        else:
            L.append("| per object, batch <= 2x (bulk map + bulk revoke) | %s | %s | %s | %s |"
                     % (mode, "%.0f ns" % v if v else cells.get(("pair", n), {}).get("fail", "-"), "%.0f ns" % (2 * fb),
                        verdict(v, 2 * fb)))
    for n in dl:
        reals = [(w["name"], ratio(w["name"], n, "wall")) for w in table_wls if w["kind"] == "real"]
        bad = [w for w, r in reals if r is None]
        okr = [(r, w) for w, r in reals if r is not None]
        worst = max(okr) if okr else None
        meas = ("worst %s %s, geomean %s" % (worst[1], fmt_ratio(worst[0]), fmt_ratio(geomean([r for r, _ in okr])))
                if worst else "-")
        if bad:
            meas += "; failed: " + ", ".join(bad)
        v = worst[0] if worst and not bad else None
        L.append("| real programs within 1.5x glibc wall time | %s | %s | 1.5x | %s |"
                 % (byname[n]["mode"], meas, verdict(v, 1.5) if not bad else "missed (failures)"))
    for n in dl:
        rs = [(ratio(w["name"], n, "rss_pte_kb"), w["name"]) for w in table_wls]
        okr = [x for x in rs if x[0] is not None]
        worst = max(okr) if okr else None
        L.append("| peak RSS + page tables within 1.25x glibc | %s | %s | 1.25x | %s |"
                 % (byname[n]["mode"], "worst %s %s, geomean %s" % (worst[1], fmt_ratio(worst[0]),
                                                                      fmt_ratio(geomean([r for r, _ in okr])))
                    if worst else "-", verdict(worst[0] if worst else None, 1.25)))
    for n in dl:
        rs = [(ratio(w["name"], n, "foot_pte_kb"), w["name"]) for w in table_wls]
        okr = [x for x in rs if x[0] is not None]
        worst = max(okr) if okr else None
        L.append("| same, with the footprint (memfd pages once) in place of RSS | %s | %s | 1.25x | %s |"
                 % (byname[n]["mode"], "worst %s %s, geomean %s" % (worst[1], fmt_ratio(worst[0]),
                                                                      fmt_ratio(geomean([r for r, _ in okr])))
                    if worst else "-", verdict(worst[0] if worst else None, 1.25)))
    for n in dl:
        rr = res.get(("longlived", n), [])
        vals = [maps_per_live(x.get("stdout", "")) for x in rr]
        vals = [v for v in vals if v is not None]
        crashed = any(x["status"] != "ok" for x in rr)
        st = stats.get(("longlived", n), {}).get("stderr", "")
        m = re.search(r"mappings_per_live_object = ([\d.]+)", st)
        own = "; Dangless's own count at the peak (alias mappings live / live objects): %s" % m.group(1) if m else ""
        if vals:
            v = med(vals)
            L.append("| at most one mapping per 16 live objects (longlived: maps above the start / live objects, worst point%s) | %s | %.4f per object (1 per %.1f)%s | 0.0625 | %s |"
                     % ("; runs that died count up to their death" if crashed else "", byname[n]["mode"], v,
                        1 / v if v > 0 else float("inf"), own, verdict(v, 1 / 16)))
        else:
            L.append("| at most one mapping per 16 live objects (longlived) | %s | %s | 0.0625 | n/a |"
                     % (byname[n]["mode"], byname[n].get("missing") or "no data"))
    for n in dl:
        if byname[n].get("missing"):
            L.append("| no workload dies (vm.max_map_count %s) | %s | not built | none | n/a |" % (mi["max_map_count"], byname[n]["mode"]))
            continue
        dead = []
        for w in wls:
            rr = res.get((w["name"], n), [])
            f = [x for x in rr if x["status"] not in ("ok", "disturbed")]
            if f:
                dead.append("%s: %s %d/%d%s" % (w["name"], f[0]["status"], len(f), len(rr),
                                                " (maps %d)" % max(x["maps"] or 0 for x in f) if max(x["maps"] or 0 for x in f) > 30000 else ""))
        L.append("| no workload dies (vm.max_map_count %s) | %s | %s | none | %s |"
                 % (mi["max_map_count"], byname[n]["mode"], "; ".join(dead) or "none died",
                    "met" if not dead else "missed (%d workloads)" % len(dead)))
    L.append("")

    # Failures and notes
    notes = []
    seen_mmc = sorted({x.get("max_map_count") for rr in res.values() for x in rr if x.get("max_map_count")})
    if len(seen_mmc) > 1 or (seen_mmc and str(seen_mmc[0]) != mi["max_map_count"]):
        L.append("**Note:** vm.max_map_count changed during this run (seen: %s) - someone else on the machine "
                 "set it; runs that died of the map limit may have met a lower limit.\n"
                 % ", ".join(map(str, seen_mmc)))
    for (wname, n), rr in sorted(res.items()):
        for i, x in enumerate(rr):
            if x["status"] != "ok":
                notes.append("- %s / %s run %d: **%s** %s, maps at peak %s (vm.max_map_count %s)%s"
                             % (wname, n, i + 1, x["status"],
                                "after %.2f s" % x["wall"] if x["wall"] == x["wall"] else "at start",
                                x["maps"], x.get("max_map_count"), (": `%s`" % x["note"].replace("`", "'")) if x.get("note") else ""))
    if notes:
        L.append("## Crashes, timeouts and failures\n")
        L.extend(notes)
        L.append("")
    dmsgs = {}
    for (wname, n), rr in res.items():
        if not byname[n].get("dangless"):
            continue
        for x in rr:
            for line in x.get("stderr", "").splitlines():
                if line.startswith("dangless:") and ("in DANGLESS_OPTIONS" in line or "warning" in line):
                    dmsgs.setdefault((n, line.strip()[:200]), set()).add(wname)
    if dmsgs:
        L.append("## What Dangless said about its options\n")
        for (n, line), ws in sorted(dmsgs.items()):
            L.append("- %s (%s): `%s`" % (n, ", ".join(sorted(ws)), line.replace("`", "'")))
        L.append("")
    if stats:
        L.append("## Dangless's cost per allocation in the workloads\n")
        L.append("Allocations counted by Dangless (`allocs` at exit, from the untimed counter runs); "
                 "cost per allocation = (Dangless's median time - glibc's) / allocations, with the work "
                 "time where the workload reports one, else the wall time.  Compare with the floor per "
                 "object (strict %.0f ns, batch %.0f ns for one page).\n" % (fs, fb))
        L.append("| workload | allocations | " + " | ".join("%s ns/alloc" % n for n in dl) + " |")
        L.append("|---|---|" + "---|" * len(dl))
        for w in table_wls:
            allocs_n = None
            row = []
            for n in dl:
                st = stats.get((w["name"], n))
                a_ = [int(v) for v in re.findall(r"^dangless:\s+allocs = (\d+)", st["stderr"], re.M)] if st else []
                # one block per process (gcc runs three); longlived also prints one at its peak
                a_ = [a_[-1]] if a_ and w["name"] == "longlived" else a_
                if a_:
                    a_ = [sum(a_)]
                    allocs_n = allocs_n or a_[0]
                c, g = cells[(w["name"], n)], cells[(w["name"], "glibc")]
                m = "work" if c.get("work") is not None and g.get("work") is not None else "wall"
                if a_ and not c.get("fail") and not g.get("fail") and c.get(m) is not None and g.get(m) is not None:
                    row.append("%.0f" % ((c[m] - g[m]) * 1e9 / int(a_[-1])))
                else:
                    row.append(c.get("fail") or "-")
            if allocs_n:
                L.append("| %s | %d | %s |" % (w["name"], allocs_n, " | ".join(row)))
        L.append("")
    if stats:
        L.append("## Dangless counters at exit (untimed extra runs with `%s`)\n" % DANGLESS_STATS_OPT)
        L.append("(longlived, churn and churn_scattered shown; the other counter runs only feed the table above.)\n")
        for (wname, n), st in sorted(stats.items()):
            if wname not in ("longlived", "churn", "churn_scattered"):
                continue
            L.append("### %s, %s (`DANGLESS_OPTIONS=%s`): %s\n" % (wname, n, st["env"], st["status"]))
            txt = "\n".join(l for l in st["stderr"].splitlines() if l.strip())[-3000:]
            L.append("```\n%s\n```\n" % (txt or "(nothing on stderr)"))

    L.extend(sweep_section(args))
    L.extend(kvm_model_section(args))
    L.append("## Workloads and exact commands\n")
    L.append("Run from the repository root.  `build/bench/*` are built from `bench/workloads/*.c` by `bench/bench.mk`. "
             "Each cell runs the command with the allocator's environment (shown here for glibc, "
             "where nothing is preloaded; redis-server, which Debian links against libjemalloc, "
             "gets `LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6` so that glibc's malloc wins).\n")
    L.append("| workload | models | command |")
    L.append("|---|---|---|")
    for w in wls:
        c = "(skipped: %s)" % w["missing"] if w.get("missing") else "`%s`" % cmdline(w, byname["glibc"])
        L.append("| %s | %s | %s |" % (w["name"], w["what"], c))
    L.append("")
    L.append("Harness: `/usr/bin/python3 bench/harness.py --build build%s` (via `make bench%s`).  "
             "Allocator environments are in the Allocators table above.\n"
             % (" --quick" if quick else "", " QUICK=1" if quick else ""))
    L.append("Plots: [wall-time ratio to glibc](wall-ratio.svg), "
             "[ns per malloc+free by size, with the floor](pair.svg).\n")

    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(L))
    # the headline on the terminal: the floor, cost per object, throughput by
    # thread count, targets (with their subsections), geomeans
    show, section = False, ""
    for line in L:
        if line.startswith("## Summary"):
            continue
        if line.startswith("## "):
            section = line
            show = line.startswith(("## The page-table floor", "## Cost per object", "## Throughput by thread",
                                    "## Fork server", "## Fuzzing", "## Targets"))
        elif line.startswith("### "):
            show = section.startswith("## Targets")
        if show:
            print(line, file=sys.stderr)
    print("\n".join(S), file=sys.stderr)
    svg_plot(os.path.join(args.out, "wall-ratio.svg"), table_wls, names, cells, ratio, quick, geo)
    svg_pair(os.path.join(args.out, "pair.svg"), names, pair, fl, quick)
    print("bench: wrote %s/results.md, raw.json, wall-ratio.svg, pair.svg" % os.path.relpath(args.out), file=sys.stderr)


def svg_plot(path, wls, names, cells, ratio, quick, geo):
    """Grouped bars, log scale: wall-time ratio to glibc per workload per
    allocator.  Crashes and timeouts are marked with an X."""
    others = [n for n in names if n != "glibc"]
    wls = list(wls) + [dict(name="geomean")]
    real_ratio = ratio

    def ratio(w, n, m):
        return geo.get((m, n)) if w == "geomean" else real_ratio(w, n, m)
    colors = ["#4e79a7", "#59a14f", "#e15759", "#f28e2b", "#b07aa1", "#9c755f", "#76b7b2", "#edc948"]
    W, left, top, bottom = 1100, 60, 50, 110
    H = 460
    ph = H - top - bottom
    lo, hi = -1, 4  # 0.1x .. 10000x
    vals = [ratio(w["name"], n, "wall") for w in wls for n in others]
    vmax = max([v for v in vals if v] or [10])
    hi = max(1, math.ceil(math.log10(vmax)))
    gw = (W - left - 20) / max(1, len(wls))
    bw = gw * 0.8 / max(1, len(others))

    def y(v):
        return top + ph * (hi - math.log10(v)) / (hi - lo)
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14">Wall time, ratio to glibc (log scale, lower is better; %s mode; X = crash/timeout/not run)</text>'
         % (left, "quick" if quick else "full")]
    for e in range(lo, hi + 1):
        yy = y(10 ** e)
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (left, W - 20, yy, yy, "#333" if e == 0 else "#ddd"))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%gx</text>' % (left - 4, yy + 4, 10 ** e))
    for i, w in enumerate(wls):
        x0 = left + i * gw + gw * 0.1
        for j, n in enumerate(others):
            v = ratio(w["name"], n, "wall")
            x = x0 + j * bw
            col = colors[j % len(colors)]
            if v:
                y1, y0 = y(v), y(1)
                o.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s %.2fx</title></rect>'
                         % (x, min(y0, y1), bw * 0.9, max(1, abs(y1 - y0)), col, w["name"], n, v))
            else:
                o.append('<text x="%.1f" y="%.1f" fill="%s" font-size="10" text-anchor="middle">X</text>' % (x + bw / 2, y(1) - 3, col))
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (left + i * gw + gw / 2, H - bottom + 16, w["name"]))
    for j, n in enumerate(others):
        lx = left + (j % 4) * 200
        ly = H - bottom + 45 + (j // 4) * 18
        o.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>'
                 % (lx, ly - 10, colors[j % len(colors)], lx + 16, ly, n))
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def svg_pair(path, names, pair, fl, quick):
    """ns per malloc+free pair against size, log-log, one line per
    allocator, with the floor's per-page costs as horizontal lines."""
    colors = {"glibc": "#333333", "jemalloc": "#4e79a7", "mimalloc": "#59a14f", "efence": "#e15759"}
    dcols = ["#f28e2b", "#b07aa1", "#9c755f", "#76b7b2", "#edc948"]
    W, H, left, right, top, bottom = 900, 480, 70, 230, 40, 50
    sizes = sorted(set().union(*[set(p) for p in pair.values()])) if pair else []
    if not sizes:
        return
    vals = [v for p in pair.values() for v in p.values() if v]
    ylo = math.floor(math.log10(max(1, min(vals))))
    yhi = math.ceil(math.log10(max(vals)))
    xlo, xhi = math.log2(sizes[0]), math.log2(sizes[-1])
    pw, ph = W - left - right, H - top - bottom

    def X(sz):
        return left + pw * (math.log2(sz) - xlo) / max(1, xhi - xlo)

    def Y(v):
        return top + ph * (yhi - math.log10(v)) / max(1, yhi - ylo)
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="20" font-size="14">ns per malloc+free (first and last byte written), by size; %s mode</text>'
         % (left, "quick" if quick else "full")]
    for e in range(ylo, yhi + 1):
        o.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, W - right, Y(10 ** e), Y(10 ** e)))
        o.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 4, Y(10 ** e) + 4,
                                                                       "%d ns" % 10 ** e if e < 3 else "%d us" % 10 ** (e - 3) if e < 6 else "%d ms" % 10 ** (e - 6)))
    for sz in sizes:
        lab = "%d" % sz if sz < 1024 else "%dK" % (sz // 1024) if sz < 1 << 20 else "%dM" % (sz >> 20)
        o.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (X(sz), H - bottom + 16, lab))
    o.append('<text x="%d" y="%d" text-anchor="middle">bytes</text>' % (left + pw // 2, H - 10))
    bm = fl.get("bulk_map_populate_ns_per_page") or 0
    br = fl.get("bulk_revoke_mprotect_ns_per_page") or 0
    sr = fl.get("single_revoke_mprotect_ns") or 0
    # pair writes the first and the last byte: one page touched, two from
    # 8 KiB on; the floor counts the pages touched
    floors = [("strict floor: pages touched x bulk map + one single-page revoke", lambda pg: min(pg, 2) * bm + sr),
              ("batch floor: pages touched x (bulk map + bulk revoke)", lambda pg: min(pg, 2) * (bm + br))]
    for lab, f in floors:
        if bm <= 0:
            break
        pts = []
        for sz in sizes:
            v = f(max(1, -(-sz // 4096)))
            if v > 0:
                pts.append((X(sz), Y(min(max(v, 10 ** ylo), 10 ** yhi))))
        o.append('<polyline fill="none" stroke="#999" stroke-dasharray="6,4" points="%s"/>'
                 % " ".join("%.1f,%.1f" % p for p in pts))
        o.append('<text x="%d" y="%.1f" fill="#666">%s (%.0f ns at 1 page)</text>' % (left + 6, pts[0][1] - 4, lab, f(1)))
    k = 0
    ly = top + 10
    for n in names:
        p = pair.get(n, {})
        if not p:
            continue
        col = colors.get(n)
        if not col:
            col = dcols[k % len(dcols)]
            k += 1
        pts = " ".join("%.1f,%.1f" % (X(sz), Y(p[sz])) for sz in sizes if p.get(sz))
        o.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (col, pts))
        o.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>'
                 % (W - right + 6, W - right + 26, ly, ly, col, W - right + 30, ly + 4, n))
        ly += 16
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
