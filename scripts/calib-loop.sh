#!/usr/bin/env bash
# The calibration loop on real measurements, on the device every machine has: the host backend
# (OpenBLAS GEMMs and memcpy "copies" on worker threads). Host bench (the CI-sized subset) ->
# kvpr calibrate (fails when a group cannot explain its held-out points) -> held-out host engine
# runs (shapes and policies the bench never ran) -> kvpr compare. Fails when the fit fails or the
# decode-step error misses its target (median <= 15 %, p90 <= 25 %, or as set below).
#   scripts/calib-loop.sh [WORKDIR]       (default: a temporary directory, removed afterwards)
# Environment: KVPR_LOOP_MEDIAN, KVPR_LOOP_P90 (percent), KVPR_LOOP_FORCE=1 (go on past a failed
# fit, to see the comparison; the script still fails), KVPR_BUILD (default build).
# KVPR_LOOP_GATE=G (percent; CI sets it): the host's timings move with whatever else runs on the
# machine (README, Calibration), so a missed target or a failed fit group is reported, not fatal;
# the loop fails only when the decode-step median error exceeds G (a broken fit or model: the loop
# once reported 3,998 %).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${KVPR_BUILD:-build}
MED=${KVPR_LOOP_MEDIAN:-15}
P90=${KVPR_LOOP_P90:-25}
if [ $# -ge 1 ]; then W=$1; mkdir -p "$W"; else W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; fi
rm -f "$W/bench.db" "$W/runs.db" "$W/scratch.db"
t0=$(date +%s.%N)
# the host backend's numbers are only as quiet as the machine: say how busy it was
echo "calib-loop: $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

"$B/kvpr-engine" bench --backend host --size ci --db "$W/bench.db" > "$W/bench.txt"
t1=$(date +%s.%N)

fail=0
force=()
GATE=${KVPR_LOOP_GATE:-}
[ "${KVPR_LOOP_FORCE:-0}" = 1 ] || [ -n "$GATE" ] && force=(--force)
if ! "$B/kvpr" calibrate --from "$W/bench.db" --base h100-pcie --out "$W/host.json" --db "$W/scratch.db" "${force[@]}" \
        > "$W/calibrate.txt" 2> "$W/calibrate.err"; then
    cat "$W/calibrate.err" >&2
    echo "calib-loop: FAIL: calibrate (see above)" >&2
    exit 1
fi
fitfail=0
grep -q "warning: held-out error" "$W/calibrate.err" && { cat "$W/calibrate.err" >&2; fitfail=1; }
cat "$W/calibrate.txt"

# held-out engine runs: other shapes, every policy; nothing of them went into the fit
"$B/kvpr-engine" run --backend host --model OPT-125M --batch 4 --prompt 128 --gen 6 --layers 4 \
    --policies offload,kvpr,gpu --splits 64 --db "$W/runs.db" > "$W/runs.txt"
"$B/kvpr-engine" run --backend host --model OPT-125M --batch 8 --prompt 64 --gen 6 --layers 4 \
    --policies kvpr,offload --splits 32 --db "$W/runs.db" >> "$W/runs.txt"
t2=$(date +%s.%N)

"$B/kvpr" compare --profile "$W/host.json" --from "$W/runs.db" --plots "$W/plots" | tee "$W/compare.txt"
t3=$(date +%s.%N)

read -r med p90 < <(awk '$1 == "decode" && $2 == "step" { gsub("%", ""); print $5, $6 }' "$W/compare.txt")
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
    'BEGIN { printf "calib-loop: bench %.1f s, calibrate + runs %.1f s, compare %.1f s, total %.1f s\n", b - a, c - b, d - c, d - a }'
echo "calib-loop: load average at end $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
if [ -z "${med:-}" ]; then echo "calib-loop: FAIL: no decode-step error in the comparison" >&2; exit 1; fi
if awk -v m="$med" -v p="$p90" -v M="$MED" -v P="$P90" 'BEGIN { exit !(m > M || p > P) }'; then
    echo "calib-loop: target missed: decode-step error median $med %, p90 $p90 % (targets $MED %, $P90 %)" >&2
    fail=1
else
    echo "calib-loop: target met: decode-step error median $med %, p90 $p90 % (targets $MED %, $P90 %)"
fi
if [ -n "$GATE" ]; then
    if awk -v m="$med" -v G="$GATE" 'BEGIN { exit !(m > G) }'; then
        echo "calib-loop: FAIL: decode-step median error $med % is above the gate of $GATE %: the fit or the model is broken" >&2
        exit 1
    fi
    [ $fitfail = 0 ] || echo "calib-loop: a fit group missed the 15 % held-out limit (above), written with --force"
    [ $fail = 0 ] && [ $fitfail = 0 ] && echo "calib-loop: ok" || echo "calib-loop: ok by the gate ($GATE %); see what was missed above"
    exit 0
fi
[ $fail = 0 ] && [ $fitfail = 0 ] && echo "calib-loop: ok" || { echo "calib-loop: FAIL" >&2; exit 1; }
