#!/usr/bin/python3
"""The peers of `make bench`: what a user would try instead of sparrow for Y = W X.

  torch  - PyTorch torch.sparse CSR: W.to_sparse_csr() @ X   (torch.set_num_threads(T))
  scipy  - SciPy CSR: scipy.sparse.csr_matrix(W) @ X          (single-threaded: threads 1 only)

Same layout as `sparrow bench spmm`: W sparse (rows x cols) float32, X (cols, batch) float32
row-major, values uniform in (-1, 1), each weight kept with probability 1 - sparsity. Each
result is checked against a float64 product with sparrow's f32 tolerance (1e-6 + 2e-5 |W||X|).
Timing: warm-up, then alternating blocks of the peers (3 rounds, so that machine noise hits
both), median per peer, at least --min-time of timed runs each and at least 5 runs. Each case
records "other_load" (cores that other processes kept busy meanwhile) and "cpu_pressure" (share
of the time some task waited for a CPU); a contended case (pressure above 10%) runs again,
--retries times at most and within the run's retry budget (BENCH_RETRY_BUDGET seconds), keeping
the least contended run, as bench/sweep.sh does.

Appends JSON lines to --out: first one {"kind": "env", ...} (versions, OpenBLAS core, the check
that torch runs its sparse kernel), then one {"kind": "result", ...} per peer and case.

Run with /usr/bin/python3 (Debian's numpy/scipy/torch) and OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE
unset, as bench/run.sh does. Needs numpy; a missing torch or scipy is reported in the env
line and skipped.
"""
import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")

try:
    import scipy
    import scipy.sparse
except ImportError:  # pragma: no cover - reported in the env line
    scipy = None
try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def openblas_info():
    """The OpenBLAS core(s) loaded in this process: threadpoolctl, else ctypes."""
    out = []
    try:
        from threadpoolctl import threadpool_info

        for i in threadpool_info():
            if i.get("internal_api") == "openblas":
                out.append({"core": i.get("architecture"), "version": i.get("version"),
                            "threads": i.get("num_threads"), "path": i.get("filepath"),
                            "via": "threadpoolctl"})
    except ImportError:
        pass
    if out:
        return out
    seen = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "openblas" in os.path.basename(path) and path not in seen:
                seen.add(path)
                try:
                    lib = ctypes.CDLL(path)
                    lib.openblas_get_corename.restype = ctypes.c_char_p
                    out.append({"core": lib.openblas_get_corename().decode(), "path": path,
                                "via": "ctypes openblas_get_corename"})
                except (OSError, AttributeError):
                    pass
    return out


def torch_kernel_check():
    """Profiles one torch CSR product: it must not densify W, and must be right."""
    rng = np.random.default_rng(7)
    w = draw_w(rng, 256, 512, 0.9)
    x = rng.uniform(-1, 1, (512, 16)).astype(np.float32)
    wt = torch.from_numpy(w).to_sparse_csr()
    xt = torch.from_numpy(x)
    y = wt @ xt
    with torch.profiler.profile() as prof:
        y = wt @ xt
    ops = sorted({e.key for e in prof.key_averages()})
    densify = [o for o in ops if "dense" in o.lower()]
    ok_value = bool(np.allclose(y.numpy(), w.astype(np.float64) @ x, atol=1e-4))
    return {"layout": str(wt.layout), "ops": ops, "densifies": bool(densify),
            "result_ok": ok_value, "result_layout": str(y.layout)}


def draw_w(rng, rows, cols, sparsity):
    w = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
    w[w == 0] = 0.5
    w[rng.random((rows, cols)) < sparsity] = 0
    return w


def time_blocks(fns, min_time, min_reps=5, max_reps=3000, rounds=3):
    """Median seconds per call for each fn, in alternating blocks after a warm-up."""
    reps = {}
    for k, f in fns.items():
        f()  # warm-up (allocations, caches, thread pools)
        t0 = time.perf_counter()
        f()
        one = time.perf_counter() - t0
        reps[k] = max(min_reps, min(max_reps, int(min_time / max(one, 1e-7))))
    samples = {k: [] for k in fns}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for k, f in fns.items():
                share = reps[k] * (r + 1) // rounds - reps[k] * r // rounds
                s = samples[k]
                for _ in range(share):
                    t0 = time.perf_counter()
                    f()
                    s.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return {k: (statistics.median(v), len(v)) for k, v in samples.items()}


