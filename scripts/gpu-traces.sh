#!/usr/bin/env bash
# On a GPU machine, in one go: build, check every kernel against its CPU reference, measure the
# host link, GEMMs and attention, and run a grid of decode plans (OPT-6.7B and OPT-13B shapes, batch
# 8-64, context 256-2048, split l from 0 to s, both modes). Everything lands in $OUT (default
# traces/new): device.txt, selftest.txt, bench.csv, and traces.sql (the SQLite dump of the
# measurements and engine runs, which 'kvpr calibrate --from traces/.../traces.sql' reads).
set -eu
out=${OUT:-traces/new}
layers=${LAYERS:-4}   # layers per run: bounds memory and time; per-layer timings do not depend on it
mkdir -p "$out"
make -j"$(nproc)" build/kvpr build/kvpr-engine >"$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
eng=build/kvpr-engine
db="$out/traces.db"
rm -f "$db"
{ date -u +%Y-%m-%dT%H:%M:%SZ; $eng info; nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv 2>/dev/null || true; } >"$out/device.txt"
$eng selftest --backend cuda | tee "$out/selftest.txt"
$eng bench --db "$db" --csv "$out/bench.csv" >"$out/bench.txt"
for model in OPT-6.7B OPT-13B; do
    for b in 8 32 64; do
        for s in 256 1024 2048; do
            for mode in latency throughput; do
                nb=1; [ "$mode" = throughput ] && nb=4
                $eng run --model $model --batch $b --prompt $s --gen 8 --mode $mode --nb $nb --layers "$layers" \
                    --policy offload --db "$db" --json >>"$out/runs.jsonl" || true
                for q in 4 2 1; do
                    l=$((s * (q - 1) / q)); [ $q -eq 1 ] && l=$s
                    $eng run --model $model --batch $b --prompt $s --gen 8 --mode $mode --nb $nb --layers "$layers" \
                        --policy kvpr --split $l --db "$db" --json >>"$out/runs.jsonl" || true
                done
            done
        done
    done
done
sqlite3 "$db" .dump >"$out/traces.sql"
echo "wrote $out: $(wc -l <"$out/runs.jsonl") engine runs"
