#!/usr/bin/python3
"""The PyTorch peer for sparrow's training throughput: samples/s over an epoch of Fashion-MNIST.

    bench/train_torch.sh                                  # lenet300, batch 64, Adam, all thread settings
    bench/train_torch.sh --model lenet5 --threads 2 --omp-wait-policy passive
    bench/train_torch.sh --test --train-epochs 15         # plus a reference test accuracy

The question it answers (sparrow's issue): is sparrow's training throughput of lenet300 (batch 64,
Adam, 2 threads, samples/s over an epoch) at least 2x that of PyTorch (Debian's python3-torch, in
its fastest thread setting on this machine) training the same network with the same optimizer and
batch? So this script is meant to be the fastest fair PyTorch loop, not a typical one:

- data: Fashion-MNIST from /usr/share/datasets/fashion-mnist/*.gz (IDX parsed with gzip+numpy),
  images / 255 as float32 (no other normalisation), held in memory as one tensor; no DataLoader.
  Each epoch draws a random permutation and gathers each batch by indexing (x[idx]); the last
  partial batch (60000 = 937 x 64 + 32) is trained too, so an epoch is exactly 60000 samples.
- models: lenet300 = Flatten, Linear(784,300), ReLU, Linear(300,100), ReLU, Linear(100,10);
  lenet5 = Conv2d(1,6,5,padding=2), ReLU, MaxPool2d(2), Conv2d(6,16,5), ReLU, MaxPool2d(2),
  Flatten, Linear(400,120), ReLU, Linear(120,84), ReLU, Linear(84,10). PyTorch default init.
- step: zero_grad(set_to_none=True), forward, CrossEntropyLoss, backward, Adam(lr 1e-3) step.
- timing: a warm-up of --warmup-steps steps (thread pools, allocator, caches), then
  --epochs-measured full epochs timed with time.perf_counter; samples/s = samples / seconds.
- threads: each setting of --threads is T (torch.set_num_threads(T) and OpenBLAS T threads) or
  O:B (torch/OpenMP O threads, OpenBLAS B threads); default 1, 2, 2:1 and 1:2. torch's threads
  (OpenMP) run oneDNN convolutions and element-wise ops (ReLU, Adam); its Linear layers call
  OpenBLAS sgemm, whose pthread build has its own threads: openblas_set_num_threads is called on
  the OpenBLAS that torch loaded, since otherwise it uses every core whatever torch says. Out of
  the box, torch on this machine runs 1:2 (torch.get_num_threads() is 1, OpenBLAS takes both
  cores), and that was the fastest lenet300 setting measured (~54k samples/s, quiet machine).
- OpenMP wait policy: libgomp's default lets idle workers spin for a while; on this shared
  2-core machine a 2-thread torch then collapses whenever another process takes a core
  (measured: 0.5-8k samples/s instead of 15-39k for lenet300), while OMP_WAIT_POLICY=PASSIVE
  keeps it near the 1-thread speed (ACTIVE is worse still: idle workers never stop spinning).
  libgomp reads the policy once, so each (policy, thread setting) pair runs in its own worker
  process (policies: --omp-wait-policy, default passive and unset, i.e. libgomp's default). The
  best pair is reported last: that is PyTorch "in its fastest thread setting on this machine".

Output: one JSON line per (policy, thread setting)
  {"peer": "pytorch", "torch_version", "model", "batch", "optimizer", "threads", "torch_threads",
   "openblas_threads", "omp_wait_policy", "samples_per_second", "epoch_seconds", "blas",
   "cpu_pressure", "loadavg", ...}
then {"best_threads": ..., "omp_wait_policy": ..., "samples_per_second": ...}; with --test, a
worker with the best setting trains --train-epochs epochs from a fresh model and prints
  {"test_accuracy": ..., "train_accuracy": ..., "train_epochs": N, ...}.
"cpu_pressure" is the share of the measured time in which some task waited for a CPU
(/proc/pressure/cpu "some"); the machine is shared, so read the numbers with it: above ~0.1,
another process competed for the cores and the number is a lower bound.

OpenBLAS: this machine presets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in some environments,
which halves OpenBLAS's speed. They are read when the library loads, so they must be absent
from the environment of the process: bench/train_torch.sh runs
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/train_torch.py "$@"`, and
this script re-executes itself without them if it finds them set (--keep-openblas-env: don't).
Run with /usr/bin/python3 (Debian's torch); another python3 on PATH may lack torch.
"""
import argparse
import ctypes
import gzip
import json
import os
import struct
import subprocess
import sys
import time

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def reexec_without_openblas_env(argv, script=None):
    """Restarts this script (or script) without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when either
    is set."""
    if not any(v in os.environ for v in OPENBLAS_VARS):
        return
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    print("train_torch: restarting without %s" % ", ".join(v for v in OPENBLAS_VARS
                                                           if v in os.environ), file=sys.stderr)
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(script or __file__)] + argv, env)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("lenet300", "lenet5"), default="lenet300")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--threads", default="1,2,2:1,1:2",
                    help="comma-separated thread settings: T (torch and OpenBLAS both T) or O:B "
                         "(torch/OpenMP O, OpenBLAS B) (default 1,2,2:1,1:2)")
    ap.add_argument("--epochs-measured", type=int, default=1, help="timed epochs per setting")
    ap.add_argument("--warmup-steps", type=int, default=50, help="untimed steps before timing")
    ap.add_argument("--test", action="store_true",
                    help="also train --train-epochs epochs (best thread setting) and print the "
                         "test accuracy, a reference for sparrow's")
    ap.add_argument("--train-epochs", type=int, default=15, help="epochs for --test (default 15)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the four Fashion-MNIST IDX .gz files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omp-wait-policy", default="passive,unset",
                    help="comma-separated OpenMP wait policies to try: passive, active, unset "
                         "(libgomp's default: spin a while, then sleep) (default passive,unset)")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="do not drop OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads_arg = args.threads
    args.omp_wait_policy = [p.strip().lower() for p in args.omp_wait_policy.split(",") if p.strip()]
    if not args.omp_wait_policy or set(args.omp_wait_policy) - {"passive", "active", "unset"}:
        ap.error("--omp-wait-policy: a comma-separated list of passive, active, unset")
    if args.epochs_measured < 0 or args.train_epochs < 0:
        ap.error("--epochs-measured and --train-epochs must be >= 0")
    try:
        args.threads = [parse_threads(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error("--threads: a comma-separated list of T or O:B (positive integers)")
    if not args.threads or args.batch < 1:
        ap.error("--threads and --batch must be positive")
    return args


def parse_threads(spec):
    """"T" -> (T, T); "O:B" -> torch/OpenMP threads O, OpenBLAS threads B."""
    parts = [int(p) for p in spec.split(":")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(spec)
    return tuple(parts)


def read_idx(path):
    """An IDX file (gzip) as a numpy array: magic 0x0000 | dtype 0x08 (u8) | ndim, dims (u32 BE)."""
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError("%s: %d values for dims %s" % (path, arr.size, dims))
    return arr.reshape(dims)


def load_fashion(folder, torch):
    def part(prefix):
        x = read_idx(os.path.join(folder, prefix + "-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(folder, prefix + "-labels-idx1-ubyte.gz"))
        xt = torch.from_numpy(x.astype("float32") / 255.0).reshape(-1, 1, 28, 28).contiguous()
        return xt, torch.from_numpy(y.astype("int64"))

    return part("train"), part("t10k")


def build(model, nn):
    if model == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10))
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10))


def find_openblas():
    """The OpenBLAS library loaded in this process (torch's BLAS), or None."""
    with open("/proc/self/maps") as f:
        paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.split()[-1]})
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
            return lib, path
        except (OSError, AttributeError):
            continue
    return None, None


