#!/usr/bin/env bash
# Ground truth from a GPU machine in four short steps, one device call each (traces/README.md):
#
#   check   device and driver, PCIe link as negotiated (nvidia-smi -q), every kernel against its CPU
#           reference (selftest), compute-sanitizer memcheck over the quick selftest, racecheck over its kernels
#   bench   host link (each direction alone and both at once, pinned and pageable), the engine's
#           GEMMs, decode attention, device-to-device copies
#   runs-a  decode plans, OPT-6.7B: offload, kvpr at l = s/4, s/2, 3s/4, s, and gpu, per cell
#   runs-b  the same for OPT-13B and Llama-3-8B (GQA)
#
# It runs a prebuilt, portable kvpr-engine (make builds one; it needs only glibc, libstdc++ and
# cuBLAS there): no make, no package installs, no sqlite3 command. Each step writes at most 6 files
# straight into $OUT, databases stay in $WORK and come back as SQL text (python3's sqlite3), so no
# -wal or -shm file is ever in $OUT. Every command runs under a deadline: a step never outlasts its
# budget, and a cell the plan says would not fit in what is left is skipped and logged.
#
#   scripts/gpu-traces.sh STEP          one step on the GPU (OUT, ENGINE, WORK from the environment)
#   scripts/gpu-traces.sh --plan        what each step runs and the time the plan predicts (no GPU)
#   scripts/gpu-traces.sh --dry-run     every step on the host backend with a tiny grid (CI checks it)
#   scripts/gpu-traces.sh --collect DIR merge the steps' SQL in DIR into DIR/traces.sql (here, with kvpr)
set -u
ENGINE=${ENGINE:-build/kvpr-engine}
KVPR=${KVPR:-$(dirname "$ENGINE")/kvpr}
OUT=${OUT:-traces/new}
WORK=${WORK:-/tmp/kvpr-gpu-traces}
PROFILE=${PROFILE:-h100-sxm}   # the predictions' machine; runs are labelled with the device's own name
STEPS="check bench runs-a runs-b"
# seconds: each step's deadline, which bounds its device time whatever happens
declare -A BUDGET=([check]=210 [bench]=120 [runs-a]=170 [runs-b]=170)
# BUDGETS="check=100 bench=120" overrides some (one device call for every step: scripts/gpu-session.sh)
for kv in ${BUDGETS:-}; do
    case "${kv%%=*}" in check | bench | runs-a | runs-b) ;; *) echo "gpu-traces: BUDGETS: unknown step in '$kv'" >&2; exit 2 ;; esac
    [[ "${kv#*=}" =~ ^[0-9]+$ ]] || { echo "gpu-traces: BUDGETS: '$kv' is not STEP=SECONDS" >&2; exit 2; }
    BUDGET[${kv%%=*}]=${kv#*=}
done
# check cannot be simulated: selftest plus the two sanitizer passes, assumed (the log says what they
# took: on an H100 the selftest 7 s, memcheck 2 s; racecheck over the kernels is the kernels' 3 s
# slowed down)
CHECK_PREDICT=30
GEN=8
LAYERS=4
POLICIES=offload,kvpr,gpu
SPLITS=1/4,1/2,3/4,1/1

mode=run
steps=""
while [ $# -gt 0 ]; do
    case "$1" in
    --dry-run) mode=dry ;;
    --plan) mode=plan ;;
    --collect) mode=collect; shift; collect_dir=${1:-} ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    check | bench | runs-a | runs-b) steps="$steps $1" ;;
    *) echo "gpu-traces: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# cells: model batch prompt mode (throughput mode runs 4 micro-batches)
if [ "$mode" = dry ]; then
    BACKEND=host
    # the smallest built-in model, two layers, two decode steps: seconds on two cores, and kvpr
    # compare can re-simulate the runs (it knows the model by name)
    CELLS_A="OPT-125M 2 32 latency"
    CELLS_B="OPT-125M 2 24 throughput"
    GEN=3
    LAYERS=2
    BENCH_SIZE=tiny
    SELFTEST="--quick"
else
    BACKEND=cuda
    CELLS_A="OPT-6.7B 8 512 latency
