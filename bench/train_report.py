#!/usr/bin/python3
"""Writes the training-throughput section of docs/BENCHMARKS.md from bench/out/train.jsonl
(bench/train.sh). The section sits between two marker comments, so that the kernel report
(bench/report.py) and this one each rewrite only their own part. Standard library only.

For each model: sparrow's samples/s over one epoch at 1 and 2 threads and PyTorch's in every
thread setting of bench/train_torch.py, each the best of the rounds (sparrow and PyTorch
alternate, so load bursts hit both); the ratio compares sparrow at 2 threads with PyTorch in its
fastest setting.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- training:begin (bench/train_report.py) -->"
END = "<!-- training:end -->"


def git(*a):
    try:
        return subprocess.run(["git", "-C", ROOT] + list(a), stdout=subprocess.PIPE,
                              universal_newlines=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def section(records):
    sp = {}   # (model, threads) -> best record
    pt = {}   # (model, setting) -> best record
    for r in records:
        if "samples_per_second" not in r or "best_threads" in r:
            continue
        if r.get("peer") == "sparrow":
            k = (r["model"], r["threads"])
            if k not in sp or r["samples_per_second"] > sp[k]["samples_per_second"]:
                sp[k] = r
        elif r.get("peer") == "pytorch":
            k = (r["model"], "%s/%s" % (r["threads"], r.get("omp_wait_policy")))
            if k not in pt or r["samples_per_second"] > pt[k]["samples_per_second"]:
                pt[k] = r
    models = []
    for m, _ in list(sp) + list(pt):
        if m not in models:
            models.append(m)
    dirty = git("status", "--porcelain", "--untracked-files=no")
    L = [BEGIN, "", "## Training throughput against PyTorch", "",
         "%s, commit %s%s, %s, %d CPUs, torch %s. `bench/train.sh`: one epoch of Fashion-MNIST "
         "(60000 samples), batch 64, Adam lr 1e-3, samples/s over the epoch's training steps; "
         "sparrow and PyTorch alternate in the same run, best of the rounds for each. OpenBLAS "
         "at full speed for both (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset). PyTorch runs in "
         "every thread setting of `bench/train_torch.py` (torch/OpenBLAS threads, libgomp wait "
         "policy); the ratio is sparrow at 2 threads over PyTorch's fastest setting." % (
             time.strftime("%Y-%m-%d"), git("rev-parse", "--short", "HEAD"),
             " (+ uncommitted changes)" if dirty else "", cpu_model(), os.cpu_count() or 0,
             next((r.get("torch_version") for r in pt.values()), "?")), ""]
    L.append("| model | sparrow 1 thread | sparrow 2 threads | PyTorch fastest (setting) | "
             "ratio (2 threads) | target |")
    L.append("|---|---|---|---|---|---|")
    for m in models:
        s1 = sp.get((m, 1), {}).get("samples_per_second")
        s2 = sp.get((m, 2), {}).get("samples_per_second")
        best = max((r for (mm, _), r in pt.items() if mm == m),
                   key=lambda r: r["samples_per_second"], default=None)
        ratio = s2 / best["samples_per_second"] if s2 and best else None
        target = ""
        if m == "lenet300":
            target = "≥ 2x: %s" % ("**met**" if ratio and ratio >= 2 else "not met")
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            m, "%.0f" % s1 if s1 else "-", "%.0f" % s2 if s2 else "-",
            "%.0f (%s, %s)" % (best["samples_per_second"], best["threads"],
                               best.get("omp_wait_policy")) if best else "-",
            "%.2fx" % ratio if ratio else "-", target))
    L += ["", "Every PyTorch setting measured (samples/s, best of the rounds; cpu_pressure is the "
          "share of time some task waited for a CPU):", "",
          "| model | threads (torch:OpenBLAS) | wait policy | samples/s | cpu_pressure |",
          "|---|---|---|---|---|"]
    for (m, _), r in sorted(pt.items()):
        L.append("| %s | %s | %s | %.0f | %s |" % (m, r["threads"], r.get("omp_wait_policy"),
                                                r["samples_per_second"], r.get("cpu_pressure")))
    L += ["", "sparrow: load average at the start of each best run: %s." % ", ".join(
        "%s %dt %.2f" % (m, t, r.get("loadavg", float("nan"))) for (m, t), r in sorted(sp.items())),
        "", END]
    return "\n".join(L)


def read_jsonl(path):
    """The JSON objects of a results file, one per line (other lines skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
    return records


def write_section(path, text, begin, end):
    """Replaces the text between the markers begin..end of path (or appends it)."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(new)


def report_main(section_of, results, begin, end):
    """The command line every JSON-lines report shares: --in (bench/out/<results>) and --out
    (docs/BENCHMARKS.md); section_of(records) gives the section's text, or None when the records
    hold nothing to report (then exit status 1)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="inp", default=os.path.join(ROOT, "bench", "out", results))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    a = ap.parse_args()
    text = section_of(read_jsonl(a.inp))
    if text is None:
        print("%s: nothing to report in %s" % (os.path.basename(sys.argv[0]), a.inp),
              file=sys.stderr)
        return 1
    write_section(a.out, text, begin, end)
    print(text)
    return 0


def main():
    return report_main(section, "train.jsonl", BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
