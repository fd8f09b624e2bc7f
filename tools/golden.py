#!/usr/bin/python3
"""PyTorch golden fixtures for sparrow's C training engine.

Writes small binary fixture files into tests/golden/ (format and models: tests/golden/README.md).
The C tests replay them without PyTorch (rtol <= 1e-4): forward outputs, losses, parameter and
input gradients, and 10 steps of Adam, SGD (Nesterov momentum, weight decay) and AdamW from the
same initial parameters, for a few tiny models (MLPs, CNNs with BatchNorm, a transformer block).

    /usr/bin/python3 tools/golden.py            # regenerate tests/golden/*.bin and print a summary
    /usr/bin/python3 tools/golden.py --check    # also rerun everything in float64 from the same
                                                # float32 start and report, per record, how far the
                                                # float32 values are from it (conditioning check)

Everything is computed in float32, like the C side, on one thread, with deterministic
algorithms and a fixed seed per model: running the script twice writes identical bytes. The
fixtures are generated, never edited by hand. Needs Debian's python3-torch (call
/usr/bin/python3 explicitly; another python3 on PATH may lack torch).

Two choices keep every record replayable at rtol 1e-4 (see the README, "Inert parameters"):
convolutions that feed a BatchNorm directly have no bias, and the attention key projection has
no bias. Such a bias has a gradient that is exactly zero in exact arithmetic and float rounding
noise in practice, which Adam's normalisation (m / sqrt(v)) turns into steps of size ~lr in a
random direction; no C implementation could reproduce them.
"""
import argparse
import copy
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

MAGIC = b"SPGF"
VERSION = 1
MAX_NDIM = 6
STEPS = 10  # optimizer steps per optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "golden")


# ---------------------------------------------------------------------------------------------
# File format: "SPGF", u32 version, u32 count, then per record: u32 name_len, name (ASCII, no
# NUL), u32 ndim (0..6), ndim x u32 dims, prod(dims) float32. All little-endian.


def write_fixture(path, records):
    """Writes records (list of (name, tensor)) in record order; tensors are stored as float32."""
    names = set()
    blob = bytearray()
    blob += MAGIC
    blob += struct.pack("<II", VERSION, len(records))
    for name, t in records:
        assert name not in names, "duplicate record " + name
        names.add(name)
        raw = name.encode("ascii")
        assert raw and b"\0" not in raw
        t = t.detach().to(torch.float32).contiguous().cpu()
        assert t.dim() <= MAX_NDIM, name
        assert torch.isfinite(t).all(), name
        blob += struct.pack("<I", len(raw)) + raw
        blob += struct.pack("<I", t.dim())
        blob += struct.pack("<%dI" % t.dim(), *t.shape)
        blob += t.numpy().astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(bytes(blob))
    return len(blob)


def exact_float(t):
    """Integer tensor (labels, token ids, counters) as float32, checking it is exact."""
    f = t.to(torch.float32)
    assert torch.equal(f.to(t.dtype), t)
    return f


# ---------------------------------------------------------------------------------------------
# Models