OPT-6.7B 32 512 latency
OPT-6.7B 64 512 latency
OPT-6.7B 32 1024 latency
OPT-6.7B 8 2048 latency
OPT-6.7B 32 2048 latency
OPT-6.7B 64 2048 latency
OPT-6.7B 8 512 throughput
OPT-6.7B 32 512 throughput
OPT-6.7B 64 512 throughput
OPT-6.7B 8 2048 throughput
OPT-6.7B 32 2048 throughput"
    CELLS_B="OPT-13B 8 512 latency
OPT-13B 32 512 latency
OPT-13B 64 512 latency
OPT-13B 8 2048 latency
OPT-13B 32 2048 latency
OPT-13B 64 2048 latency
OPT-13B 8 512 throughput
OPT-13B 32 1024 throughput
Llama-3-8B 8 512 latency
Llama-3-8B 32 512 latency
Llama-3-8B 64 512 latency
Llama-3-8B 8 2048 latency
Llama-3-8B 32 2048 latency
Llama-3-8B 64 2048 latency
Llama-3-8B 64 512 throughput
Llama-3-8B 32 2048 throughput"
    BENCH_SIZE=full
    SELFTEST=""
fi

cells() { [ "$1" = runs-a ] && echo "$CELLS_A" || echo "$CELLS_B"; }
cell_args() { # model batch prompt mode
    local nb=1
    [ "$4" = throughput ] && nb=4
    echo "--model $1 --batch $2 --prompt $3 --gen $GEN --mode $4 --nb $nb --layers $LAYERS --policies $POLICIES --splits $SPLITS"
}
# the engine's own prediction of a cell or of the bench, in whole seconds (rounded up)
cell_predict() {
    # shellcheck disable=SC2046
    "$ENGINE" run --backend host $(cell_args "$@") --estimate "$PROFILE" | sed -n 's/.* \([0-9.]*\) s in all predicted.*/\1/p' | awk '{print int($1 + 0.999)}'
}
bench_predict() {
    "$ENGINE" bench --backend host --size "$BENCH_SIZE" --estimate "$PROFILE" | sed -n 's/.*: \([0-9.]*\) s predicted.*/\1/p' | awk '{print int($1 + 0.999)}'
}
step_predict() {
    case "$1" in
    check) echo "$CHECK_PREDICT" ;;
    bench) bench_predict ;;
    *)
        local t=0 c
        while read -r m b p md; do
            c=$(cell_predict "$m" "$b" "$p" "$md") || return 1
            t=$((t + ${c:-0}))
        done <<<"$(cells "$1")"
        echo "$t"
        ;;
    esac
}

# SQL text of a results database, as sqlite3's .dump writes it but without PRAGMA lines (kvpr's
# importer takes tables, indexes and rows only), floats exact (repr), written atomically
PYDUMP=$(cat <<'PY'
import sqlite3, sys, os
con = sqlite3.connect(sys.argv[1])
def q(v):
    if v is None: return 'NULL'
    if isinstance(v, int): return str(v)
    if isinstance(v, float):
        return 'NULL' if v != v else ('9e999' if v == float('inf') else '-9e999' if v == float('-inf') else repr(v))
    if isinstance(v, bytes): return "X'" + v.hex() + "'"
    return "'" + str(v).replace("'", "''") + "'"
tmp = sys.argv[2] + '.tmp'
uv = con.execute('PRAGMA user_version').fetchone()[0]
app = con.execute('PRAGMA application_id').fetchone()[0]
with open(tmp, 'w') as f:
    # the two header values a dump cannot set itself (--collect sets them when it loads the dump)
    f.write('-- kvpr results database: user_version %d, application_id %d\n' % (uv, app))
    f.write('BEGIN TRANSACTION;\n')
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall():
        f.write(sql + ';\n')
        n = name.replace('"', '""')
        for row in con.execute('SELECT * FROM "%s"' % n):
            f.write('INSERT INTO "%s" VALUES(%s);\n' % (n, ','.join(q(v) for v in row)))
    for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE type IN ('index','trigger','view') AND sql IS NOT NULL ORDER BY rowid").fetchall():
        f.write(sql + ';\n')
    f.write('COMMIT;\n')
con.close()
os.replace(tmp, sys.argv[2])
PY
)
# a dump back into a database file, with the header values its first line records
PYLOAD=$(cat <<'PY'
import re, sqlite3, sys
text = open(sys.argv[1]).read()
con = sqlite3.connect(sys.argv[2])
con.executescript(text)
m = re.match(r'-- kvpr results database: user_version (\d+), application_id (-?\d+)', text)
if m:
    con.execute('PRAGMA user_version=%d' % int(m.group(1)))
    con.execute('PRAGMA application_id=%d' % int(m.group(2)))
con.commit()
con.close()
PY
)
# the SQL text of a database, written atomically; without python3's sqlite3, the database itself
dump() { # db out.sql
    if python3 -c "$PYDUMP" "$1" "$2"; then return 0; fi
    [ "$log" = /dev/stderr ] && return 1
    rm -f "$2.tmp"
    echo "dump: python3's sqlite3 failed; bringing $(basename "$1") back instead" >>"$log"
    cp "$1" "$OUT/" 2>/dev/null
    # a run killed by its deadline can leave committed rows in the WAL: bring it too
    [ -f "$1-wal" ] && cp "$1-wal" "$OUT/"
    return 0
}


