#!/usr/bin/python3
"""The PyTorch peer for sparrow's sparse training: masked-dense training of a wide MLP.

    bench/sparse_train_torch.py --hidden 4096,4096 --density 0.02            # masked, 98% sparse
    bench/sparse_train_torch.py --density 0.02 --modes masked,dense --threads 2,1:2

The usual way a PyTorch user "trains sparse": the network stays dense (nn.Linear) and each hidden
layer's weight is multiplied by a fixed 0/1 mask. Here that is torch.nn.utils.prune's own form,
prune.custom_from_mask: the layer keeps the dense parameter `weight_orig` and a buffer
`weight_mask`, and a forward pre-hook recomputes weight = weight_orig * weight_mask before every
forward, so the gradient reaching weight_orig is zero outside the mask and Adam keeps dense
moments for all of it (as any masked-dense trainer does). The mask is fixed (no regrowth): this
prices the masked-dense step, the cheapest thing a PyTorch user can do at that sparsity, against
sparrow's SET step, which also rewires every 100 steps.

- network: Flatten, Linear(784,H1), ReLU, Linear(H1,H2), ReLU, ..., Linear(Hk,10) (PyTorch
  default init); the same as the config bench/sparse_train.sh gives sparrow.
- mask: every hidden Linear (not the output layer, which stays dense as sparrow's default) keeps
  round(density * fan_in) uniformly random inputs in every output row: the same per-row count as
  sparrow's uniform initial pattern, so nnz matches sparrow's layers_nnz.
- mode "dense": the same network without masks (reference).
- step, data, threads, OpenMP wait policy, OpenBLAS environment: as bench/train_torch.py (whose
  helpers this imports): Fashion-MNIST in memory, batch 64 gathered from a permutation, Adam
  lr 1e-3, CrossEntropyLoss, zero_grad(set_to_none=True); one worker process per (policy, thread
  setting).
- timing: --warmup-steps untimed steps, then --steps timed steps (time.perf_counter);
  epoch_seconds = seconds per sample * 60000.

Output: one JSON line per (policy, thread setting, mode) with "peer": "pytorch-masked" or
"pytorch-dense", then {"best": mode, "threads", "omp_wait_policy", "epoch_seconds"} per mode.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_torch as tt  # noqa: E402  (bench/train_torch.py: data, threads, OpenBLAS, workers)

SCRIPT = os.path.abspath(__file__)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", default="4096,4096", help="hidden widths (default 4096,4096)")
    ap.add_argument("--density", type=float, default=0.02,
                    help="density of every hidden layer's mask (default 0.02)")
    ap.add_argument("--modes", default="masked", help="masked, dense or both (default masked)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--threads", default="2,1:2",
                    help="thread settings as bench/train_torch.py (default 2,1:2)")
    ap.add_argument("--omp-wait-policy", default="passive",
                    help="comma-separated: passive, active, unset (default passive)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.hidden_list = [int(h) for h in a.hidden.split(",") if h.strip()]
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    a.policies = [p.strip().lower() for p in a.omp_wait_policy.split(",") if p.strip()]
    if set(a.mode_list) - {"masked", "dense"} or not a.mode_list:
        ap.error("--modes: masked, dense")
    if set(a.policies) - {"passive", "active", "unset"} or not a.policies:
        ap.error("--omp-wait-policy: passive, active, unset")
    if not (0 < a.density <= 1) or a.steps < 1:
        ap.error("--density in (0, 1], --steps >= 1")
    return a


def build(hidden, density, masked, torch, nn):
    """The MLP; with masked, prune.custom_from_mask on every hidden Linear (per-row count)."""
    from torch.nn.utils import prune

    layers, n_in = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, 10))
    model = nn.Sequential(*layers)
    nnz = []
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        out_f, in_f = lin.weight.shape
        if masked and i + 1 < len(linears):
            k = max(1, int(round(density * in_f)))
            cols = torch.rand(out_f, in_f).argsort(dim=1)[:, :k]
            mask = torch.zeros(out_f, in_f)
            mask.scatter_(1, cols, 1.0)
            prune.custom_from_mask(lin, "weight", mask)
            nnz.append(out_f * k)
        else:
            nnz.append(out_f * in_f)
    return model, nnz


def measure(a, torch, nn, data, openblas, blas):
    (xtr, ytr), _ = data
    loss_fn = nn.CrossEntropyLoss()
    policy = os.environ.get("OMP_WAIT_POLICY", "unset").lower()
    n = xtr.shape[0]
    for t in [tt.parse_threads(s) for s in a.threads.split(",") if s.strip()]:
        tt.set_threads(torch, openblas, t)
        for mode in a.mode_list:
            torch.manual_seed(a.seed)
            model, nnz = build(a.hidden_list, a.density, mode == "masked", torch, nn)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=a.lr)
            perm = torch.randperm(n)

            def step(i):
                s0 = (i * a.batch) % (n - a.batch + 1)
                idx = perm[s0:s0 + a.batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xtr[idx]), ytr[idx])
                loss.backward()
                opt.step()

            for i in range(a.warmup_steps):
                step(i)
            psi0, load0 = tt.cpu_pressure_total(), os.getloadavg()[0]
            t0 = time.perf_counter()
            for i in range(a.warmup_steps, a.warmup_steps + a.steps):
                step(i)
            secs = time.perf_counter() - t0
            psi1 = tt.cpu_pressure_total()
            samples = a.steps * a.batch
            print(json.dumps({
                "peer": "pytorch-" + mode, "torch_version": torch.__version__,
                "hidden": a.hidden_list, "density": a.density if mode == "masked" else 1.0,
                "layers_nnz": nnz, "mask_form": "torch.nn.utils.prune.custom_from_mask "
                "(weight = weight_orig * weight_mask, recomputed every forward)"
                if mode == "masked" else None,
                "batch": a.batch, "optimizer": "adam", "lr": a.lr,
                "threads": tt.threads_label(t), "torch_threads": torch.get_num_threads(),
                "openblas_threads": openblas.openblas_get_num_threads() if openblas else None,
                "omp_wait_policy": policy, "steps": a.steps, "warmup_steps": a.warmup_steps,
                "seconds": round(secs, 3),
                "samples_per_second": round(samples / secs, 2),
                "epoch_seconds": round(secs / samples * 60000, 3), "blas": blas,
                "cpu_pressure": None if psi0 is None or psi1 is None
                else round((psi1 - psi0) / 1e6 / secs, 3),
                "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
                "peak_rss_mb": peak_rss_mb(),
            }), flush=True)
            del model, opt


def peak_rss_mb():
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def main(argv):
    a = parse_args(argv)
    tt.reexec_without_openblas_env(argv, SCRIPT)
    if a.worker:
        import torch
        import torch.nn as nn

        openblas, path = tt.find_openblas()
        measure(a, torch, nn, tt.load_fashion(a.data, torch), openblas,
                tt.blas_summary(torch, openblas, path))
        return 0
    base = tt.strip_options(argv, ("--threads", "--omp-wait-policy", "--worker"))
    results = []
    for policy in a.policies:
        for spec in a.threads.split(","):
            results += [r for r in tt.run_worker(base + ["--threads", spec.strip()], policy,
                                                 False, SCRIPT) if "epoch_seconds" in r]
    for mode in a.mode_list:
        rs = [r for r in results if r["peer"] == "pytorch-" + mode]
        if rs:
            best = min(rs, key=lambda r: r["epoch_seconds"])
            print(json.dumps({"best": "pytorch-" + mode, "threads": best["threads"],
                              "omp_wait_policy": best["omp_wait_policy"],
                              "epoch_seconds": best["epoch_seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
