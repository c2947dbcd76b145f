#!/usr/bin/env python3
"""What the kvm backend would cost on hardware: its operations, counted, priced.

A model, and labelled so everywhere it prints.  For each real program of
`make bench` (python3, sqlite3, lua, perl, gcc, redis-server):

    predicted kvm time = glibc's time on this machine
                       + sum over the kvm backend's operations of
                         count (from a run under kvm) x cost on hardware

The counts come from an untimed run under kvm (the timed ones stay
uninstrumented): Dangless's stats=1 (mallocs and
frees, PTE writes, invlpgs, CR3 reloads, shootdowns by signal and by IPI,
page-table pages, exits to host user space) and the host kernel's
kvm_exit trace event (every VM exit by reason, those KVM handles itself
included: nested page faults above all).  The costs per operation, with a
low and a high figure each and their sources, are COSTS below; bench/README.md
("What kvm would cost on hardware") says where each comes from.

Two ways to run it:
- `make bench-kvm` (this machine, no hardware virtualisation): this script
  first measures glibc and host here (--out FILE), then the rig (QEMU TCG)
  runs the same programs under kvm and bench/kvm_rig.py --native FILE prints
  the prediction beside the rig's measured ratios.  The rig's times are
  emulated; only its counts are used.
- `make bench-kvm-model` on a machine with hardware virtualisation (/dev/kvm
  on VT-x or AMD-V): the kvm runs happen here too, and the table shows the
  measured kvm/glibc beside the prediction.  Where kvm is refused (this
  machine), the same target only writes FILE.

Usage: bench/kvm_model.py --build BUILD [--rounds N] [--scale X]
                          [--only a,b] [--timeout S] [--out FILE]
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

import harness

REAL_PROGRAMS = ["python3", "sqlite3", "lua", "perl", "gcc", "redis"]
IN_GUEST = "backend: running in guest ring 0"
BATCH = "revoke=batch:64"
THESIS = ("the Dangless thesis (Kozar 2019, Dune on Intel VT-x): 5.7% run time "
          "over glibc, geometric mean of SPEC CPU2006")

# One row per priced operation: the counter it multiplies, what it is, the
# cost range in ns on current hardware, and where the figures come from
# (bench/README.md has the sources in full).
COSTS = [
    ("processes", "start-up per process", 1000000, 5000000,
     "estimate: libdune's VM (KVM_CREATE_VM, a vCPU, memslots, page tables) "
     "and its probe, a throw-away child VM timing 200,000 loop iterations"),
    ("allocs_frees", "own work per malloc or free", 20, 80,
     "estimate: size class, a chunk's bit masks by atomic read-modify-write, "
     "the quarantine (glibc's malloc+free is ~8 ns); not measurable here"),
    ("pte_writes", "PTE writes", 5, 40,
     "estimate: a store to a page-table page, and the nested page walk of "
     "the first access through the new entry"),
    ("tlb_invlpgs", "invlpgs", 90, 300,
     "INVLPG: 260 cycles (Molnar 2015), ~100 ns (Linux tlb.c), "
     "'100s of cycles' (Amit 2019)"),
    ("tlb_flushes", "CR3 reloads", 100, 2000,
     "MOV CR3: 96 cycles (Molnar 2015); refilling the TLB after it: estimate"),
    ("shootdown_signals", "shootdowns by signal", 5000, 20000,
     "estimate from the rows here: the target leaves KVM_RUN, takes a "
     "signal (1.2-4.6 us) and enters again, the sender's tgkill is a "
     "forwarded system call"),
    ("shootdown_ipis", "shootdowns by IPI", 1200, 2000,
     "kvm-unit-tests ipi, x2APIC, send to handled: 3645 cycles with IPI "
     "virtualisation, 4338 without; Skylake 4238 (Zeng 2021, Li 2020)"),
    ("vm_exits", "exits to host user space", 1000, 4000,
     "KVM_RUN returning to libdune and entered again: 2528 cycles inside "
     "the ioctl on AMD (Roth 2020) plus the return to user space and back "
     "(estimate); the system call itself glibc pays too"),
    ("kernel_exits", "other exits KVM handles", 350, 550,
     "kvm-unit-tests vmexit cpuid 1018-1104 cycles, vmcall 1529-1559 "
     "(Christopherson, Kauer 2024; Li 2020)"),
    ("npf_exits", "nested page faults", 500, 2000,
     "estimate: an exit handled in the kernel plus KVM's NPT/EPT mapping; "
     "the host's own page fault in it is the next row"),
    ("extra_faults", "first touches beyond glibc's", 220, 900,
     "a minor fault with its zeroing: 661 ns with a system call around it "
     "(Amit 2019, Haswell); high: estimate"),
    ("pt_pages", "page-table pages held at exit", 100, 400,
     "estimate: zeroing a 4 KiB page"),
]

# kvm_exit's reasons that are counted apart: the host's own interrupts scale
# with the (emulated) run time, not with the program, and are left out.
EXIT_REASONS = {
    "svm": {"interrupt": 0x60, "io": 0x7b, "npf": 0x400},
    "vmx": {"interrupt": 1, "io": 30, "npf": 48},
}


def cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "").split()
    except OSError:
        return None
    return "vmx" if "vmx" in flags else "svm" if "svm" in flags else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            line = next((l for l in f if l.startswith("model name")), "")
    except OSError:
        line = ""
    return line.split(":", 1)[1].strip() if ":" in line else "CPU unknown"


class ExitCounter:
    """Every VM exit on this host by reason, while the block runs: a
    histogram trigger on the kvm_exit trace event (root, tracefs).  .counts
    is None where tracing is not available."""
    TRACEFS = "/sys/kernel/tracing"
    SPEC = "hist:keys=exit_reason:vals=hitcount"

    def __init__(self):
        self.counts = None
        self.trigger = os.path.join(self.TRACEFS, "events/kvm/kvm_exit/trigger")

    def _write(self, text):
        with open(self.trigger, "w") as f:
            f.write(text + "\n")

    def __enter__(self):
        self.armed = False
        if not os.path.exists(self.trigger):
            subprocess.run(["mount", "-t", "tracefs", "nodev", self.TRACEFS],
                           stderr=subprocess.DEVNULL, check=False)
        for _ in range(2):
            try:
                self._write(self.SPEC)
                self.armed = True
                break
            except FileExistsError:  # left armed by a run that was killed
                self._disarm()
            except OSError:
                break
        return self

    def _disarm(self):
        try:
            self._write("!" + self.SPEC)
        except OSError:
            pass

    def __exit__(self, *exc):
        if not self.armed:
            return False
        try:
            with open(os.path.join(os.path.dirname(self.trigger), "hist")) as f:
                text = f.read()
            counts = {}
            for line in text.splitlines():
                f = line.replace("{", " ").replace("}", " ").replace(":", " ").split()
                if len(f) == 4 and f[0] == "exit_reason" and f[2] == "hitcount":
                    counts[int(f[1])] = int(f[3])
            self.counts = counts
        except (OSError, ValueError):
            self.counts = None
        finally:
            self._disarm()
        return False


def dangless_counters(stderr):
    """stats=1's lines, 'dangless:   name = value (what)', summed over the
    processes that printed them (gcc's driver, cc1 and as each do), and
    'processes': how many printed (each one Dangless started)."""
    out = {"processes": 0.0}
    for line in stderr.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0] == "dangless:" and f[1] == "stats":
            out["processes"] += 1
        elif len(f) >= 4 and f[0] == "dangless:" and f[2] == "=":
            try:
                out[f[1]] = out.get(f[1], 0.0) + float(f[3])
            except ValueError:
                pass
    return out


def dangless_env(so, backend, *options):
    """The environment of a run: nothing preloaded for glibc; otherwise
    Dangless on backend, fallback=0 (a refused kvm backend fails instead of
    timing host), then options.  An inherited preload, options or IPI road
    (DUNE_IPI) is never kept: a run that wants the road sets it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "DANGLESS_OPTIONS", "DUNE_IPI")}
    if backend != "glibc":
        env["LD_PRELOAD"] = so
        env["DANGLESS_OPTIONS"] = ":".join(("backend=" + backend, "fallback=0") +
                                           tuple(o for o in options if o))
    return env


