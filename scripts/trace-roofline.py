#!/usr/bin/env python3
"""How close the engine's all-on-GPU decode steps come to the roofline, from a GPU session's traces.

For every run with policy gpu in traces/DIR/traces.sql, each decode step's compute-stream ops (qkv,
attn, ffn, lm_head, ...) each get a roofline time max(bytes / B, flops / P), B the device-to-device
rate that the same session's bench measured (read + written: what HBM moves per second), P the
fastest GEMM rate the bench measured; the step's roofline is their sum (they run one after another
on one stream). Prints measured / roofline per run (median over decode steps), then the median and
range over runs; --by-op adds each op kind's measured and roofline time summed over those steps.

    scripts/trace-roofline.py [--by-op] traces/nvidia-h200-2026-11-26
"""
import json
import os
import re
import sqlite3
import statistics
import sys


def main():
    args = [a for a in sys.argv[1:] if a != "--by-op"]
    by_op = len(args) != len(sys.argv) - 1
    if len(args) != 1 or not os.path.isdir(args[0]):
        sys.exit("usage: trace-roofline.py [--by-op] TRACE_DIR")
    d = args[0]
    bench = open(os.path.join(d, "bench.txt")).read()
    m = re.search(r"gpu\.d2d\s+([0-9.]+) GB/s", bench)
    if not m:
        sys.exit("%s/bench.txt: no gpu.d2d line" % d)
    bw = float(m.group(1)) * 1e9
    peak = max(float(x) for x in re.findall(r"^\S+\s+\S+\s+\d+\s+\d+\s+\d+\s+\d+\s+[0-9.]+\s+([0-9.]+)$", bench, re.M)) * 1e12
    con = sqlite3.connect(":memory:")
    con.executescript(open(os.path.join(d, "traces.sql")).read())
    print("roofline: %.0f GB/s (device-to-device, read + written), %.0f TFLOP/s (fastest GEMM measured)" % (bw / 1e9, peak / 1e12))
    print("%-5s %-46s %10s %10s %7s" % ("run", "plan", "measured", "roofline", "ratio"))
    ratios = []
    ops = {}
    for rid, model, plan in con.execute("SELECT id, model, plan FROM runs WHERE plan LIKE '%\"policy\":\"gpu\"%' ORDER BY id"):
        per = []
        for (step,) in con.execute("SELECT DISTINCT step FROM spans WHERE run_id=? AND step >= 0 AND resource='gpu'", (rid,)):
            rows = con.execute("SELECT start_ps, end_ps, bytes, flops, op FROM spans WHERE run_id=? AND step=? AND resource='gpu'",
                               (rid, step)).fetchall()
            for r in rows:
                o = ops.setdefault(r[4], [0.0, 0.0])
                o[0] += (r[1] - r[0]) * 1e-12
                o[1] += max(r[2] / bw, r[3] / peak)
            meas = (max(r[1] for r in rows) - min(r[0] for r in rows)) * 1e-12
            roof = sum(max(r[2] / bw, r[3] / peak) for r in rows)
            if roof > 0:
                per.append((meas, roof))
        if not per:
            continue
        meas = statistics.median(p[0] for p in per)
        roof = statistics.median(p[1] for p in per)
        ratios.append(meas / roof)
        try:
            p = json.loads(plan)
            label = "%s %s b%dx%d p%d L%s" % (model, p["mode"], p["batch"], p["nb"], p["prompt"], p.get("layers") or "all")
        except (ValueError, KeyError, TypeError):
            label = model
        print("%-5d %-46s %8.3fms %8.3fms %6.2fx" % (rid, label[:46], meas * 1e3, roof * 1e3, meas / roof))
    if by_op:
        print("%-10s %12s %12s %7s  (sums over every decode step of those runs)" % ("op", "measured", "roofline", "ratio"))
        for k, (a, b) in sorted(ops.items(), key=lambda kv: -kv[1][0]):
            print("%-10s %10.2fms %10.2fms %6.2fx" % (k, a * 1e3, b * 1e3, a / b if b > 0 else float("nan")))
    if ratios:
        print("measured / roofline over %d runs: median %.2fx, range %.2f-%.2fx"
              % (len(ratios), statistics.median(ratios), min(ratios), max(ratios)))


if __name__ == "__main__":
    main()
