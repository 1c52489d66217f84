#!/usr/bin/env bash
# After a kernel change: one short device call that checks and measures what changed, at most 8
# files in $OUT, every command under its own deadline (about 230 s at most in all):
#   verify-selftest.txt   every CUDA kernel against its double-precision reference (quantisation too)
#   verify-memcheck.txt   compute-sanitizer memcheck over the quick selftest
#   bench.txt, bench.sql  kvpr-engine bench (copies, GEMMs, decode attention with the launcher's choices)
#   attn-tune.csv         every partition and load depth of decode attention (make attn-tune)
#   runs-comp.jsonl/.sql  offload and kvpr with and without 4-bit compression (the paper's Fig. 9 cell
#                         on OPT-13B, throughput mode; and OPT-6.7B, latency)
#   verify-log.txt        what each command took and its exit status
# Carry build/kvpr-engine and build/kvpr-attn-tune (make && make attn-tune here first).
set -u
E=${ENGINE:-build/kvpr-engine}
T=${TUNER:-build/kvpr-attn-tune}
OUT=${OUT:?gpu-verify: OUT is not set}
W=${WORK:-/tmp/kvpr-gpu-verify}
mkdir -p "$OUT" "$W" || exit 1
rm -f "$W"/*.db*
log="$OUT/verify-log.txt"
{ date -u +%Y-%m-%dT%H:%M:%SZ; "$E" version; nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1; } >"$log"
step() { # seconds what command...
    local lim=$1 t0=$SECONDS
    shift
    timeout --kill-after=5 "$lim" "$@"
    echo "took $((SECONDS - t0)) s (rc $?, limit $lim s): $*" >>"$log"
}
step 40 "$E" selftest --backend cuda >"$OUT/verify-selftest.txt" 2>&1
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step 40 "$cs" --tool memcheck --error-exitcode 9 "$E" selftest --backend cuda --quick >"$OUT/verify-memcheck.txt" 2>&1
step 40 "$E" bench --backend cuda --size full --db "$W/bench.db" >"$OUT/bench.txt" 2>&1
step 20 "$T" 20 >"$OUT/attn-tune.csv" 2>>"$log"
: >"$OUT/runs-comp.jsonl"
for c in "OPT-13B 32 4 512 throughput" "OPT-6.7B 32 1 2048 latency"; do
    set -- $c
    for z in none kv; do
        comp=()
        [ "$z" = kv ] && comp=(--compress kv)
        step 45 "$E" run --backend cuda --model "$1" --batch "$2" --nb "$3" --prompt "$4" --mode "$5" --gen 8 --layers 4 \
            --policies offload,kvpr --splits 1/4,1/2,3/4,1/1 "${comp[@]}" --db "$W/runs.db" --json >>"$OUT/runs-comp.jsonl" 2>>"$log"
    done
done
dump=$(sed -n '/^PYDUMP=\$(cat <<.PY.$/,/^PY$/p' "$(dirname "$0")/gpu-traces.sh" | sed '1d;$d')
for d in bench runs; do
    [ -f "$W/$d.db" ] && python3 -c "$dump" "$W/$d.db" "$OUT/$([ $d = runs ] && echo runs-comp || echo bench).sql" 2>>"$log"
done
cat "$log"
tail -3 "$OUT/verify-selftest.txt"
grep -E "ERROR SUMMARY" "$OUT/verify-memcheck.txt"