def rotated(items, i):
    """items from position i round: each round and workload starts with
    another allocator, so none always runs first (or after the same one)."""
    k = i % len(items)
    return items[k:] + items[:k]


def run_real(w, alloc, so, timeout, workdir, stats=False, options=""):
    """One real program under glibc, host or kvm: (result, None) or
    (None, why).  The result has wall (s), cpu (utime, stime, minflt of the
    process tree; redis: the server's) and, with stats, Dangless's counters
    and, under kvm, the VM exits by reason.  Dangless says at start-up, at
    verbosity=1, which backend runs each process; a kvm run must say it ran
    in the guest."""
    env = dangless_env(so, alloc, "verbosity=1", "stats=1" if stats else "", options)
    env.update(w.get("env", {}))
    counter = ExitCounter() if alloc == "kvm" and stats else None
    with counter or contextlib.nullcontext():
        if "redis" in w:
            r = harness.run_redis(w["redis"], env, timeout, workdir)
        else:
            r = harness.run_process(w["argv"], env, timeout, stdin=w.get("stdin"))
    if r["status"] != "ok":
        return None, "%s%s" % (r["status"], (": " + r["note"]) if r.get("note") else "")
    if alloc == "kvm" and IN_GUEST not in r.get("stderr", ""):
        return None, "did not run in the guest"
    res = dict(wall=r["wall"], cpu=r.get("cpu"), foot_kb=r.get("pss_pte_kb"),
               npt_kb=r.get("npt_kb") if alloc == "kvm" else None)
    if stats and alloc != "glibc":
        res["counters"] = dangless_counters(r.get("stderr", ""))
        if counter:
            res["exits"] = counter.counts
    return res, None


