#!/usr/bin/python3
"""Prints the records of sparrow golden fixtures (tests/golden/*.bin, written by tools/golden.py).

    /usr/bin/python3 tools/golden_dump.py tests/golden/mlp.bin             # names and shapes
    /usr/bin/python3 tools/golden_dump.py -v 6 tests/golden/*.bin          # and the first 6 values
    /usr/bin/python3 tools/golden_dump.py -r loss -v 0 tests/golden/cnn.bin   # one record, all values

Format (little-endian): "SPGF", u32 version (1), u32 count; per record u32 name_len, name,
u32 ndim (0..6), ndim x u32 dims, prod(dims) float32. The reader checks the structure (magic,
version, bounds, no trailing bytes) and exits 1 on a malformed file. Standard library only.
"""
import argparse
import struct
import sys


def read_fixture(path):
    """Returns [(name, dims, values)] from a fixture file; raises ValueError when malformed."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(data):
            raise ValueError("%s: truncated at byte %d (need %d more)" % (path, pos, n))
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    if take(4) != b"SPGF":
        raise ValueError("%s: bad magic" % path)
    version, count = struct.unpack("<II", take(8))
    if version != 1:
        raise ValueError("%s: unsupported version %d" % (path, version))
    out = []
    for _ in range(count):
        (name_len,) = struct.unpack("<I", take(4))
        name = take(name_len).decode("ascii")
        (ndim,) = struct.unpack("<I", take(4))
        if ndim > 6:
            raise ValueError("%s: record %s has ndim %d > 6" % (path, name, ndim))
        dims = struct.unpack("<%dI" % ndim, take(4 * ndim))
        n = 1
        for d in dims:
            n *= d
        values = struct.unpack("<%df" % n, take(4 * n))
        out.append((name, dims, values))
    if pos != len(data):
        raise ValueError("%s: %d trailing bytes" % (path, len(data) - pos))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("-v", "--values", type=int, default=None,
                    help="also print the first N values of each record (0: all)")
    ap.add_argument("-r", "--record", default=None, help="only the record with this name")
    args = ap.parse_args()
    status = 0
    for path in args.files:
        try:
            recs = read_fixture(path)
        except (OSError, ValueError, UnicodeDecodeError, struct.error) as e:
            print("error: %s" % e, file=sys.stderr)
            status = 1
            continue
        print("%s: %d records" % (path, len(recs)))
        for name, dims, values in recs:
            if args.record is not None and name != args.record:
                continue
            shape = "(" + ", ".join(str(d) for d in dims) + ")"
            line = "  %-36s %-14s" % (name, shape)
            if args.values is not None:
                shown = values if args.values == 0 else values[:args.values]
                line += " " + " ".join("%.7g" % v for v in shown)
                if len(shown) < len(values):
                    line += " ..."
            print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