if [ "$mode" = plan ]; then
    [ -x "$ENGINE" ] || { echo "gpu-traces: no $ENGINE (make first)" >&2; exit 1; }
    total=0
    budget=0
    for s in $STEPS; do
        p=$(step_predict "$s") || exit 1
        what="selftest, memcheck, racecheck"
        [ "$s" = bench ] && what="bench --size $BENCH_SIZE"
        case "$s" in runs-*) what="$(cells "$s" | wc -l) cells x 6 plans" ;; esac
        printf 'step %-7s predicted %4d s  budget %4d s  %s\n' "$s" "$p" "${BUDGET[$s]}" "$what"
        total=$((total + p))
        budget=$((budget + ${BUDGET[$s]}))
    done
    printf 'total   predicted %4d s  budget %4d s  (device time of the commands; machine start and transfers come on top)\n' "$total" "$budget"
    echo "predictions: decode simulated on $PROFILE, set-up at assumed rates (engine/budget.c); check assumed"
    exit 0
fi

if [ "$mode" = collect ]; then
    # here, after the session: one traces.sql from the steps' dumps (kvpr merge renumbers runs)
    d=${collect_dir:?usage: gpu-traces.sh --collect DIR}
    tmp=$(mktemp -d) || exit 1
    for f in "$d"/bench.sql "$d"/runs-*.sql; do
        [ -f "$f" ] || continue
        python3 -c "$PYLOAD" "$f" "$tmp/$(basename "$f" .sql).db" || exit 1
    done
    "$KVPR" merge "$tmp/traces.db" "$tmp"/*.db >/dev/null || exit 1
    log=/dev/stderr
    dump "$tmp/traces.db" "$d/traces.sql" || exit 1
    rm -rf "$tmp"
    echo "wrote $d/traces.sql"
    exit 0
fi

# ---- running steps -------------------------------------------------------------------------------

[ -x "$ENGINE" ] || { echo "gpu-traces: no $ENGINE: build it here (make) and carry it (traces/README.md)" >&2; exit 1; }
mkdir -p "$OUT" "$WORK" || exit 1
[ -n "$steps" ] || { [ "$mode" = dry ] && steps=$STEPS; }
[ -n "$steps" ] || { echo "gpu-traces: name a step ($STEPS), or --plan, --dry-run" >&2; exit 2; }

if [ "$BACKEND" = cuda ] && ldd "$ENGINE" 2>/dev/null | grep -q 'libcublas.*not found'; then
    # cuBLAS is the one library the engine takes from the GPU machine: find it where CUDA or a
    # Python wheel put it
    lib=$(find /usr/local /opt /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -1)
    if [ -n "$lib" ]; then
        LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
fi

# run SECONDS CMD...: under the step's deadline (or SECONDS if sooner); logs what it took
run() {
    local want=$1 left rc t0=$SECONDS
    shift
    left=$((budget - (SECONDS - start) - 10)) # 10 s kept for the dump
    [ "$want" -lt "$left" ] && left=$want
    if [ "$left" -le 0 ]; then
        echo "skipped (no time left): $*" >>"$log"
        return 124
    fi
    timeout --kill-after=5 "$left" "$@"
    rc=$?
    echo "took $((SECONDS - t0)) s (rc $rc, limit $left s): $*" >>"$log"
    return $rc
}

# racecheck looks for shared-memory hazards inside kernels: it runs over the kernels' own checks
# (--kernels); the end-to-end runs of every policy took it past 140 s on an H100 (memcheck keeps them)
sanitizer() { # tool: the quick selftest under compute-sanitizer (the dry run: the same selftest, plain)
    local sel=--quick
    [ "$1" = racecheck ] && sel="--quick --kernels"
    echo "== $1 =="
    if [ "$mode" = dry ]; then
        echo "(dry run: no compute-sanitizer on the host backend; the same selftest without it)"
        run 60 "$ENGINE" selftest --backend "$BACKEND" $sel
    else
        local cs
        cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
        [ -n "$cs" ] || { echo "compute-sanitizer: not found"; return 0; }
        # memcheck instruments every kernel it loads (cuBLAS's too): it gets the larger share
        run "$([ "$1" = memcheck ] && echo 70 || echo 60)" "$cs" --tool "$1" --error-exitcode 9 "$ENGINE" selftest --backend "$BACKEND" $sel
    fi
    echo "== $1: exit $? =="
}

for step in $steps; do
    start=$SECONDS
    budget=${BUDGET[$step]}
    log="$OUT/$step-log.txt"
    pred=$(step_predict "$step")
    {
        echo "plan: $step predicted ${pred:-?} s on $PROFILE, budget $budget s"
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "engine: $("$ENGINE" version)"
    } >"$log"
    case "$step" in
    check)
        {
            date -u +%Y-%m-%dT%H:%M:%SZ
            uname -srm
            "$ENGINE" version
            echo "== ldd =="
            ldd "$ENGINE"
            echo "== info =="
            run 20 "$ENGINE" info --backend "$BACKEND"
            echo "== nvidia-smi: negotiated link =="
            if command -v nvidia-smi >/dev/null; then
                nvidia-smi --query-gpu=name,pci.bus_id,driver_version,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
            else
                echo "nvidia-smi: not found"
            fi
        } >"$OUT/check-device.txt" 2>&1
        if command -v nvidia-smi >/dev/null; then nvidia-smi -q >"$OUT/check-nvidia-smi.txt" 2>&1
        else echo "nvidia-smi: not found" >"$OUT/check-nvidia-smi.txt"; fi
        # shellcheck disable=SC2086
        run 60 "$ENGINE" selftest --backend "$BACKEND" $SELFTEST >"$OUT/check-selftest.txt" 2>&1
        { sanitizer memcheck; sanitizer racecheck; } >"$OUT/check-sanitizer.txt" 2>&1
        ;;
    bench)
        rm -f "$WORK/bench.db" "$WORK/bench.db-wal" "$WORK/bench.db-shm"
        run 200 "$ENGINE" bench --backend "$BACKEND" --size "$BENCH_SIZE" --db "$WORK/bench.db" --csv "$OUT/bench.csv" >"$OUT/bench.txt" 2>&1
        [ -f "$WORK/bench.db" ] && dump "$WORK/bench.db" "$OUT/bench.sql"
        ;;
    runs-a | runs-b)
        db="$WORK/$step.db"
        rm -f "$db" "$db-wal" "$db-shm"
        : >"$OUT/$step.jsonl"
        while read -r m b p md; do
            c=$(cell_predict "$m" "$b" "$p" "$md")
            if [ $((SECONDS - start + ${c:-0} + 10)) -gt "$budget" ]; then
                echo "skipped (predicted $c s, $((budget - SECONDS + start)) s left): $m $b $p $md" >>"$log"
                continue
            fi
            echo "cell $m batch $b prompt $p $md: predicted ${c:-?} s" >>"$log"
            # a cell gets three times its prediction, so one slow cell cannot eat the step
            # shellcheck disable=SC2046
            run $((3 * ${c:-30} + 20)) "$ENGINE" run --backend "$BACKEND" $(cell_args "$m" "$b" "$p" "$md") --db "$db" --json \
                >>"$OUT/$step.jsonl" 2>>"$log"
        done <<<"$(cells "$step")"
        [ -f "$db" ] && dump "$db" "$OUT/$step.sql"
        ;;
    esac
    echo "step $step: took $((SECONDS - start)) s of ${pred:-?} s predicted" >>"$log"
    files=("$OUT/$step"[.-]*)
    echo "gpu-traces: $step took $((SECONDS - start)) s (predicted ${pred:-?} s); ${#files[@]} files in $OUT"
done
