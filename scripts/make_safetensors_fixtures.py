#!/usr/bin/python3
"""make_safetensors_fixtures.py - the PyTorch side of sparrow's safetensors interop (docs/INTEROP.md).

Run with Debian's python3-torch (the `safetensors` package is not in Debian 12, so this script
reads and writes the format itself with json + struct):

  /usr/bin/python3 scripts/make_safetensors_fixtures.py
      trains nn.Sequential(Flatten, Linear(784, 64), ReLU, Linear(64, 10)) on Fashion-MNIST
      (seed 0, 2 epochs of Adam) and writes tests/golden/safetensors/
        mlp64.safetensors   its state_dict (keys 1.weight, 1.bias, 3.weight, 3.bias)
        mlp64_expected.safetensors
                            pred (U8, 10000): PyTorch's class for every test image;
                            margin (F32, 10000): top-1 minus top-2 logit (for tie analysis);
                            __metadata__ accuracy, correct
      and checks that its own reader reads back exactly what it wrote.

  /usr/bin/python3 scripts/make_safetensors_fixtures.py --check-export FILE [--predictions OUT]
      loads a model exported by `sparrow convert` (dense or CSR components), builds the
      nn.Sequential its __metadata__ "sparrow.config" describes, runs the Fashion-MNIST test set
      and prints one JSON line {"accuracy":..., "correct":..., "csr_layers":...}. CSR weights
      are rebuilt with torch.sparse_csr_tensor and multiplied as sparse tensors.
"""
import argparse
import gzip
import json
import os
import struct
import warnings

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "safetensors")
DATA = os.environ.get("SPARROW_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")

# ---- the safetensors format ------------------------------------------------------------------

