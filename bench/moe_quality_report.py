#!/usr/bin/python3
"""The table of bench/moe_quality.sh: validation and test bits per character of the dense and
mixture-of-experts char LMs, per seed and mean, from bench/out/moe_quality/<name>-s<seed>.json
(sparrow train --json) and .log (--log, JSON lines per epoch; the last line's
val_bits_per_char). Routing statistics, when a run has them (<name>-s<seed>.eval.json from
`sparrow eval --json`, or the train --json line), give the max/mean expert load on the test
text. Standard library only; prints Markdown.

    bench/moe_quality_report.py [DIR]
"""
import glob
import json
import os
import re
import sys

ORDER = ["dense", "e8k1", "e16k1", "e8k1-nobalance", "e8k1-b0.05", "e8k1-b0.1"]
LABEL = {"dense": "dense (FFN 256)", "e8k1": "8 experts, top-1 (balance 0.01)",
         "e16k1": "16 experts, top-1 (balance 0.01)",
         "e8k1-nobalance": "8 experts, top-1, no balancing loss",
         "e8k1-b0.05": "8 experts, top-1, balance 0.05", "e8k1-b0.1": "8 experts, top-1, balance 0.1"}
D, F, LAYERS = 64, 256, 2
EXPERT = D * F + F + F * D + D  # one expert FFN: linear D->F, gelu, linear F->D


def experts_of(name):
    m = re.match(r"e(\d+)k(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 1)


def main(folder):
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*-s*.json"))):
        m = re.match(r"(.+)-s(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        name, seed = m.group(1), int(m.group(2))
        r = json.load(open(path))
        log = os.path.join(folder, "%s-s%d.log" % (name, seed))
        lines = [json.loads(x) for x in open(log) if x.strip()] if os.path.exists(log) else []
        r["val_bpc"] = lines[-1].get("val_bits_per_char") if lines else None
        ev = os.path.join(folder, "%s-s%d.eval.json" % (name, seed))
        if os.path.exists(ev):
            r.update({k: v for k, v in json.load(open(ev)).items() if k.startswith("expert_")})
        runs.setdefault(name, {})[seed] = r
    if not runs:
        print("moe_quality_report: no runs in %s" % folder, file=sys.stderr)
        return 1
    print("| model | parameters | active per token | validation bits/char (seeds) | mean | "
          "test bits/char (mean) | test max/mean expert load |")
    print("|---|---|---|---|---|---|---|")
    for name in [n for n in ORDER if n in runs] + sorted(set(runs) - set(ORDER)):
        rs = runs[name]
        seeds = sorted(rs)
        e, k = experts_of(name)
        params = rs[seeds[0]]["params"]
        active = params - LAYERS * (e - k) * EXPERT if e else params
        vals = [rs[s]["val_bpc"] for s in seeds if rs[s]["val_bpc"] is not None]
        tests = [rs[s]["bits_per_char"] for s in seeds]
        loads = [rs[s]["expert_load_max_over_mean"] for s in seeds
                 if "expert_load_max_over_mean" in rs[s]]
        print("| %s | {:,} | {:,} | %s | %s | %.4f | %s |".format(params, active) % (
            LABEL.get(name, name), " / ".join("%.4f" % v for v in vals),
            "%.4f" % (sum(vals) / len(vals)) if vals else "-", sum(tests) / len(tests),
            " / ".join("%.2f" % v for v in loads) if loads else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "moe_quality")))
