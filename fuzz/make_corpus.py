#!/usr/bin/env python3
# make_corpus.py - writes the tiny seed inputs of the fuzz targets into fuzz/corpus/ (committed;
# rerun only to change them). fuzz_idx input: one byte k, then k bytes of images IDX, then the
# labels IDX.
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
