#!/usr/bin/env bash
# Every step of scripts/gpu-traces.sh in one device call, for sessions whose device time does not
# allow four machine starts (a warm machine is given back after 30 s idle). The steps write into a
# staging folder; after each step the folder is packed into $OUT/traces.tgz (one file, well under
# the 8 files a call may bring back), so a call stopped at its limit still returns every finished
# step. The deadlines (BUDGETS) add up to 510 s: call it with timeout_s 570.
#
#   scripts/gpu-session.sh            on the GPU machine (OUT from the tool)
#   DRY=1 OUT=/tmp/o scripts/gpu-session.sh   the same on the host backend with the tiny grid
set -u
dest=${OUT:?gpu-session: OUT (where the packed traces go) is not set}
stage=${STAGE:-/tmp/kvpr-gpu-stage}
# what the steps took on an H100 (2026-11-27): check 70 s (racecheck then ran over the whole quick
# selftest and hit its limit; over the kernels alone it takes seconds), bench 7 s, and runs-a and
# runs-b used their 140 s each with 1 and 9 cells left over (207 s more by hand): the deadlines
# follow, bench keeping a wide margin (calibration needs it)
export BUDGETS=${BUDGETS:-"check=60 bench=60 runs-a=180 runs-b=210"}
here=$(dirname "$0")
rm -rf "$stage" && mkdir -p "$stage" "$dest" || exit 1
pack() {
    tar -czf "$dest/traces.tgz.tmp" -C "$stage" . && mv -f "$dest/traces.tgz.tmp" "$dest/traces.tgz"
}
rc=0
for s in check bench runs-a runs-b; do
    OUT=$stage "$here/gpu-traces.sh" ${DRY:+--dry-run} "$s" || rc=1
    pack || rc=1
done
# what the caller sees without unpacking: every step's log and the link's plateau
for f in "$stage"/*-log.txt; do echo "== $(basename "$f")"; cat "$f"; done
[ -f "$stage/bench.txt" ] && { echo "== bench.txt (head)"; head -60 "$stage/bench.txt"; }
[ -f "$stage/check-selftest.txt" ] && { echo "== check-selftest.txt (tail)"; tail -5 "$stage/check-selftest.txt"; }
exit $rc
