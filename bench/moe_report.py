#!/usr/bin/python3
"""Writes the mixture-of-experts section of docs/BENCHMARKS.md from bench/out/moe.jsonl
(bench/moe.sh), between its two marker comments. Standard library only.

Criteria (the issue's lines; definitions fixed here, before the numbers):
- training: sparrow's tokens/s (samples/s of `sparrow train --json` times the context) at 2
  threads against PyTorch's in its fastest setting of at most 2 threads (2, 2:1, 1:2; OpenMP
  wait policy passive or libgomp's default), the same model, batch and optimizer, best of the
  rounds each; "sparrow is faster" when the ratio is above 1 for the MoE models.
- inference: the forward pass of the LM with 64 experts at top-1 costs at most 1.3x that of the
  dense LM whose FFN is one expert, at 4096 tokens per pass (batch 64 x 64), medians of
  alternating blocks in one `sparrow bench model` call.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_report import cpu_model, git, report_main  # noqa: E402

BEGIN = "<!-- moe:begin (bench/moe_report.py) -->"
END = "<!-- moe:end -->"


def name(e, k):
    return "dense (FFN 4D)" if e == 0 else "%d experts, top-%d (expert FFN 4D/%d)" % (e, k, k)


def section(records):
    meta = next((r for r in records if r.get("run") == "moe"), None)
    if meta is None:
        return None
    ctx = meta["ctx"]
    sp, pt = {}, {}
    for r in records:
        if r.get("part") != "train":
            continue
        key = (r["experts"], r["top_k"])
        if r.get("peer") == "sparrow" and r.get("samples_per_second"):
            tps = r["samples_per_second"] * ctx
            if key not in sp or tps > sp[key][0]:
                sp[key] = (tps, r)
        elif r.get("peer") == "pytorch" and "tokens_per_second" in r:
            if key not in pt or r["tokens_per_second"] > pt[key][0]:
                pt[key] = (r["tokens_per_second"], r)
    infer = [r for r in records if r.get("part") == "infer" and "speedup" in r]

    L = [BEGIN, "", "## Mixture of experts", "",
         "%s, commit %s, %s, %d CPUs; `bench/moe.sh`%s. OpenBLAS core: %s." % (
             time.strftime("%Y-%m-%d"), git("rev-parse", "--short", "HEAD"), cpu_model(),
             meta["cpus"], " (BENCH_QUICK: a check of the scripts, not a measurement)"
             if meta["quick"] else "", meta["dense_gemm"]), "",
         "The char-level LM `%s` on Moby Dick, batch %d windows of %d characters, Adam lr 1e-3. "
         "MoE blocks: token-choice routing, softmax router, dropless, balance loss 0.01; the "
         "PyTorch peer (bench/moe_torch.py) is the same model written the usual way (tokens "
         "sorted by expert, one pair of matmuls per expert, index_add)." % (
             meta["model"], meta["batch"], ctx), "",
         "### Training throughput (tokens/s, 2 threads, best of %d rounds)" % meta["rounds"], "",
         "| model | sparrow | PyTorch (best setting) | sparrow / PyTorch |", "|---|---|---|---|"]
    verdicts = []
    for key in sorted(set(sp) | set(pt)):
        s, p = sp.get(key), pt.get(key)
        ratio = s[0] / p[0] if s and p else None
        if ratio is not None and key[0] > 0:
            verdicts.append(ratio > 1)
        L.append("| %s | %s | %s | %s |" % (
            name(*key), "%.0f" % s[0] if s else "-",
            "%.0f (%s threads, %s)" % (p[0], p[1]["threads"], p[1]["omp_wait_policy"])
            if p else "-", "%.2fx" % ratio if ratio else "-"))
    if verdicts:
        L += ["", "MoE training, sparrow faster than PyTorch in every MoE row: %s" % (
            "**PASS**" if all(verdicts) else "**FAIL**")]
    if infer:
        L += ["", "### Inference cost against the number of experts", "",
              "Forward pass, evaluation mode, %d tokens per pass (batch %d x %d), 2 threads; "
              "`sparrow bench model --model <moe> --vs <dense>` (alternating blocks, medians)."
              % (infer[0]["batch"] * ctx, infer[0]["batch"], ctx), "",
              "| experts (top-1) | MoE ms | dense ms | MoE / dense |", "|---|---|---|---|"]
        for r in sorted(infer, key=lambda r: r["experts"]):
            L.append("| %d | %.2f | %.2f | %.2fx |" % (r["experts"], r["ms"], r["vs_ms"],
                                                      r["ms"] / r["vs_ms"]))
        e64 = [r for r in infer if r["experts"] == 64]
        if e64:
            ratio = e64[0]["ms"] / e64[0]["vs_ms"]
            L += ["", "64 experts at top-1 cost %.2fx the dense model (the issue asks <= 1.3x): "
                  "%s" % (ratio, "**PASS**" if ratio <= 1.3 else "**FAIL**")]
    L += ["", END]
    return "\n".join(L)


def main():
    return report_main(section, "moe.jsonl", BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
