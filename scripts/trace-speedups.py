#!/usr/bin/env python3
"""Per cell of a GPU session's engine runs (traces/DIR/runs-*.jsonl, one JSON object per plan):
the measured decode step of offloading, of every KVPR split run and of the all-on-GPU plan, and
KVPR's speedup over offloading.

    scripts/trace-speedups.py traces/nvidia-h200-2026-11-26
"""
import glob
import json
import os
import sys


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: trace-speedups.py TRACE_DIR")
    cells = {}
    for f in sorted(glob.glob(os.path.join(sys.argv[1], "runs-*.jsonl"))):
        for n, line in enumerate(open(f), 1):
            try:
                r = json.loads(line)
                key = (r["model"], r["mode"], int(r["batch"]), int(r["nb"]), int(r["prompt"]), int(r["layers"]), r.get("compress", "none"))
                float(r["step_s"])
            except (ValueError, KeyError, TypeError) as e:
                sys.exit("%s:%d: not an engine run record (%s)" % (f, n, e))
            cells.setdefault(key, []).append(r)
    print("%-10s %-10s %3s %2s %6s %3s %-5s | %9s %9s %6s %8s | %8s | kvpr/offload by split"
          % ("model", "mode", "B", "nb", "prompt", "L", "4-bit", "offload", "best kvpr", "l", "speedup", "gpu"))
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[5], k[2], k[4], k[6] != "none", k[6])):
        v = cells[key]
        off = [r for r in v if r["policy"] == "offload"]
        kv = sorted((r for r in v if r["policy"] == "kvpr"), key=lambda r: r["split"])
        gpu = [r for r in v if r["policy"] == "gpu"]
        if not off or not kv:
            continue
        o = off[0]["step_s"]
        best = min(kv, key=lambda r: r["step_s"])
        print("%-10s %-10s %3d %2d %6d %3d %-5s | %7.2fms %7.2fms %6d %7.3fx | %8s | %s"
              % (key + (o * 1e3, best["step_s"] * 1e3, best["split"], o / best["step_s"],
                        "%.2fms" % (gpu[0]["step_s"] * 1e3) if gpu else "-",
                        " ".join("%d:%.2fx" % (r["split"], o / r["step_s"]) for r in kv))))


if __name__ == "__main__":
    main()