class Attention(nn.Module):
    """Causal multi-head self-attention; head h uses features [h*dh, (h+1)*dh) of q, k, v."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        # No key bias: q.(k + b) = q.k + q.b adds the same value to every score of a query row,
        # and softmax ignores it, so the bias gradient is exactly zero (float noise in practice).
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):  # x: (B, T, D)
        b, t, d = x.shape
        dh = d // self.heads
        # (B, T, D) -> (B, H, T, dh)
        q = self.q(x).view(b, t, self.heads, dh).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, dh).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, dh).transpose(1, 2)
        s = q @ k.transpose(-2, -1) / math.sqrt(dh)  # (B, H, T, T)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)  # True above the diagonal: future
        s = s.masked_fill(mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        y = (p @ v).transpose(1, 2).reshape(b, t, d)  # concat heads: (B, T, D)
        return self.o(y)


class TinyDecoder(nn.Module):
    """Pre-LayerNorm decoder-only block: embeddings, attention, MLP, final norm, head."""

    def __init__(self, vocab=11, ctx=5, d=8, heads=2, hidden=32):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(ctx, d)
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="none"),
                                 nn.Linear(hidden, d))
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.last_embedding = None  # x after the embedding sum, kept for its gradient

    def forward(self, tokens):  # tokens: (B, T) int64
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(t))  # (B, T, D)
        if x.requires_grad:
            x.retain_grad()
        self.last_embedding = x
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.lnf(x))  # (B, T, vocab)


def build_mlp():
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(),
                          nn.Linear(12, 10))
    x = torch.randn(4, 20)
    y = torch.randint(0, 10, (4,))
    return model, x, y, nn.CrossEntropyLoss(label_smoothing=0.1)


def build_mlp_mse():
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.SiLU(), nn.Linear(4, 3))
    x = torch.randn(3, 6)
    y = torch.randn(3, 3)
    return model, x, y, nn.MSELoss()


def build_cnn():
    # Convolutions 0 and 3 feed a BatchNorm: no bias (see the module docstring).
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),                       # 0: (3,1,8,8) -> (3,4,8,8)
        nn.BatchNorm2d(4),                                               # 1
        nn.ReLU(),                                                       # 2
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False),   # 3: depthwise -> (3,4,4,4)
        nn.BatchNorm2d(4),                                               # 4
        nn.ReLU(),                                                       # 5
        nn.Conv2d(4, 8, 1),                                              # 6: pointwise -> (3,8,4,4)
        nn.ReLU(),                                                       # 7
        nn.MaxPool2d(2),                                                 # 8: -> (3,8,2,2)
        nn.AvgPool2d(2),                                                 # 9: -> (3,8,1,1)
        nn.Flatten(),                                                    # 10: -> (3,8)
        nn.Linear(8, 10),                                                # 11: -> (3,10)
    )
    x = torch.randn(3, 1, 8, 8)
    y = torch.randint(0, 10, (3,))
    return model, x, y, nn.CrossEntropyLoss()


def build_cnn2():
    # The grouped convolution has no bias: through the max-pool (which commutes with a per-channel
    # shift) each channel's bias shifts all its features alike, and BatchNorm1d removes the shift.
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=1, groups=2, bias=False),  # 0: (4,2,7,7) -> (4,6,4,4)
        nn.MaxPool2d(2, stride=2),                                      # 1: -> (4,6,2,2)
        nn.Flatten(),                                                   # 2: -> (4,24)
        nn.BatchNorm1d(24),                                             # 3
        nn.Linear(24, 5),                                               # 4: -> (4,5)
    )
    x = torch.randn(4, 2, 7, 7)
    y = torch.randint(0, 5, (4,))
    return model, x, y, nn.CrossEntropyLoss()


def build_transformer():
    model = TinyDecoder()
    tokens = torch.randint(0, 11, (2, 5))
    targets = torch.randint(0, 11, (2, 5))

    def loss_fn(logits, tgt):  # mean cross-entropy over all B*T positions
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))

    return model, tokens, targets, loss_fn


# name -> (builder, seed, target record name)
MODELS = {
    "mlp": (build_mlp, 1, "labels"),
    "mlp_mse": (build_mlp_mse, 2, "targets"),
    "cnn": (build_cnn, 3, "labels"),
    "cnn2": (build_cnn2, 4, "labels"),
    "transformer": (build_transformer, 5, "targets"),
}

OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                         weight_decay=0.1),
}


# ---------------------------------------------------------------------------------------------
# Record computation


def model_records(name, dtype):
    """All records of one model fixture, computed in dtype from the same float32 start."""
    builder, seed, target_name = MODELS[name]
    torch.manual_seed(seed)
    model, x, y, loss_fn = builder()
    float_input = x.is_floating_point()
    model = model.to(dtype)  # float32 init, widened for the --check run
    if float_input:
        x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    init_state = copy.deepcopy(model.state_dict())

    rec = []

    def add(n, t):  # a snapshot: parameters and buffers are modified in place later
        rec.append((n, (t if t.is_floating_point() else exact_float(t)).detach().clone()))

    add("input", x)
    add(target_name, y)
    for n, p in params.items():
        add("param." + n, p)
    for n, b in buffers.items():
        add("buffer." + n, b)

    # One forward and backward in train mode.
    model.train()
    xin = x.clone().requires_grad_(True) if float_input else x
    out = model(xin)
    loss = loss_fn(out, y)
    loss.backward()
    add("output", out)
    add("loss", loss)
    for n, b in model.named_buffers():
        add("after." + n, b)
    for n, p in params.items():
        add("grad." + n, p.grad)
    if float_input:
        add("grad.input", xin.grad)
    if isinstance(model, TinyDecoder):
        add("grad.input_embedding", model.last_embedding.grad)

    # STEPS optimizer steps from the initial state (parameters and buffers: the forward above
    # moved the BN running statistics, so they are restored too; each step's train-mode forward
    # then updates them exactly once).
    for opt_name, make_opt in OPTIMIZERS.items():
        model.load_state_dict(init_state)
        model.train()
        opt = make_opt(model.parameters())
        losses = []
        for _ in range(STEPS):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            losses.append(loss.detach().clone())
            loss.backward()
            opt.step()
        add(opt_name + ".losses", torch.stack(losses))
        for n, v in model.state_dict().items():
            add("%s.final.%s" % (opt_name, n), v)
        if opt_name == "adam":
            model.eval()
            with torch.no_grad():
                add("eval.output", model(x))
    return rec


ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "softmax": lambda x: torch.softmax(x, dim=1),
}


def act_records(dtype):
    torch.manual_seed(6)
    x = torch.randn(3, 7).to(dtype)
    dy = torch.randn(3, 7).to(dtype)
    rec = [("input", x), ("dy", dy)]
    for name, f in ACTIVATIONS.items():
        xin = x.clone().requires_grad_(True)
        out = f(xin)
        (out * dy).sum().backward()  # grad_input = d(sum(out * dy)) / d(input)
        rec.append(("act.%s.output" % name, out.detach()))
        rec.append(("act.%s.grad_input" % name, xin.grad))
    return rec


def all_fixtures(dtype):
    fx = {name: model_records(name, dtype) for name in MODELS}
    fx["act"] = act_records(dtype)
    return fx


# ---------------------------------------------------------------------------------------------


def check(fx32, rtol=1e-4, atol=1e-6):
    """Compares the float32 records against a float64 rerun from the same float32 start, as a
    proxy for how far an independent float32 implementation (the C engine) may land. Prints, per
    fixture, the records with the largest ratio max |a - b| / (atol + rtol |b|): a ratio <= 1
    passes at that tolerance; a ratio well below 1 leaves room for the C side's own rounding."""
    fx64 = all_fixtures(torch.float64)
    worst_all = (0.0, "")
    for fname, recs in fx32.items():
        ref = dict(fx64[fname])
        rows = []
        for n, a in recs:
            a, b = a.double(), ref[n].double()
            ratio = ((a - b).abs() / (atol + rtol * b.abs())).max().item() if a.numel() else 0.0
            rows.append((ratio, n))
        rows.sort(reverse=True)
        worst_all = max(worst_all, (rows[0][0], fname + ":" + rows[0][1]))
        print("%-12s %s" % (fname, ", ".join("%s %.2f" % (n, r) for r, n in rows[:4])))
    print("largest ratio (float32 vs float64, rtol %g atol %g): %.2f (%s)"
          % (rtol, atol, worst_all[0], worst_all[1]))
    return worst_all[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT_DIR, help="output folder (default tests/golden)")
    ap.add_argument("--check", action="store_true",
                    help="also compare against a float64 rerun (conditioning check)")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    fx = all_fixtures(torch.float32)
    total = 0
    order = ["mlp", "mlp_mse", "act", "cnn", "cnn2", "transformer"]
    for fname in order:
        recs = fx[fname]
        path = os.path.join(args.out, fname + ".bin")
        size = write_fixture(path, recs)
        total += size
        print("%s: %d records, %d bytes" % (os.path.relpath(path, ROOT), len(recs), size))
        for n, t in recs:
            print("    %-36s %s" % (n, tuple(t.shape)))
    print("total %d bytes in %d files, torch %s" % (total, len(order), torch.__version__))
    if args.check:
        check(fx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