def blas_summary(torch, openblas, path):
    """One short line: torch's BLAS setting, the OpenBLAS actually loaded, oneDNN for convs."""
    cfg = torch.__config__.show()
    info = "BLAS_INFO=" + (cfg.split("BLAS_INFO=")[1].split(",")[0] if "BLAS_INFO=" in cfg else "?")
    if openblas is not None:
        conf = openblas.openblas_get_config().decode().split()
        ver = " ".join(conf[:2])  # "OpenBLAS 0.3.21"
        info += "; %s (%s) core %s" % (ver, "/".join(path.split("/")[-2:]),
                                        openblas.openblas_get_corename().decode())
    else:
        info += "; no OpenBLAS loaded"
    if torch.backends.mkldnn.is_available():
        info += "; oneDNN (mkldnn) for convolutions"
    return info


def cpu_pressure_total():
    """Microseconds in which some task waited for a CPU, or None (no PSI)."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.split("total=")[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def train_epoch(model, opt, loss_fn, x, y, batch, torch, max_steps=None):
    """One epoch over a fresh permutation (all samples, last batch partial); returns samples."""
    n = x.shape[0]
    perm = torch.randperm(n)
    done = 0
    steps = 0
    for start in range(0, n, batch):
        if max_steps is not None and steps >= max_steps:
            break
        idx = perm[start:start + batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        done += idx.shape[0]
        steps += 1
    return done


def accuracy(model, x, y, torch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], 1000):
            pred = model(x[start:start + 1000]).argmax(1)
            correct += int((pred == y[start:start + 1000]).sum())
    model.train()
    return correct / x.shape[0]


def set_threads(torch, openblas, t):
    torch.set_num_threads(t[0])
    if openblas is not None:
        openblas.openblas_set_num_threads(t[1])


def threads_label(t):
    return t[0] if t[0] == t[1] else "%d:%d" % t


def measure(args, torch, nn, data, openblas, blas):
    """Worker: times each thread setting of args.threads in this process (whose OpenMP wait
    policy is already fixed); prints one JSON line each; with --test, trains and evaluates."""
    (xtr, ytr), (xte, yte) = data
    loss_fn = nn.CrossEntropyLoss()
    policy = os.environ.get("OMP_WAIT_POLICY", "unset").lower()
    for t in args.threads if args.epochs_measured > 0 else []:
        set_threads(torch, openblas, t)
        torch.manual_seed(args.seed)
        model = build(args.model, nn)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        train_epoch(model, opt, loss_fn, xtr, ytr, args.batch, torch, max_steps=args.warmup_steps)
        psi0, load0 = cpu_pressure_total(), os.getloadavg()[0]
        epoch_seconds = []
        samples = 0
        for _ in range(args.epochs_measured):
            t0 = time.perf_counter()
            samples += train_epoch(model, opt, loss_fn, xtr, ytr, args.batch, torch)
            epoch_seconds.append(time.perf_counter() - t0)
        total = sum(epoch_seconds)
        psi1 = cpu_pressure_total()
        print(json.dumps({
            "peer": "pytorch", "torch_version": torch.__version__, "model": args.model,
            "batch": args.batch, "optimizer": "adam", "lr": args.lr, "threads": threads_label(t),
            "torch_threads": torch.get_num_threads(),
            "openblas_threads": openblas.openblas_get_num_threads() if openblas else None,
            "omp_wait_policy": policy,
            "samples_per_second": round(samples / total, 1),
            "epoch_seconds": round(total / len(epoch_seconds), 3),
            "epochs_measured": len(epoch_seconds), "samples": samples,
            "warmup_steps": args.warmup_steps, "blas": blas,
            "cpu_pressure": None if psi0 is None or psi1 is None
            else round((psi1 - psi0) / 1e6 / total, 3),
            "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
        }), flush=True)

    if args.test:
        t = args.threads[0]
        set_threads(torch, openblas, t)
        torch.manual_seed(args.seed)
        model = build(args.model, nn)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        t0 = time.perf_counter()
        for _ in range(args.train_epochs):
            train_epoch(model, opt, loss_fn, xtr, ytr, args.batch, torch)
        secs = time.perf_counter() - t0
        print(json.dumps({"peer": "pytorch", "model": args.model, "batch": args.batch,
                          "optimizer": "adam", "lr": args.lr, "train_epochs": args.train_epochs,
                          "threads": threads_label(t), "omp_wait_policy": policy,
                          "seed": args.seed,
                          "test_accuracy": round(accuracy(model, xte, yte, torch), 4),
                          "train_accuracy": round(accuracy(model, xtr, ytr, torch), 4),
                          "train_seconds": round(secs, 1)}), flush=True)


def run_worker(argv, policy, keep_openblas_env, script=None):
    """Runs this script (or another that shares it, bench/sparse_train_torch.py) as a worker with OMP_WAIT_POLICY set for its whole life (libgomp reads it
    once, when torch loads); returns the JSON records it printed (and passes its lines through)."""
    env = {k: v for k, v in os.environ.items()
           if keep_openblas_env or k not in OPENBLAS_VARS}
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy.upper()
    cmd = [sys.executable, os.path.abspath(script or __file__), "--worker"] + argv
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, universal_newlines=True)
    records = []
    for line in proc.stdout.splitlines():
        print(line, flush=True)
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    if proc.returncode != 0:
        raise SystemExit("train_torch: worker %s failed with status %d" % (cmd, proc.returncode))
    return records


def main(argv):
    args = parse_args(argv)
    if not args.keep_openblas_env:
        reexec_without_openblas_env(argv)
    if args.worker:
        import torch
        import torch.nn as nn

        openblas, openblas_path = find_openblas()
        measure(args, torch, nn, load_fashion(args.data, torch), openblas,
                blas_summary(torch, openblas, openblas_path))
        return 0

    # Coordinator: one worker process per (OpenMP wait policy, thread setting), so that no setting
    # inherits the thread pools of another (with OMP_WAIT_POLICY=ACTIVE, the workers of a 2-thread
    # team would spin on a core for the rest of the process); then the best setting wins and
    # (--test) a worker with that setting trains for the accuracy.
    base = strip_options(argv, ("--threads", "--omp-wait-policy", "--test", "--worker"))
    results = []
    for policy in args.omp_wait_policy:
        for spec in args.threads_arg.split(","):
            results += [r for r in run_worker(base + ["--threads", spec.strip()], policy,
                                                args.keep_openblas_env)
                        if "samples_per_second" in r]
    if results:
        best = max(results, key=lambda r: r["samples_per_second"])
        print(json.dumps({"best_threads": best["threads"],
                          "omp_wait_policy": best["omp_wait_policy"],
                          "samples_per_second": best["samples_per_second"],
                          "model": args.model, "batch": args.batch}), flush=True)
        best_threads, best_policy = str(best["threads"]), best["omp_wait_policy"]
    else:  # --epochs-measured 0
        best_threads, best_policy = args.threads_arg.split(",")[0], args.omp_wait_policy[0]
    if args.test:
        run_worker(base + ["--threads", best_threads, "--epochs-measured", "0", "--test"],
                   best_policy, args.keep_openblas_env)
    return 0


def strip_options(argv, names):
    """argv without the given options (and their values, for those that take one)."""
    flags = {"--test", "--worker"}
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=")[0]
        if name in names:
            skip = name not in flags and "=" not in a
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
