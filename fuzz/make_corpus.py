#!/usr/bin/env python3
# make_corpus.py - writes the tiny seed inputs of the fuzz targets into fuzz/corpus/ (committed;
# rerun only to change them: python3 fuzz/make_corpus.py). fuzz_idx input: one byte k, then k
# bytes of images IDX, then the labels IDX. fuzz_safetensors input: a safetensors file.
import json
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def pair(images, labels):
    assert len(images) < 256
    return bytes([len(images)]) + images + labels


seeds = {
    # (3, 2, 2) images, 3 labels
    "images3d": pair(idx([3, 2, 2], range(0, 240, 20)), idx([3], [1, 0, 2])),
    # (2, 5) images: features without an image shape
    "images2d": pair(idx([2, 5], [0, 255, 7, 9, 128, 1, 2, 3, 4, 5]), idx([2], [9, 3])),
    # (1, 2, 2, 2) images: channels
    "images4d": pair(idx([1, 2, 2, 2], [10, 20, 30, 40, 50, 60, 70, 80]), idx([1], [4])),
    # a labels file alone: the whole input is valid IDX for sp_idx_parse
    "labels1d": idx([3], [1, 2, 0]),
}

out = os.path.join(here, "corpus", "idx")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


# ---- fuzz_safetensors: safetensors files. Two import into the target's fixed config (flatten,
# linear 4 -> 3, relu, linear 3 -> 2 on 1x2x2 inputs); the others cover dtypes, CSR
# components, metadata escapes and an empty file.


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes); laid out in the given order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def i64(values):
    return struct.pack("<%dq" % len(values), *values)


mlp = [("1.weight", "F32", [3, 4], f32([0.1 * i - 0.5 for i in range(12)])),
       ("1.bias", "F32", [3], f32([0.1, -0.2, 0.3])),
       ("3.weight", "F32", [2, 3], f32([0.5, -0.5, 0.25, -0.25, 1.0, -1.0])),
       ("3.bias", "F32", [2], f32([0.0, 0.125]))]
csr = [("1.weight.crow_indices", "I64", [4], i64([0, 2, 3, 5])),
       ("1.weight.col_indices", "I64", [5], i64([0, 3, 1, 0, 2])),
       ("1.weight.values", "F32", [5], f32([1.0, -2.0, 0.5, 0.25, -1.0])),
       ("1.weight.size", "I64", [2], i64([3, 4])),
       ("1.bias", "F32", [3], f32([0.1, -0.2, 0.3])),
       ("3.weight", "F16", [2, 3], struct.pack("<6e", 0.5, -0.5, 0.25, -0.25, 1.0, -1.0)),
       ("3.bias", "BF16", [2], bytes([0x00, 0x3F, 0x80, 0xBF]))]
st_seeds = {
    "mlp_f32": safetensors(mlp, {"format": "pt", "sparrow.input_scale": "0.00392156878"}),
    "mlp_csr_f16_bf16": safetensors(csr),
    "dtypes": safetensors([("d", "F64", [2], struct.pack("<2d", 1.5, -2.0)),
                           ("i", "I32", [1, 2], struct.pack("<2i", 7, -7)),
                           ("s", "U8", [], b"\x05"), ("b", "BOOL", [3], b"\x00\x01\x01"),
                           ("z", "F32", [0, 4], b"")],
                          {"k\u00e9y": "tab\tquote\" \U0001F600"}),
    "empty": safetensors([]),
}
out = os.path.join(here, "corpus", "safetensors")
os.makedirs(out, exist_ok=True)
for name, data in st_seeds.items():
    with open(os.path.join(out, name + ".safetensors"), "wb") as f:
        f.write(data)