HZ = os.sysconf("SC_CLK_TCK")
NCORES = os.cpu_count() or 1


def cpu_busy():
    """Seconds the whole machine spent busy, and stolen by the hypervisor (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ, (v[7] if len(v) > 7 else 0) / HZ


def cpu_stall():
    """Microseconds during which some runnable task waited for a CPU (PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split()[4].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def measured(fn):
    """Runs fn(); returns (its result, contention) where contention has other_load (cores other
    processes kept busy meanwhile), cpu_pressure (share of the time some task waited for a CPU,
    None without PSI) and steal (cores taken by the hypervisor)."""
    b0, s0 = cpu_busy()
    p0 = cpu_stall()
    t0, w0 = os.times(), time.perf_counter()
    res = fn()
    t1, w1 = os.times(), time.perf_counter()
    p1 = cpu_stall()
    b1, s1 = cpu_busy()
    wall = max(w1 - w0, 1e-3)
    own = (t1.user - t0.user) + (t1.system - t0.system)
    pressure = None if p0 is None or p1 is None else min(1.0, (p1 - p0) / (wall * 1e6))
    return res, {"other_load": round(max(0.0, (b1 - b0 - own) / wall), 2),
                 "cpu_pressure": None if pressure is None else round(pressure, 2),
                 "steal": round((s1 - s0) / wall, 2)}


def contended(c, threads):
    """As bench/sweep.sh: CPU pressure above 10%, or without PSI fewer free cores than threads."""
    if c["cpu_pressure"] is not None:
        return c["cpu_pressure"] > 0.1
    return c["other_load"] > NCORES - threads + 0.25


def _ledger():
    path, budget = os.environ.get("BENCH_RETRY_LEDGER"), os.environ.get("BENCH_RETRY_BUDGET")
    spent = 0.0
    if path:
        try:
            with open(path) as f:
                spent = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
    return path, float(budget) if budget else None, spent


def retry_allowed():
    """Retries share one time budget across the run (BENCH_RETRY_BUDGET seconds, spent so far
    in the file BENCH_RETRY_LEDGER, which bench/sweep.sh updates too)."""
    _, budget, spent = _ledger()
    return budget is None or spent < budget


def retry_spend(seconds):
    path, _, spent = _ledger()
    if path:
        with open(path, "w") as f:
            f.write("%.2f\n" % (spent + seconds))


def calmer(a, b):
    return (a["cpu_pressure"] or 0, a["other_load"]) < (b["cpu_pressure"] or 0, b["other_load"])


def check(y, ref, mag):
    err = np.abs(np.asarray(y, dtype=np.float64).reshape(ref.shape) - ref)
    bound = 1e-6 + 2e-5 * mag
    return float(err.max(initial=0.0)), float((err / bound).max(initial=0.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["4096x4096"], help="RxC ...")
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 256])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--min-time", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--retries", type=int, default=int(os.environ.get("BENCH_RETRIES", "2")),
                    help="runs again a case that other processes contended (default 2)")
    ap.add_argument("--retry-pause", type=float,
                    default=float(os.environ.get("BENCH_RETRY_PAUSE", "1")))
    ap.add_argument("--out", default="bench/out/peers.jsonl")
    ap.add_argument("--no-env", action="store_true", help="skip the env line (already written)")
    a = ap.parse_args()

    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    out = open(a.out, "a")

    def emit(obj):
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    peers = []
    if torch is not None:
        peers.append("torch")
    if scipy is not None:
        peers.append("scipy")
    if not a.no_env:
        env = {"kind": "env", "python": platform.python_version(), "executable": sys.executable,
               "numpy": np.__version__, "scipy": getattr(scipy, "__version__", None),
               "torch": getattr(torch, "__version__", None),
               "openblas": openblas_info(),
               "openblas_env": {k: os.environ.get(k) for k in
                                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                 "OMP_NUM_THREADS")}}
        if torch is not None:
            env["torch_config"] = {"mkl": torch.backends.mkl.is_available(),
                                   "openmp": torch.backends.openmp.is_available(),
                                   "parallel": torch.__config__.parallel_info().splitlines()[-1]}
            env["torch_kernel_check"] = torch_kernel_check()
            if env["torch_kernel_check"]["densifies"] or not env["torch_kernel_check"]["result_ok"]:
                print("peers: torch CSR check failed: %s" % env["torch_kernel_check"], file=sys.stderr)
        emit(env)
    if not peers:
        print("peers: neither torch nor scipy is importable; nothing to time", file=sys.stderr)
        return 0

    for shape in a.shapes:
        rows, cols = (int(v) for v in shape.lower().split("x"))
        print("peers: %s %dx%d (batches %s; threads %s; min-time %g)" % (
            "+".join(peers), rows, cols, " ".join(map(str, a.batches)),
            " ".join(map(str, a.threads)), a.min_time), flush=True)
        for sp in a.sparsities:
            rng = np.random.default_rng([a.seed, rows, cols, int(round(sp * 1e4))])
            w = draw_w(rng, rows, cols, sp)
            nnz = int(np.count_nonzero(w))
            ws = scipy.sparse.csr_matrix(w) if scipy is not None else None
            wt = torch.from_numpy(w).to_sparse_csr() if torch is not None else None
            del w
            # float64 reference on the same data (sparse, so it stays cheap)
            ref_w64 = ws.astype(np.float64) if ws is not None else None
            ref_abs = abs(ref_w64) if ref_w64 is not None else None
            for batch in a.batches:
                x = rng.uniform(-1, 1, (cols, batch)).astype(np.float32)
                ref = mag = None
                if ref_w64 is not None:
                    x64 = x.astype(np.float64)
                    ref, mag = ref_w64 @ x64, ref_abs @ np.abs(x64)
                xt = torch.from_numpy(x) if wt is not None else None
                # batch 1: SciPy's own vector path (csr_matvec) on a 1-D x; torch has no
                # sparse CSR addmv without MKL, so it gets the (cols, 1) matrix.
                xs = x[:, 0].copy() if batch == 1 else x
                for threads in a.threads:
                    fns, calls = {}, {}
                    if wt is not None:
                        fns["torch"] = lambda: wt @ xt
                        calls["torch"] = "W.to_sparse_csr() @ X"
                    if ws is not None and threads == 1:
                        fns["scipy"] = lambda: ws @ xs
                        calls["scipy"] = "csr_matrix(W) @ x (1-D)" if batch == 1 else "csr_matrix(W) @ X"
                    if torch is not None:
                        torch.set_num_threads(threads)
                    # on a shared machine a contended case runs again (--retries), and the
                    # least contended run is kept
                    best, t_case = None, time.perf_counter()
                    for attempt in range(1, a.retries + 2):
                        t_run = time.perf_counter()
                        res = measured(lambda: time_blocks(fns, a.min_time))
                        if attempt > 1:
                            retry_spend(time.perf_counter() - t_run + a.retry_pause)
                        if best is None or calmer(res[1], best[1]):
                            best = res
                        if (not contended(best[1], threads) or attempt > a.retries
                                or not retry_allowed()):
                            break
                        time.sleep(a.retry_pause)
                    times, cont = best
                    wall = round(time.perf_counter() - t_case, 2)
                    for peer, (sec, reps) in times.items():
                        rec = {"kind": "result", "peer": peer, "format": "csr", "rows": rows,
                               "cols": cols, "batch": batch, "threads": threads,
                               "req_sparsity": sp, "sparsity": round(1 - nnz / (rows * cols), 4),
                               "nnz": nnz, "ms": round(sec * 1e3, 6), "reps": reps,
                               "call": calls[peer], "attempts": attempt, "wall_s": wall}
                        rec.update(cont)
                        if ref is not None:
                            y = fns[peer]()
                            y = y.numpy() if peer == "torch" else y
                            rec["max_abs_err"], rec["err_vs_tol"] = check(y, ref, mag)
                            rec["within_tol"] = rec["err_vs_tol"] <= 1.0
                        emit(rec)
                    if ws is not None and threads != 1:
                        emit({"kind": "result", "peer": "scipy", "format": "csr", "rows": rows,
                              "cols": cols, "batch": batch, "threads": threads,
                              "req_sparsity": sp, "sparsity": round(1 - nnz / (rows * cols), 4),
                              "nnz": nnz, "ms": None,
                              "note": "n/a: scipy.sparse CSR products are single-threaded"})
                    line = "  %-5s %4dx%-4d b%-4d t%d s%-5g " % ("csr", rows, cols, batch, threads, sp)
                    line += "  ".join("%s %.4f ms" % (p, times[p][0] * 1e3) for p in times)
                    if contended(cont, threads):
                        line += "  (contended: tasks waited for a CPU %s of the time; other " \
                                "processes used %.2f cores)" % (cont["cpu_pressure"], cont["other_load"])
                    print(line, flush=True)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