def real_workloads(build, scale, only, workdir):
    inputs = harness.make_inputs(workdir, scale)
    return [w for w in harness.workloads(build, inputs, scale)
            if w["kind"] == "real" and w["name"] in only]


def kvm_counts(runs, vendor):
    """The operations of kvm runs (medians over rounds), as COSTS keys."""
    def med(get):
        v = [x for x in (get(r) for r in runs) if x is not None]
        return statistics.median(v) if v else None
    out = {"allocs_frees": med(lambda r: (r.get("counters", {}).get("allocs", 0) +
                                          r.get("counters", {}).get("frees", 0))
                               if r.get("counters") else None)}
    for key in ("processes", "pte_writes", "tlb_invlpgs", "tlb_flushes", "shootdown_signals",
                "shootdown_ipis", "vm_exits", "pt_pages", "guest_syscalls"):
        out[key] = med(lambda r: r.get("counters", {}).get(key))
    reasons = EXIT_REASONS.get(vendor or "", {})

    def exits(r, which):
        e = r.get("exits")
        if e is None or not reasons:
            return None
        if which == "npf":
            return e.get(reasons["npf"], 0)
        return sum(n for k, n in e.items() if k not in reasons.values())
    out["npf_exits"] = med(lambda r: exits(r, "npf"))
    out["kernel_exits"] = med(lambda r: exits(r, "kernel"))
    return out


def predict(native, counts):
    """{term: (low s, high s)} for one program; native holds glibc's
    medians measured on the machine the prediction is for."""
    g = native["glibc"]
    terms = {}
    n = dict(counts)
    if n.get("npf_exits") is not None and g.get("minflt") is not None:
        n["extra_faults"] = max(0.0, n["npf_exits"] - g["minflt"])
    for key, what, lo, hi, _ in COSTS:
        c = n.get(key)
        if c is not None:
            terms[what] = (c * lo * 1e-9, c * hi * 1e-9)
    return terms


def pct(x):
    if x < 0.0005:
        return "0"
    return "%.1f%%" % (100.0 * x) if x < 1 else "%.0f%%" % (100.0 * x)


def pct_range(lo, hi):
    a, b = pct(lo), pct(hi)
    return a if a == b else "%s-%s" % (a, b)


def counted(counts):
    """Whether a counting run's figures are there to predict from."""
    return counts is not None and counts.get("allocs_frees") is not None


