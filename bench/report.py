#!/usr/bin/python3
"""Writes docs/BENCHMARKS.md from the raw results of `make bench` (standard library only).

Reads bench/out/sparrow.jsonl (bench/sweep.sh), bench/out/peers.jsonl (bench/peers.py),
bench/out/formats.jsonl, bench/out/quant.jsonl and bench/out/run.json (bench/run.sh).

  bench/report.py [--out docs/BENCHMARKS.md] [--dir bench/out]
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

LABELS = {("csr", ""): "CSR", ("bsr", "4x4"): "BSR 4x4", ("bsr", "16x1"): "BSR 16x1",
          ("nm", "2:4"): "N:M 2:4"}
TOL = "|sparse - dense| <= 1e-6 + 2e-5 * (|W| |X|)"


def read_jsonl(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                print("report: %s:%d: %s (line skipped)" % (path, n, e), file=sys.stderr)
    return out


def label_of(fmt, variant):
    return LABELS.get((fmt, variant or ""), fmt.upper() + (" " + variant if variant else ""))


def shape_key(s):
    return "%dx%d" % (s["rows"], s["cols"])


def sp_key(v):
    return None if v is None else round(float(v), 4)


def fx(v, digits=2):
    return "—" if v is None else "%.*f" % (digits, v)


def fms(v):
    if v is None:
        return "—"
    if v >= 100:
        return "%.1f" % v
    if v >= 1:
        return "%.2f" % v
    return "%.4f" % v


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    model, procs, flags = "unknown", 0, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name" and model == "unknown":
                    model = v
                elif k == "processor":
                    procs += 1
                elif k == "flags" and not flags:
                    flags = v
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.0f GiB" % (int(line.split()[1]) / 2 ** 20)
    except OSError:
        pass
    caches = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    for idx in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, idx, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(base, idx, "type")) as f:
                typ = f.read().strip()
            with open(os.path.join(base, idx, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        if typ != "Instruction":
            caches.append("L%s %s" % (level, size))
    isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "asimd") if x in flags.split()]
    return {"model": model, "cores": procs or os.cpu_count(), "mem": mem,
            "caches": ", ".join(caches), "vm": "hypervisor" in flags.split(), "isa": isa,
            "kernel": platform.release()}


NCORES = os.cpu_count() or 1


def contended(r):
    """As bench/sweep.sh and bench/peers.py decide (after the retries): some runnable task waited
    for a CPU more than 10% of the time (PSI), or without PSI other processes left fewer free
    cores than the case had threads."""
    if not r:
        return False
    p = r.get("cpu_pressure")
    if p is not None and p >= 0:
        return p > 0.1
    o = r.get("other_load")
    return o is not None and o > NCORES - r["threads"] + 0.25


def dag(r):
    return "†" if contended(r) else ""


class Data:
    def __init__(self, d):
        self.run = {}
        if os.path.exists(os.path.join(d, "run.json")):
            with open(os.path.join(d, "run.json")) as f:
                self.run = json.load(f)
        self.formats = read_jsonl(os.path.join(d, "formats.jsonl"))
        raw = read_jsonl(os.path.join(d, "sparrow.jsonl"))
        self.errors = [r for r in raw if "error" in r]
        self.sparrow = [r for r in raw if "error" not in r]
        peers = read_jsonl(os.path.join(d, "peers.jsonl"))
        envs = [p for p in peers if p.get("kind") == "env"]
        self.penv = envs[0] if envs else {}
        self.peers = [p for p in peers if p.get("kind") == "result"]
        self.S = {}
        for r in self.sparrow:
            lab = label_of(r["format"], r.get("shape", ""))
            k = (lab, shape_key(r), r["batch"], r["threads"], sp_key(r.get("req_sparsity")))
            self.S[k] = r
        self.P = {}
        for p in self.peers:
            k = (p["peer"], shape_key(p), p["batch"], p["threads"], sp_key(p["req_sparsity"]))
            self.P[k] = p
        self.labels = [l for l in LABELS.values() if any(k[0] == l for k in self.S)]
        self.labels += sorted({k[0] for k in self.S} - set(self.labels))
        order = self.run.get("shapes") or []
        seen = {k[1] for k in self.S} | {k[1] for k in self.P}
        self.shapes = [s for s in order if s in seen] + sorted(seen - set(order))
        self.batches = sorted({k[2] for k in self.S} | {k[2] for k in self.P})
        self.threads = sorted({k[3] for k in self.S} | {k[3] for k in self.P})

    def status(self, label):
        for f in self.formats:
            if label_of(f["format"], f.get("variant", "")) == label:
                return f["status"]
        return "built" if any(k[0] == label for k in self.S) else "unknown"

    def sp(self, label, shape, batch, threads, sparsity):
        return self.S.get((label, shape, batch, threads, sp_key(sparsity)))

    def speedup(self, *k):
        r = self.sp(*k)
        return r["speedup"] if r else None

    def sparsities(self, label, shape, batch, threads):
        return sorted(k[4] for k in self.S
                      if k[:4] == (label, shape, batch, threads) and k[4] is not None)


def break_even(points, top):
    """points: [(sparsity, speedup)] ascending. The sparsity where sparse starts to beat dense,
    whether the speedup dips below 1 again further up, and the indices of the points used."""
    if not points:
        return "—", False, []
    if points[0][1] >= 1.0:
        return "< %g" % points[0][0], any(s < 1.0 for _, s in points), [0]
    for i in range(1, len(points)):
        (s0, v0), (s1, v1) = points[i - 1], points[i]
        if v1 >= 1.0:
            # linear in log(speedup) between the two swept points
            t = (0 - math.log(v0)) / (math.log(v1) - math.log(v0)) if v1 != v0 else 1.0
            x = s0 + t * (s1 - s0)
            wobble = any(v < 1.0 for _, v in points[i:])
            return "%.2f" % x, wobble, [i - 1, i]
    return "none up to %g" % top, False, [len(points) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    a = ap.parse_args()
    D = Data(a.dir)
    if not D.sparrow and not D.errors:
        print("report: no results in %s (run bench/run.sh)" % a.dir, file=sys.stderr)
        return 1
    m = machine()
    L = []
    w = L.append

    # ---- header -------------------------------------------------------------------------------
    run = D.run
    when = run.get("start") or datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                ":(exclude)docs/BENCHMARKS.md")
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    dense = sorted({r.get("dense", "?") for r in D.sparrow})
    isas = sorted({r.get("isa", "?") for r in D.sparrow})
    pe = D.penv
    ob = pe.get("openblas") or []
    py_ob = ", ".join("%s (%s %s)" % (o.get("core"), os.path.basename(o.get("path", "")),
                                      o.get("via", "")) for o in ob) or "not loaded"

    w("# Benchmarks")
    w("")
    w("Generated by `make bench` (`bench/run.sh`: `bench/sweep.sh`, `bench/peers.py`, "
      "`bench/report.py`); do not edit by hand. Raw results: `bench/out/*.jsonl` (not committed).")
    w("")
    if run.get("quick"):
        w("> **Quick run** (`BENCH_QUICK=1`): a small grid with a short minimum time, for "
          "checking the scripts. The numbers are real but noisier and the tables are sparse; "
          "run `make bench` for the full sweep.")
        w("")
    w("## Run")
    w("")
    w("| | |")
    w("|---|---|")
    w("| date | %s |" % when)
    w("| machine | %s, %s cores%s, %s RAM; %s |" % (
        m["model"], m["cores"], " (virtual machine)" if m["vm"] else "", m["mem"] or "?",
        m["caches"] or "caches unknown"))
    w("| CPU features | %s; Linux %s |" % (", ".join(m["isa"]) or "—", m["kernel"]))
    w("| commit | `%s`%s%s |" % (commit, " on `%s`" % branch if branch else "",
                                " (with uncommitted changes)" if dirty else ""))
    w("| sparrow kernels | %s |" % ", ".join(isas))
    w("| dense peer (in sparrow's process) | %s |" % ", ".join(dense))
    w("| OpenBLAS in the Python peers | %s |" % py_ob)
    w("| torch | %s%s |" % (pe.get("torch") or "not installed",
                            "; MKL %s, %s" % ("yes" if pe["torch_config"].get("mkl") else "no",
                                              pe["torch_config"].get("parallel", ""))
                            if pe.get("torch_config") else ""))
    w("| scipy / numpy | %s / %s (Python %s) |" % (pe.get("scipy") or "not installed",
                                                   pe.get("numpy") or "?", pe.get("python", "?")))
    fm = []
    for lab in LABELS.values():
        fm.append("%s: %s" % (lab, D.status(lab)))
    w("| formats | %s |" % "; ".join(fm))
    if run:
        w("| grid | shapes %s; sparsity %s; batch %s (+16, 128 for the FFN shapes); threads %s |" % (
            " ".join(run.get("shapes", [])), " ".join(run.get("sparsities", [])),
            " ".join(run.get("batches", [])), " ".join(run.get("threads", []))))
        loads = [r["other_load"] for r in D.sparrow + D.peers if r.get("other_load") is not None]
        w("| timing | median per side; at least %s s of timed runs per side and case (and >= 6 "
          "runs sparrow, >= 5 peers) |" % run.get("min_time"))
        mins, secs = divmod(int(run.get("seconds", 0)), 60)
        by = run.get("seconds_by_shape") or {}
        w("| sweep time | %d min %02d s%s%s |" % (
            mins, secs, (" (sparrow + peers: " + ", ".join(
                "%s %d + %d s" % (k, v[0], v[1]) for k, v in by.items()) + ")") if by else "",
            "; retries of contended cases %.0f s of a %s s budget" % (
                float(run["retry_spent"]), run.get("retry_budget")) if "retry_spent" in run
            else ""))
        w("| threading environment | %s |" % (
            "`%s`" % run["omp_env"] if run.get("omp_env") else
            "defaults (no OMP_\\*, GOMP_\\* or OPENBLAS_\\* variables set)"))
        if loads:
            cs = sum(1 for r in D.sparrow if contended(r))
            cp = sum(1 for r in D.peers if contended(r))
            w("| contention | other processes kept median %.2f, max %.2f of the %d cores busy "
              "during the cases; a contended case (some task waiting for a CPU > 10%% of the "
              "time) was run again up to twice within the retry budget; %d of %d sparrow and %d of %d peer results "
              "stayed contended: marked † |" % (
                  statistics.median(loads), max(loads), NCORES, cs, len(D.sparrow), cp,
                  len([p for p in D.peers if p.get("ms")])))
    w("")

    # ---- issue targets ------------------------------------------------------------------------
    w("## Issue targets")
    w("")
    w("Speedup = dense OpenBLAS time / sparse time on the same data in the same process.")
    w("")

    def missing(label, what):
        st = D.status(label)
        if st != "built" and st != "unknown":
            return "not measured: %s %s" % (label, st)
        return "not measured: %s not in this run's grid" % what

    def target(ok, text, measured):
        w("- **%s** %s — %s" % ("PASS" if ok else "FAIL", text, measured))

    big = "4096x4096"
    # 1
    b64 = D.speedup("CSR", big, 64, 1, 0.9)
    b1 = D.speedup("CSR", big, 1, 1, 0.9)
    if b64 is None or b1 is None:
        target(False, "CSR 4096x4096 90%, 1 thread: speedup >= 6x at batch 64 and >= 4x at batch 1",
               missing("CSR", "CSR 4096x4096 90% batch 1/64, 1 thread"))
    else:
        target(b64 >= 6 and b1 >= 4,
               "CSR 4096x4096 90%, 1 thread: speedup >= 6x at batch 64 and >= 4x at batch 1",
               "measured: batch 64 %.2fx%s, batch 1 %.2fx%s" % (
                   b64, dag(D.sp("CSR", big, 64, 1, 0.9)), b1, dag(D.sp("CSR", big, 1, 1, 0.9))))
    # 2
    parts, ok, miss = [], True, False
    for shp in ("3072x768", "768x3072"):
        for b in (16, 128):
            v = D.speedup("CSR", shp, b, 2, 0.9)
            if v is None:
                miss = True
                parts.append("%s batch %d —" % (shp, b))
            else:
                ok &= v >= 3
                parts.append("%s batch %d %.2fx%s" % (shp, b, v, dag(D.sp("CSR", shp, b, 2, 0.9))))
    t2 = "CSR 3072x768 and 768x3072 at 90%, batch 16 and 128, 2 threads: >= 3x"
    target(ok and not miss, t2, "measured: " + ", ".join(parts) +
           ("; " + missing("CSR", "some of these cases") if miss else ""))
    # 3
    v = D.speedup("CSR", big, 64, 1, 0.5)
    t3 = "CSR 4096x4096 batch 64, 1 thread, 50%: >= 1.3x"
    target(v is not None and v >= 1.3, t3,
           "measured: %.2fx%s" % (v, dag(D.sp("CSR", big, 64, 1, 0.5))) if v is not None
           else missing("CSR", "CSR 4096x4096 50% batch 64"))
    # 4
    t4 = "N:M 2:4 4096x4096 batch 64: >= 1.6x; BSR 4x4 (or best block shape) at 80%: >= 3x"
    nm = D.speedup("N:M 2:4", big, 64, 1, None)
    bsr = [(lab, D.speedup(lab, big, 64, 1, 0.8)) for lab in D.labels if lab.startswith("BSR")]
    bsr = [(lab, v) for lab, v in bsr if v is not None]
    best = max(bsr, key=lambda x: x[1]) if bsr else None
    nm_t2 = D.speedup("N:M 2:4", big, 64, 2, None)
    p_nm = ("N:M %.2fx (1 thread%s)" % (nm, "; %.2fx at 2" % nm_t2 if nm_t2 else "")
            if nm is not None else "N:M " + missing("N:M 2:4", "N:M 4096x4096 batch 64"))
    p_bsr = ("best BSR %s %.2fx (4096x4096 batch 64, 1 thread%s)" % (
        best[0][4:], best[1], "; " + ", ".join("%s %.2fx" % (l[4:], v) for l, v in bsr))
        if best else "BSR " + missing("BSR 4x4", "BSR 4096x4096 80% batch 64"))
    target(nm is not None and nm >= 1.6 and best is not None and best[1] >= 3, t4,
           "measured: %s; %s" % (p_nm, p_bsr))
    # 5
    t5 = ("at 90%, sparrow CSR >= 5x faster than torch.sparse CSR and SciPy CSR on the same "
          "shape, batch and threads")
    vs = {"torch": [], "scipy": []}
    for k, r in D.S.items():
        lab, shp, b, t, s = k
        if lab != "CSR" or s != 0.9:
            continue
        for peer in vs:
            p = D.P.get((peer, shp, b, t, 0.9))
            if p and p.get("ms"):
                vs[peer].append((p["ms"] / r["sparse_ms"], "%s b%d t%d" % (shp, b, t)))
    if not vs["torch"] and not vs["scipy"]:
        target(False, t5, "not measured: no peer results at 90% (torch/scipy not installed?)")
    else:
        parts, ok = [], True
        for peer, name in (("torch", "torch.sparse"), ("scipy", "SciPy")):
            xs = vs[peer]
            if not xs:
                parts.append("%s not measured" % name)
                ok = False
                continue
            lo = min(xs)
            npass = sum(1 for x, _ in xs if x >= 5)
            ok &= npass == len(xs)
            parts.append("vs %s %d/%d cases >= 5x, min %.2fx (%s), median %.1fx" % (
                name, npass, len(xs), lo[0], lo[1], statistics.median(x for x, _ in xs)))
        target(ok, t5, "measured: " + "; ".join(parts) +
               " (SciPy at 1 thread only; per case below)")
    # 6
    t6 = "max_abs_err within the f32 tolerance for every case (within_tol true everywhere)"
    bad = [r for r in D.sparrow if not r.get("within_tol")]
    worst = max((r.get("err_vs_tol", 0) for r in D.sparrow), default=0)
    target(not bad and bool(D.sparrow), t6,
           "measured: %d/%d cases within tolerance, worst error %.3g of the tolerance%s" % (
               len(D.sparrow) - len(bad), len(D.sparrow), worst,
               "; %d cases failed to run, so have no error to check (listed under Accuracy)"
               % len(D.errors) if D.errors else ""))
    w("")

    # ---- break-even ---------------------------------------------------------------------------
    w("## Break-even sparsity")
    w("")
    w("The sparsity from which sparrow beats dense OpenBLAS (speedup >= 1), per format, shape, "
      "batch and threads: interpolated (linearly in log speedup) between the two swept "
      "sparsities around the crossing; \"< 0.5\" if it already wins at the lowest swept "
      "sparsity, \"none up to 0.99\" if it never does (†: a point it rests on was measured "
      "under CPU contention). N:M has a fixed sparsity (1 - N/M): see its speedup table.")
    w("")
    footnote = False
    for lab in D.labels:
        if lab.startswith("N:M"):
            continue
        for t in D.threads:
            cols = [b for b in D.batches if any((lab, s, b, t) == k[:4] for s in D.shapes
                                                 for k in D.S)]
            if not cols:
                continue
            w("**%s, %d thread%s**" % (lab, t, "s" if t > 1 else ""))
            w("")
            w("| shape | " + " | ".join("batch %d" % b for b in cols) + " |")
            w("|---|" + "---|" * len(cols))
            for shp in D.shapes:
                cells, any_ = [], False
                for b in cols:
                    sps = D.sparsities(lab, shp, b, t)
                    pts = [(s, D.speedup(lab, shp, b, t, s)) for s in sps]
                    if not pts:
                        cells.append("—")
                        continue
                    any_ = True
                    txt, wob, used = break_even(pts, sps[-1])
                    footnote |= wob
                    busy = any(contended(D.sp(lab, shp, b, t, sps[i])) for i in used)
                    cells.append(txt + (" *" if wob else "") + ("†" if busy else ""))
                if any_:
                    w("| %s | %s |" % (shp, " | ".join(cells)))
            w("")
    missing_fmt = [lab for lab in LABELS.values() if D.status(lab) != "built"]
    if missing_fmt:
        w("Not in this run: %s." % "; ".join("%s (%s)" % (l, D.status(l)) for l in missing_fmt))
        w("")
    if footnote:
        w("\\* not monotonic: at some higher swept sparsity the speedup falls below 1 again "
          "(noise or a kernel edge case; see the speedup tables).")
        w("")

    # ---- speedup tables ------------------------------------------------------------------------
    w("## Speedup over dense OpenBLAS")
    w("")
    w("dense time / sparse time (**bold**: sparse wins; †: measured while runnable tasks waited "
      "for a CPU, so less reliable). Dense is "
      "`cblas_sgemv` at batch 1, `sgemm` otherwise, on the same W stored dense, with the same "
      "thread count.")
    w("")
    for lab in D.labels:
        for t in D.threads:
            keys = [k for k in D.S if k[0] == lab and k[3] == t]
            if not keys:
                continue
            cols = sorted({k[2] for k in keys})
            w("**%s, %d thread%s**" % (lab, t, "s" if t > 1 else ""))
            w("")
            w("| shape | sparsity | " + " | ".join("batch %d" % b for b in cols) + " |")
            w("|---|---|" + "---|" * len(cols))
            for shp in D.shapes:
                sps = sorted({k[4] for k in keys if k[1] == shp}, key=lambda s: (s is None, s))
                for s in sps:
                    cells = []
                    for b in cols:
                        r = D.S.get((lab, shp, b, t, s))
                        if not r:
                            cells.append("—")
                        else:
                            v = r["speedup"]
                            c = "%.2f" % v
                            cells.append(("**%s**" % c if v >= 1 else c) + dag(r))
                    sv = "%.2f" % s if s is not None else "%.2f" % statistics.median(
                        D.S[k]["sparsity"] for k in keys if k[1] == shp)
                    w("| %s | %s | %s |" % (shp, sv, " | ".join(cells)))
            w("")

    # ---- peers -----------------------------------------------------------------------------------
    w("## Sparrow CSR against torch.sparse CSR and SciPy CSR")
    w("")
    if not D.peers:
        w("No peer results (torch/scipy not installed, or `bench/peers.py` failed).")
        w("")
    else:
        kc = pe.get("torch_kernel_check") or {}
        w("How many times faster sparrow CSR is: peer time / sparrow time, same shape, sparsity "
          "(same density, different random draw), batch and threads, float32. Cells: "
          "`torch / SciPy`. torch: `W.to_sparse_csr() @ X` with `torch.set_num_threads(T)`; "
          "SciPy: `csr_matrix(W) @ X` (a 1-D `x` at batch 1), single-threaded, so only at "
          "1 thread. Check that torch runs its sparse kernel: profiled ops %s; densifies: %s; "
          "result correct: %s." % (
              ", ".join("`%s`" % o for o in kc.get("ops", []) if o in (
                  "aten::addmm", "aten::mm", "aten::crow_indices", "aten::col_indices")) or "?",
              "yes" if kc.get("densifies") else "no", "yes" if kc.get("result_ok") else "no"))
        w("")
        for t in D.threads:
            keys = [k for k in D.S if k[0] == "CSR" and k[3] == t]
            cols = sorted({k[2] for k in keys if any(
                (peer, k[1], k[2], t, k[4]) in D.P for peer in ("torch", "scipy"))})
            if not cols:
                continue
            w("**%d thread%s**" % (t, "s" if t > 1 else ""))
            w("")
            w("| shape | sparsity | " + " | ".join("batch %d" % b for b in cols) + " |")
            w("|---|---|" + "---|" * len(cols))
            for shp in D.shapes:
                for s in sorted({k[4] for k in keys if k[1] == shp}):
                    cells, any_ = [], False
                    for b in cols:
                        r = D.S.get(("CSR", shp, b, t, s))
                        pv = []
                        for peer in ("torch", "scipy"):
                            p = D.P.get((peer, shp, b, t, s))
                            if r and p and p.get("ms"):
                                pv.append("%.1f%s" % (p["ms"] / r["sparse_ms"],
                                                      "†" if contended(r) or contended(p) else ""))
                                any_ = True
                            else:
                                pv.append("n/a" if p and p.get("note") else "—")
                        cells.append(" / ".join(pv))
                    if any_:
                        w("| %s | %.2f | %s |" % (shp, s, " | ".join(cells)))
            w("")
        w("**Times at 90% sparsity** (ms, median)")
        w("")
        w("| shape | batch | threads | sparrow CSR | OpenBLAS dense | torch.sparse | SciPy | "
          "vs dense | vs torch | vs SciPy | GFLOP/s on nnz |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for shp in D.shapes:
            for b in D.batches:
                for t in D.threads:
                    r = D.S.get(("CSR", shp, b, t, 0.9))
                    if not r:
                        continue
                    pt = D.P.get(("torch", shp, b, t, 0.9)) or {}
                    ps = D.P.get(("scipy", shp, b, t, 0.9)) or {}
                    tm, sm = pt.get("ms"), ps.get("ms")
                    w("| %s | %d | %d | %s%s | %s | %s%s | %s | %s | %s | %s | %.1f |" % (
                        shp, b, t, fms(r["sparse_ms"]), dag(r), fms(r["dense_ms"]), fms(tm),
                        dag(pt), fms(sm) + dag(ps) if sm else ("n/a" if ps.get("note") else "—"),
                        fx(r["speedup"]), fx(tm / r["sparse_ms"] if tm else None, 1),
                        fx(sm / r["sparse_ms"] if sm else None, 1), r["gflops_nnz"]))
        w("")

    # ---- quantized weights (bench/out/quant.jsonl: sparrow bench spmm --dtype i8|i4) -------------
    quant = [r for r in read_jsonl(os.path.join(a.dir, "quant.jsonl")) if "error" not in r]
    if quant:
        w("## Quantized sparse weights (int8, 4-bit)")
        w("")
        w("`sparrow bench spmm --format csr --dtype i8|i4`: the quantized product "
          "(`sp_qcsr_spmm`, activations quantized per sample inside the call) and sparrow's fp32 "
          "CSR product on the same random matrix, in one process. Error: max |y| difference "
          "against the fp32 product of the dequantized operands (it must match to fp32 "
          "rounding); quantization error against the fp32 result in the last column. "
          "docs/QUANTIZATION.md has the format and the kernels.")
        w("")
        w("| shape | sparsity | dtype | batch | threads | quantized ms | f32 CSR ms | "
          "speedup vs f32 | bytes (quantized / f32) | max abs err | vs f32 result |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(quant, key=lambda r: (r["rows"], r["cols"], r["dtype"], r["batch"],
                                              r["threads"])):
            w("| %dx%d | %.2f | %s | %d | %d | %s | %s | %s | %d / %d | %.2g | %.2g |" % (
                r["rows"], r["cols"], r["sparsity"], r["dtype"], r["batch"], r["threads"],
                fms(r["sparse_ms"]), fms(r["f32_sparse_ms"]), fx(r["speedup_vs_f32"]),
                r["sparse_bytes"], r["f32_sparse_bytes"], r["max_abs_err"],
                r["quant_err_vs_f32"]))
        w("")

    # ---- accuracy and failures ---------------------------------------------------------------------
    w("## Accuracy")
    w("")
    bad = [r for r in D.sparrow if not r.get("within_tol")]
    w("Every sparrow result is checked against the dense OpenBLAS result: %s. %d of %d cases "
      "within tolerance; worst error %.3g of the tolerance." % (
          TOL, len(D.sparrow) - len(bad), len(D.sparrow),
          max((r.get("err_vs_tol", 0) for r in D.sparrow), default=0)))
    pbad = [p for p in D.peers if p.get("ms") and p.get("within_tol") is False]
    pchk = [p for p in D.peers if p.get("within_tol") is not None]
    if pchk:
        w("The peers, against a float64 product on their data with the same tolerance: %d of %d "
          "within." % (len(pchk) - len(pbad), len(pchk)))
    w("")
    for r in bad:
        w("- outside tolerance: %s %s b%d t%d sparsity %s: max_abs_err %.3g (%.3g of the "
          "tolerance)" % (label_of(r["format"], r.get("shape")), shape_key(r), r["batch"],
                          r["threads"], r.get("req_sparsity"), r["max_abs_err"], r["err_vs_tol"]))
    for r in D.errors:
        w("- failed to run: %s %s b%d t%d sparsity %s: rc %s: %s" % (
            label_of(r["format"], r.get("shape")), shape_key(r), r["batch"], r["threads"],
            r.get("req_sparsity"), r.get("rc"), r.get("error")))
    if bad or D.errors:
        w("")

    # ---- method and caveats ------------------------------------------------------------------------
    w("## Method and fairness notes")
    w("")
    notes = [
        "Layout everywhere: W sparse (rows x cols) = (out x in), X (cols, batch) row-major "
        "(feature-major), Y = W X (rows, batch), float32. Values uniform in (-1, 1), each weight "
        "kept with probability 1 - sparsity (N:M: N of every M in a row, BSR: whole blocks).",
        "sparrow and dense OpenBLAS run in one process on the same matrix, timed in alternating "
        "blocks (3 rounds) so that machine noise hits both; the median is reported. The Python "
        "peers are timed the same way among themselves (torch and SciPy alternate), in a separate "
        "process right after sparrow's runs of the same shape, on their own random draw of the "
        "same density. Ratios against the peers therefore cross two processes: expect a few "
        "percent of noise, more on a loaded machine.",
        "OpenBLAS runs at full speed in both processes: `OPENBLAS_CORETYPE` and "
        "`OPENBLAS_L2_SIZE` are unset for the benchmark command alone (never in tests or CI); "
        "the cores that ran are in the table above.",
        "torch %s: Debian's build has no MKL, so `torch.sparse` CSR @ dense runs PyTorch's own "
        "fallback kernel (checked above: it stays sparse, scales with the number of nonzeros, and "
        "gains nothing from a second thread; at 2 threads it is often slower). A PyPI wheel with "
        "MKL uses MKL's sparse BLAS and would be a much stronger peer; sparse CSR @ dense vector "
        "(addmv) is not available at all without MKL, so batch 1 uses a (cols, 1) matrix." % (
            pe.get("torch") or ""),
        "SciPy's CSR products are single-threaded C++ loops (no SIMD beyond what the compiler "
        "does), so SciPy is compared at 1 thread only; at batch 1 it gets its vector path "
        "(`csr_matvec`) on a 1-D x.",
        "The peers' times include Python's call overhead and the allocation of Y (a user pays "
        "both); sparrow writes into a preallocated Y. On the small MLP shapes (100x300, "
        "300x784) at small batches this overhead — microseconds — dominates the peers' times.",
        "The machine may be shared: other jobs (builds, tests) can run at the same time. Each "
        "case records the share of its time during which some runnable task waited for a CPU "
        "(PSI, /proc/pressure/cpu) and how many cores other processes kept busy (machine busy "
        "time from /proc/stat minus the benchmark's own CPU time); a case with more than 10% "
        "CPU pressure is run again, up to twice, and the least contended run is kept. 2-thread "
        "cases suffer most: with one core taken, their two threads share one core and every "
        "barrier waits for a descheduled thread (OpenMP in sparrow and torch, pthreads in "
        "OpenBLAS). A 2-thread call, sparrow's or OpenBLAS's, then often takes a whole scheduler "
        "tick or two (4 or 8 ms here, instead of ~1 ms for sparrow at 768x3072 batch 128, or "
        "0.05 ms at batch 1): with libgomp's default spin-waiting, a spinning thread that loses "
        "its core waits for the next tick, while a sleeping one is woken at once. `OMP_WAIT_POLICY=PASSIVE` avoids the "
        "collapse but adds ~50 µs to every call on this VM; the sweep keeps the defaults a user "
        "gets (recorded above). Cells marked † stayed contended: read them as noise.",
    ]
    for n in notes:
        w("- " + n)
    w("")

    # keep every section that another script (or a hand-made measurement) maintains in the same
    # file between "<!-- NAME:begin ... -->" and "<!-- NAME:end -->" (training, pruning,
    # sparse-train, million, moe, model-load, ...), in their order
    if os.path.exists(a.out):
        old = open(a.out).read()
        for m in re.finditer(r"<!-- ([a-z0-9-]+):begin.*?<!-- \1:end -->", old, re.S):
            L += ["", m.group(0), ""]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(L))
    print("report: wrote %s (%d sparrow cases, %d peer results)" % (
        os.path.relpath(a.out, ROOT), len(D.sparrow), len(D.peers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
