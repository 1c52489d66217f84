#!/usr/bin/env bash
# Runs every fuzz harness for a bounded time: run.sh BUILD_DIR SECONDS_EACH.
# Each harness starts from the shipped files of its format (and what earlier runs kept in
# BUILD_DIR/corpus); a crash, a leak or a broken invariant stops with the harness's report and the
# input under BUILD_DIR/artifacts. Prints the executions of each and the total.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1 secs=$2
declare -A seeds=(
    [exp]="experiments"
    [model]="tests/data"
    [profile]="hwmodel/profiles"
    [dump]="tests/fuzz/seeds/dump"
    [errmsg]="tests/fuzz/seeds/errmsg"
    [plan]="tests/fuzz/seeds/plan"
)
total=0
mkdir -p "$build/artifacts"
for name in exp model profile dump errmsg plan; do
    corpus="$build/corpus/$name"
    log="$build/fuzz-$name.log"
    mkdir -p "$corpus"
    if ! "$build/fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$name-" "$corpus" ${seeds[$name]} > "$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $name failed (log: $log, input: $build/artifacts/$name-*)" >&2
        exit 1
    fi
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    total=$((total + ${n:-0}))
    printf 'fuzz: %-8s %10s executions in %s s\n' "$name" "${n:-0}" "$secs"
done
printf 'fuzz: %-8s %10s executions\n' "total" "$total"
