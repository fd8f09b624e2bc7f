#!/usr/bin/python3
"""Writes the million-neuron section of docs/BENCHMARKS.md from the last whole-epoch record of
bench/out/million.jsonl (bench/million.sh), between its two marker comments. Standard library
only.

Criteria (the issue's line; definitions fixed here, before the numbers): the whole command (model
set-up, one epoch of 60000 samples, the topology updates, the test-set evaluation and the model
file) takes at most 20 minutes of wall time; the process's peak resident memory is at most
4 GiB; and the network learns: test accuracy well above chance (10% for 10 classes; reported).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_report import cpu_model, report_main  # noqa: E402

BEGIN = "<!-- million:begin (bench/million_report.py) -->"
END = "<!-- million:end -->"
HIDDEN = [333334, 333334, 333334]
IN, OUT = 784, 10


def section(r):
    sizes = [IN] + HIDDEN + [OUT]
    dense = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    nnz = r["layers_nnz"]
    wall_ok = r["wall_seconds"] <= 1200
    mem_ok = r["peak_rss_mb"] <= 4096
    learns = r["test_accuracy"] >= 0.5
    L = [BEGIN, "", "## A million hidden neurons, trained sparse", "",
         "%s, commit %s, %s, 2 threads; `bench/million.sh` (`sparrow train --model "
         "mlp:333334,333334,333334 --sparse-train set --epsilon %g --optimizer adam --lr 1e-4 "
         "--epochs 1 --seed 1 --threads 2`)." % (r["date"], r["commit"], cpu_model(),
                                                  r["epsilon"]), "",
         "784-333334-333334-333334-10: 1,000,002 hidden neurons, SET (update every 100 steps, "
         "drop fraction 0.3), Erdos-Renyi densities with eps = %g, the output layer dense. "
         "One epoch of the full Fashion-MNIST training set (938 steps of 64), then the full "
         "test set." % r["epsilon"], "",
         "| | |", "|---|---|",
         "| stored weights per linear layer | %s |" % " / ".join("{:,}".format(n) for n in nnz),
         "| parameters stored (with biases) | {:,} |".format(r["params"]),
         "| the same network dense | {:,} parameters, {:.0f} GB as float32 |".format(
             dense, dense * 4 / 1e9),
         "| density of each linear layer | %s |" % " / ".join(
             "%.3g%%" % (100.0 * n / (a * b)) for n, a, b in zip(nnz, sizes, sizes[1:])),
         "| training (938 steps) | %.0f s (%.1f samples/s) |" % (r["train_seconds"],
                                                               r["samples_per_second"]),
         "| topology updates | %d, %.1f s in all |" % (r["topology_updates"],
                                                    r["topology_update_seconds"]),
         "| whole command (set-up, epoch, updates, test set, save) | %.0f s = %.1f min: %s |" % (
             r["wall_seconds"], r["wall_seconds"] / 60, "PASS (<= 20 min)" if wall_ok
             else "FAIL (> 20 min)"),
         "| peak resident memory | %.0f MB: %s |" % (r["peak_rss_mb"], "PASS (<= 4 GiB)"
                                                      if mem_ok else "FAIL (> 4 GiB)"),
         "| test accuracy after one epoch | %.2f%% (chance: 10%%)%s |" % (
             100 * r["test_accuracy"], "" if learns else ": FAIL"),
         "| test loss | %.4f |" % r["test_loss"],
         "| model file | %.0f MB (weights, CSR structure, Adam state) |" % (
             r["file_bytes"] / 1e6),
         "", END]
    return "\n".join(L)


def last_epoch(records):
    """The section of the last whole-epoch run (a MILLION_STEPS check run is no epoch)."""
    runs = [r for r in records if r.get("run") == "epoch"]
    return section(runs[-1]) if runs else None


def main():
    return report_main(last_epoch, "million.jsonl", BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