DTYPES = {  # name -> (torch dtype, bytes per element)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
NAME_OF = {v[0]: k for k, v in DTYPES.items()}


def st_dumps(tensors, metadata=None):
    """bytes of a safetensors file: tensors sorted by element size (largest first) then name,
    header padded with spaces to a multiple of 8, as the reference implementation writes."""
    order = sorted(tensors, key=lambda k: (-DTYPES[NAME_OF[tensors[k].dtype]][1], k))
    header, blobs, pos = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for k in order:
        t = tensors[k].contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        if t.dtype == torch.bool:
            raw = t.to(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": NAME_OF[t.dtype], "shape": list(t.shape),
                     "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def st_loads(b):
    """(tensors, metadata) from safetensors bytes, checked as the format requires."""
    if len(b) < 8:
        raise ValueError("shorter than the 8-byte header size")
    (n,) = struct.unpack("<Q", b[:8])
    if n > len(b) - 8 or n > 100_000_000:
        raise ValueError(f"header size {n} out of range")
    header = json.loads(b[8:8 + n].decode("utf-8"))
    data = b[8 + n:]
    meta = header.pop("__metadata__", {})
    spans, out = [], {}
    for k, e in header.items():
        dt, size = DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        numel = 1
        for d in e["shape"]:
            numel *= d
        if not 0 <= begin <= end <= len(data) or end - begin != numel * size:
            raise ValueError(f"{k}: bad offsets {begin}, {end}")
        spans.append((begin, end, k))
        raw = bytearray(data[begin:end])
        if e["dtype"] == "BOOL":
            t = torch.frombuffer(raw, dtype=torch.uint8).to(torch.bool) if numel else torch.zeros(0, dtype=torch.bool)
        else:
            t = torch.frombuffer(raw, dtype=dt) if numel else torch.zeros(0, dtype=dt)
        out[k] = t.reshape(e["shape"])
    pos = 0
    for begin, end, k in sorted(spans):
        if begin != pos:
            raise ValueError(f"{k}: hole or overlap at {pos}")
        pos = end
    if pos != len(data):
        raise ValueError("data buffer not covered")
    return out, meta


# ---- Fashion-MNIST --------------------------------------------------------------------------


def idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    ndim = b[3]
    dims = struct.unpack(">" + "I" * ndim, b[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(b[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def fashion(split):
    x = idx(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz"))
    y = idx(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz"))
    return x, y.long()


# ---- fixtures -------------------------------------------------------------------------------


def make_fixtures():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    xtr, ytr = fashion("train")
    xte, yte = fashion("t10k")
    xtr = xtr.float() / 255.0
    xte = xte.float() / 255.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(2):
        perm = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(xtr), 128):
            i = perm[s:s + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[i]), ytr[i]).backward()
            opt.step()
    with torch.no_grad():
        logits = model(xte)
    top = logits.topk(2, dim=1)
    pred = top.indices[:, 0]
    margin = top.values[:, 0] - top.values[:, 1]
    correct = int((pred == yte).sum())
    acc = correct / len(yte)
    os.makedirs(OUT, exist_ok=True)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    b = st_dumps(sd, {"format": "pt"})
    exp = st_dumps({"pred": pred.to(torch.uint8), "margin": margin.float()},
                   {"accuracy": f"{acc:.4f}", "correct": str(correct)})
    # the reader reads back what the writer wrote, bit for bit
    back, meta = st_loads(b)
    assert meta == {"format": "pt"} and set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    with open(os.path.join(OUT, "mlp64.safetensors"), "wb") as f:
        f.write(b)
    with open(os.path.join(OUT, "mlp64_expected.safetensors"), "wb") as f:
        f.write(exp)
    print(json.dumps({"accuracy": acc, "correct": correct, "min_margin": float(margin.min()),
                      "bytes": len(b) + len(exp)}))


# ---- loading a sparrow export ---------------------------------------------------------------


class CsrLinear(nn.Module):
    """y = W x + b with W a torch.sparse_csr_tensor."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):  # x (B, in)
        y = torch.mm(self.w, x.t()).t()
        return y + self.b if self.b is not None else y


def build(config):
    """nn.Sequential for a sparrow config of flatten / linear / relu / conv2d / maxpool lines."""
    mods, feat = [], None
    lines = [l.split("#")[0].split() for l in config.splitlines()]
    lines = [l for l in lines if l]
    shape = None
    if lines and lines[0][0] == "input":
        shape = [int(v) for v in lines[0][1:]]
        lines = lines[1:]
    c, h, w = shape
    for l in lines:
        kind, opts = l[0], dict(o.split("=", 1) for o in l[1:])
        if kind == "flatten":
            mods.append(nn.Flatten())
            c, h, w = c * h * w, 1, 1
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "linear":
            out = int(opts["out"])
            mods.append(nn.Linear(c, out, bias=opts.get("bias", "1") == "1"))
            c = out
        else:
            raise SystemExit(f"check-export: layer '{kind}' is not handled by this script")
    return nn.Sequential(*mods)


def check_export(path, pred_out):
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    with open(path, "rb") as f:
        tensors, meta = st_loads(f.read())
    model = build(meta["sparrow.config"])
    scale = float(meta.get("sparrow.input_scale", 1 / 255))
    sd, csr = {}, {}
    for k, t in tensors.items():
        if k.endswith(".weight.crow_indices"):
            p = k[: -len(".crow_indices")]
            size = tuple(int(v) for v in tensors[p + ".size"].tolist())
            csr[p] = torch.sparse_csr_tensor(t, tensors[p + ".col_indices"], tensors[p + ".values"],
                                             size=size)
        elif k.endswith((".col_indices", ".values", ".weight.size")):
            continue
        else:
            sd[k] = t
    for p, w in csr.items():
        sd[p] = w.to_dense()  # load_state_dict needs every key; the forward uses the sparse one
    model.load_state_dict(sd, strict=True)
    for p, w in csr.items():
        i = int(p.split(".")[0])
        model[i] = CsrLinear(w, model[i].bias)
    xte, yte = fashion("t10k")
    with torch.no_grad():
        pred = model(xte.float() * scale).argmax(1)
    correct = int((pred == yte).sum())
    if pred_out:
        with open(pred_out, "w") as f:
            f.write("".join(f"{int(v)}\n" for v in pred))
    print(json.dumps({"accuracy": correct / len(yte), "correct": correct, "csr_layers": len(csr)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export")
    ap.add_argument("--predictions")
    a = ap.parse_args()
    if a.check_export:
        check_export(a.check_export, a.predictions)
    else:
        make_fixtures()