def ratio_range(terms, g):
    """(low, high) predicted kvm time / glibc's time g."""
    return (1 + sum(t[0] for t in terms.values()) / g,
            1 + sum(t[1] for t in terms.values()) / g)


def print_model(native, counts, measured, counted_where, measured_what, batch=None):
    """The model's tables: the prediction per program beside the kvm/glibc
    measured (measured_what says where: the rig's TCG or hardware), each
    term's share of glibc's time, and the counts.  batch: the counts of
    runs under BATCH, predicted in a column of their own."""
    progs = [p for p in REAL_PROGRAMS if p in native["programs"] and counted(counts.get(p))]
    if not progs:
        print()
        print("## What kvm would cost on hardware (a model): nothing to show "
              "(no program measured both natively and under kvm)")
        return
    print()
    print("## What kvm would cost on hardware (a model, not a measurement)")
    print()
    print("Predicted kvm time = glibc's time on %s + what the kvm backend did, counted in "
          "%s, x costs per operation on current Intel and AMD hardware (low-high; "
          "bench/README.md, \"What "
          "kvm would cost on hardware\", gives the sources). Scale %g; medians of %d native "
          "rounds. For comparison: %s." % (native["machine"], counted_where, native["scale"],
                                            native["rounds"], THESIS))
    print()
    print("| program | glibc s (native) | host / glibc (native, measured) | predicted kvm / glibc "
          "| predicted kvm %s / glibc | kvm / glibc measured %s |" % (BATCH, measured_what))
    print("|---|---|---|---|---|---|")
    ranges, branges = [], []
    allterms = {}
    for p in progs:
        nat = native["programs"][p]
        g = nat["glibc"]["wall"]
        allterms[p] = predict(nat, counts[p])
        r = ratio_range(allterms[p], g)
        bc = (batch or {}).get(p)
        b = ratio_range(predict(nat, bc), g) if counted(bc) else None
        ranges.append(r)
        if b:
            branges.append(b)
        m = measured.get(p)
        print("| %s | %.2f | %.2f | %.2f-%.2f | %s | %s |" % (
            p, g, nat["host"]["wall"] / g, r[0], r[1], "%.2f-%.2f" % b if b else "-",
            "%.2f" % m if m else "-"))

    def gm(rs, i):
        return statistics.geometric_mean([x[i] for x in rs])
    print("| geometric mean | | %.2f | %.2f-%.2f | %s | |" % (
        statistics.geometric_mean([native["programs"][p]["host"]["wall"] /
                                   native["programs"][p]["glibc"]["wall"] for p in progs]),
        gm(ranges, 0), gm(ranges, 1),
        "%.2f-%.2f" % (gm(branges, 0), gm(branges, 1)) if len(branges) == len(progs) else "-"))
    print()
    names = [what for _, what, _, _, _ in COSTS]
    print("Each term as a share of glibc's time (low-high), and the counts it comes from:")
    print()
    print("| program | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for p in progs:
        g = native["programs"][p]["glibc"]["wall"]
        cells = []
        for nm in names:
            t = allterms[p].get(nm)
            cells.append("-" if t is None else pct_range(t[0] / g, t[1] / g))
        print("| %s | %s |" % (p, " | ".join(cells)))
    print()
    keys = [k for k, _, _, _, _ in COSTS if k != "extra_faults"] + ["guest_syscalls"]
    # guest_syscalls: the part of vm_exits that are system calls
    print("| program (counts) | " + " | ".join(keys) + " | glibc minor faults |")
    print("|---|" + "---|" * (len(keys) + 1))
    for p in progs:
        c = counts[p]
        print("| %s | %s | %d |" % (p, " | ".join(
            "-" if c.get(k) is None else "%.0f" % c[k] for k in keys),
            native["programs"][p]["glibc"].get("minflt") or 0))
    print()
    print("Not in the model: the two-dimensional page walk of every TLB miss in the guest "
          "(nested paging) beyond the first access through a new entry; the host's timer "
          "interrupts (they scale with the emulated run time); and the host backend's time, "
          "which this machine inflates (a VM whose first touch of a page costs ~5 us of user "
          "time: Dangless's own work cannot be timed apart here, hence an estimate).")


def kvm_refusal(so):
    """Why kvm does not run on this machine, or None where it does."""
    env = dangless_env(so, "kvm", "verbosity=1")
    p = subprocess.run(["/bin/true"], env=env, capture_output=True, text=True, timeout=60)
    if IN_GUEST in p.stderr:
        return None
    return (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]


def count_runs(wls, so, timeout, workdir, log=print, options="", alloc="kvm"):
    """One untimed run of each program under alloc (kvm, or host) with the
    counters on (stats=1; under kvm the exit histogram too): timed runs stay
    uninstrumented.  options: more DANGLESS_OPTIONS (BATCH: what the model
    says of batched revocation)."""
    counted = {}
    for w in wls:
        res, err = run_real(w, alloc, so, timeout, workdir, stats=True, options=options)
        if err:
            log("# %s under %s%s, counting run: %s" % (w["name"], alloc, " " + options if options
                                                       else "", err))
        else:
            counted[w["name"]] = [res]
    return counted


def measure_native(a):
    """glibc and host here (kvm too where it runs), medians of a.rounds;
    and where kvm runs, a counting run of each program."""
    so = os.path.join(a.build, "libdangless.so")
    harness.SPAWN = os.path.join(a.build, "bench", "spawn")
    for f in (so, harness.SPAWN):
        if not os.path.exists(f):
            sys.exit("kvm_model: %s is not built (make bench-kvm-model builds it)" % f)
    only = a.only.split(",") if a.only else REAL_PROGRAMS
    workdir = tempfile.mkdtemp(prefix="kvm-model-")
    wls = real_workloads(a.build, a.scale, only, workdir)
    refused = kvm_refusal(so)
    if refused:
        print("# kvm does not run here (%s): counts come from the rig" % refused, flush=True)
    allocs = ["glibc", "host"] + ([] if refused else ["kvm"])
    runs = {(w["name"], al): [] for w in wls for al in allocs}
    for r in range(a.rounds):
        for wi, w in enumerate(wls):
            for al in rotated(allocs, r + wi):
                res, err = run_real(w, al, so, a.timeout, workdir)
                if err:
                    print("# %s under %s: %s" % (w["name"], al, err), flush=True)
                else:
                    runs[(w["name"], al)].append(res)
        print("# native round %d of %d done" % (r + 1, a.rounds), flush=True)
    counted = {} if refused else {
        options: count_runs(wls, so, a.timeout, workdir, options=options)
        for options in ("", BATCH)}

    def med(name, al, get):
        v = [get(x) for x in runs[(name, al)] if get(x) is not None]
        return statistics.median(v) if v else None
    native = dict(machine="this machine (%s, Linux %s)" % (cpu_model(), os.uname().release),
                  scale=a.scale,
                  rounds=a.rounds, programs={})
    for w in wls:
        n = w["name"]
        entry = {}
        for al in ("glibc", "host"):
            entry[al] = dict(wall=med(n, al, lambda x: x["wall"]),
                             minflt=med(n, al, lambda x: (x["cpu"] or {}).get("minflt")))
        if entry["glibc"]["wall"] and entry["host"]["wall"]:
            native["programs"][n] = entry
    measured = {n: med(n, "kvm", lambda x: x["wall"]) / native["programs"][n]["glibc"]["wall"]
                for n in native["programs"] if runs.get((n, "kvm"))}
    return native, counted, measured


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.1,
                    help="bench/harness.py's scale (the rig's --real-scale must match)")
    ap.add_argument("--only", default="", help="a comma-separated subset of " +
                    ",".join(REAL_PROGRAMS))
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--out", help="write the native measurement here (JSON) for kvm_rig.py")
    a = ap.parse_args()
    native, counted, measured = measure_native(a)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(native, f, indent=1)
        print("# native measurement written to %s" % a.out)
    if counted:
        vendor = cpu_vendor()
        counts = {options: {n: kvm_counts(r, vendor) for n, r in runs.items()}
                  for options, runs in counted.items()}
        print_model(native, counts[""], measured, "runs here under kvm",
                    "here (hardware virtualisation)", counts[BATCH])
    return 0


if __name__ == "__main__":
    sys.exit(main())
