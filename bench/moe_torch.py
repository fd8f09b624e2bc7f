#!/usr/bin/python3
"""The PyTorch peer for sparrow's mixture-of-experts training throughput: tokens/s of a
character-level transformer LM with MoE feed-forward blocks.

    bench/moe_torch.py --text FILE --layers 2 --dim 128 --heads 4 --ctx 64 --experts 8 --top-k 1
    bench/moe_torch.py ... --experts 0          # the dense model (one FFN per block)

The model is the one sparrow's spec charlm:layers=L,dim=D,heads=H,ctx=T[,experts=E,top_k=K]
builds (src/nn/spec.c, docs/CHARLM.md), layer for layer:

    embedding(V, D) + a learned position embedding (T, D)
    L x [ x + attention(layernorm(x)),  x + ffn(layernorm(x)) ]      pre-norm blocks
    layernorm, linear(D, V)

attention: causal multi-head, separate q, k, v and output projections with biases (as
src/nn/attention.c); ffn: linear(D, F), gelu, linear(F, D), with F = 4D for the dense model and
4D / K for the MoE (equal active parameters per token). The MoE block (as src/nn/moe.c with
routing=token, router=softmax, capacity=none, balance=0.01): router linear(D, E), p = softmax,
the top-K experts of each token, gates = p renormalized over the K when K >= 2 (p itself for
K = 1, as the Switch Transformer), tokens sorted into contiguous per-expert groups, one pair of
matmuls per expert that has tokens, the weighted outputs added back (index_add), and the Switch
load-balancing loss E * sum_i f_i P_i added to the cross-entropy with weight 0.01. This is the
usual "loop over experts" PyTorch MoE (the form of Megablocks' reference and most tutorials),
written to be fast on a CPU: no capacity padding, no one-hot dispatch tensors.

Training: Adam lr 1e-3, batch B windows of T characters drawn at random from the text's code
points, next-character cross-entropy over all positions. --warmup-steps untimed steps, then
--steps timed steps; tokens/s = steps * B * T / seconds.

Threads: the setting is T (torch and OpenBLAS both T threads) or O:B, each run in its own worker
process per OpenMP wait policy (bench/train_torch.py explains why); the best is reported last.
OpenBLAS runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (the script restarts itself without
them), and its core is reported. Run with /usr/bin/python3 (Debian's torch).

Output: one JSON line per (policy, thread setting)
  {"peer": "pytorch", "model": "...", "tokens_per_second", "step_ms", "threads", ...}
then {"best_threads", "omp_wait_policy", "tokens_per_second", ...}.
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_torch as tt  # noqa: E402  (thread setup, OpenBLAS discovery, worker processes)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--experts", type=int, default=8, help="0: the dense model")
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--balance", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=32, help="windows per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=50, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--threads", default="2,2:1,1:2",
                    help="comma-separated settings T or O:B (default 2,2:1,1:2)")
    ap.add_argument("--omp-wait-policy", default="passive,unset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-openblas-env", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads_arg = args.threads
    args.threads = [tt.parse_threads(t) for t in args.threads.split(",") if t.strip()]
    args.omp_wait_policy = [p.strip().lower() for p in args.omp_wait_policy.split(",") if p.strip()]
    if args.experts < 0 or (args.experts and not 1 <= args.top_k <= args.experts):
        ap.error("--experts must be >= 0 and --top-k in [1, experts]")
    if args.dim % args.heads:
        ap.error("--heads must divide --dim")
    return args


def build(args, vocab, torch, nn, F):
    D, T = args.dim, args.ctx
    K = args.top_k if args.experts else 1
    hidden = 4 * D // K

    # torch 1.13 (Debian 12) has no scaled_dot_product_attention: the plain causal form
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))

        def forward(self, x):  # (B, T, D)
            B = x.shape[0]
            H = args.heads

            def split(t):
                return t.view(B, T, H, D // H).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // H))
            y = F.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
            return self.o(y.transpose(1, 2).reshape(B, T, D))

    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(D, hidden), nn.Linear(hidden, D)

        def forward(self, x):
            return self.l2(F.gelu(self.l1(x))), None

    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            E = args.experts
            self.router = nn.Linear(D, E)
            b1, b2 = 1 / math.sqrt(D), 1 / math.sqrt(hidden)
            self.w1 = nn.Parameter(torch.empty(E, hidden, D).uniform_(-b1, b1))
            self.b1 = nn.Parameter(torch.empty(E, hidden).uniform_(-b1, b1))
            self.w2 = nn.Parameter(torch.empty(E, D, hidden).uniform_(-b2, b2))
            self.b2 = nn.Parameter(torch.empty(E, D).uniform_(-b2, b2))

        def forward(self, x):
            shape = x.shape
            x = x.reshape(-1, D)
            N, E = x.shape[0], args.experts
            p = F.softmax(self.router(x), dim=-1)
            gate, idx = p.topk(K, dim=-1)
            if K > 1:
                gate = gate / gate.sum(-1, keepdim=True)
            flat = idx.reshape(-1)
            order = flat.argsort(stable=True)
            tok = torch.arange(N).repeat_interleave(K)[order]
            counts = torch.bincount(flat, minlength=E)
            xs = x[tok]
            outs, start = [], 0
            for e, c in enumerate(counts.tolist()):
                if c:
                    h = F.gelu(F.linear(xs[start:start + c], self.w1[e], self.b1[e]))
                    outs.append(F.linear(h, self.w2[e], self.b2[e]))
                    start += c
            out = torch.cat(outs) * gate.reshape(-1)[order].unsqueeze(1)
            y = torch.zeros_like(x).index_add_(0, tok, out)
            aux = E * torch.sum(counts.to(p.dtype) / (N * K) * p.mean(0))
            return y.reshape(shape), aux

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.attn = Attention()
            self.ffn = MoE() if args.experts else Dense()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            y, aux = self.ffn(self.ln2(x))
            return x + y, aux

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, D)
            self.pos = nn.Parameter(torch.randn(T, D))
            self.blocks = nn.ModuleList(Block() for _ in range(args.layers))
            self.ln = nn.LayerNorm(D)
            self.head = nn.Linear(D, vocab)

        def forward(self, ids):
            x = self.emb(ids) + self.pos
            aux_total = 0.0
            for b in self.blocks:
                x, aux = b(x)
                if aux is not None:
                    aux_total = aux_total + aux
            return self.head(self.ln(x)), aux_total

    return LM()


def load_text(path, torch):
    text = open(path, "rb").read().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), len(vocab)


def model_name(args):
    name = "charlm:layers=%d,dim=%d,heads=%d,ctx=%d" % (args.layers, args.dim, args.heads,
                                                        args.ctx)
    if args.experts:
        name += ",experts=%d,top_k=%d" % (args.experts, args.top_k)
    return name


def measure(args, torch, openblas, blas):
    import torch.nn as nn
    import torch.nn.functional as F

    ids, vocab = load_text(args.text, torch)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset").lower()
    T, B = args.ctx, args.batch
    for t in args.threads:
        tt.set_threads(torch, openblas, t)
        torch.manual_seed(args.seed)
        model = build(args, vocab, torch, nn, F)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        gen = torch.Generator().manual_seed(args.seed)

        def step():
            start = torch.randint(0, ids.numel() - T - 1, (B,), generator=gen)
            win = torch.stack([ids[s:s + T + 1] for s in start.tolist()])
            logits, aux = model(win[:, :T])
            loss = F.cross_entropy(logits.reshape(-1, vocab), win[:, 1:].reshape(-1))
            if args.experts:
                loss = loss + args.balance * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss)

        for _ in range(args.warmup_steps):
            step()
        psi0 = tt.cpu_pressure_total()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        secs = time.perf_counter() - t0
        psi1 = tt.cpu_pressure_total()
        print(json.dumps({
            "peer": "pytorch", "torch_version": torch.__version__, "model": model_name(args),
            "batch": B, "ctx": T, "optimizer": "adam", "threads": tt.threads_label(t),
            "omp_wait_policy": policy, "steps": args.steps,
            "tokens_per_second": round(args.steps * B * T / secs, 1),
            "step_ms": round(1e3 * secs / args.steps, 2), "last_loss": round(loss, 4),
            "params": sum(p.numel() for p in model.parameters()), "blas": blas,
            "cpu_pressure": None if psi0 is None or psi1 is None
            else round((psi1 - psi0) / 1e6 / secs, 3),
        }), flush=True)


def main(argv):
    args = parse_args(argv)
    if not args.keep_openblas_env:
        tt.reexec_without_openblas_env(argv, __file__)
    if args.worker:
        import torch

        openblas, path = tt.find_openblas()
        measure(args, torch, openblas, tt.blas_summary(torch, openblas, path))
        return 0
    base = tt.strip_options(argv, ("--threads", "--omp-wait-policy", "--worker"))
    results = []
    for policy in args.omp_wait_policy:
        for spec in args.threads_arg.split(","):
            results += [r for r in tt.run_worker(base + ["--threads", spec.strip()], policy,
                                                   args.keep_openblas_env, __file__)
                        if "tokens_per_second" in r]
    best = max(results, key=lambda r: r["tokens_per_second"])
    print(json.dumps({"best_threads": best["threads"], "omp_wait_policy": best["omp_wait_policy"],
                      "tokens_per_second": best["tokens_per_second"], "model": best["model"],
                      "batch": args.batch, "ctx": args.ctx}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
