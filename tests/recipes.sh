#!/usr/bin/env bash
# The two cluster recipes of experiments/README.md, run for real on a small experiment:
#   1. GNU parallel: shards run by `parallel`, merged with `kvpr merge`;
#   2. Slurm: a one-node controller and daemon (Debian's slurm-wlm, munge) started here, the
#      README's job array submitted with sbatch, merged the same way.
# Each merged database must hold exactly the result set of the unsharded run.
# A failing GNU parallel recipe fails the script. Slurm needs daemons a CI container may not be
# able to start; if it cannot start, the script says exactly which step failed and does not fail
# for that alone (a job array that ran but merged to a different result still fails).
# usage: tests/recipes.sh [BUILD_DIR]    (default build; `make test` builds kvpr there)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
kvpr="$root/${1:-build}/kvpr"
[ -x "$kvpr" ] || { echo "recipes: no $kvpr (build it first)" >&2; exit 1; }
command -v parallel >/dev/null || { echo "recipes: GNU parallel is missing (scripts/deps.sh installs it)" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "recipes: sqlite3 is missing" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kvpr-recipes-XXXXXX")
pids=()
cleanup() {
    # only what this script started, by pid
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

nshard=4
cat > recipe.exp <<'EOF'
# small enough for CI, large enough that every shard gets runs of both profiles
name     = recipe
models   = OPT-125M
hardware = t4 a100-40gb-pcie4
batch    = 2 4
prompt   = 32
gen      = 3
policies = offload kvpr
EOF

# a result set: (run_key, metric, value) of every run, sorted, and the number of spans
result_set() {
    sqlite3 "$1" "SELECT r.run_key, m.name, printf('%.17g', m.value) FROM runs r JOIN metrics m ON m.run_id = r.id ORDER BY 1, 2;
                  SELECT count(*) FROM runs; SELECT count(*) FROM spans;"
}

"$kvpr" run recipe.exp --db all.db --jobs 1 --no-report
result_set all.db > all.txt
nruns=$(sqlite3 all.db "SELECT count(*) FROM runs")
[ "$nruns" -gt 0 ] || { echo "recipes: the unsharded run wrote no runs" >&2; exit 1; }

# --- GNU parallel, as the README writes it (-S : is this host, without ssh)
mkdir par && cd par
parallel -S : --wd . "$kvpr" run ../recipe.exp --shard {}/$nshard --db shard-{}.db --jobs 1 ::: $(seq $nshard) >/dev/null
"$kvpr" merge results.db shard-*.db >/dev/null
result_set results.db > merged.txt
if ! cmp -s ../all.txt merged.txt; then
    echo "recipes: GNU parallel: the merged shards differ from the unsharded run:" >&2
    diff ../all.txt merged.txt | head -20 >&2
    exit 1
fi
cd ..
echo "recipes: GNU parallel: $nshard shards merged = the unsharded run ($nruns runs)"

# --- Slurm: every step that can fail for reasons of the machine reports itself and gives up
slurm_skip() {
    echo "recipes: Slurm: SKIPPED: $1" >&2
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 15 "$2" | sed 's/^/    /' >&2
    exit 0
}
for b in munged slurmctld slurmd sbatch sinfo; do
    command -v "$b" >/dev/null || slurm_skip "$b is not installed (scripts/deps.sh recipes installs slurm-wlm and munge)"
done
[ "$(id -u)" -eq 0 ] || slurm_skip "starting munged and slurmd needs root here"

host=$(hostname -s)
mkdir -p slurm/state slurm/spool slurm/munge
# munge: a private key and socket, so that nothing on the machine is touched
dd if=/dev/urandom of=slurm/munge/munge.key bs=1024 count=1 status=none
chmod 400 slurm/munge/munge.key
sock="$work/slurm/munge/munge.socket"
munged --force --foreground --key-file="$work/slurm/munge/munge.key" --socket="$sock" \
    --pid-file="$work/slurm/munge/munged.pid" --log-file="$work/slurm/munge/munged.log" --seed-file="$work/slurm/munge/seed" \
    >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || slurm_skip "munged did not start (no socket $sock)" slurm/munge/munged.log

# ports away from the defaults, so a Slurm already on the machine is left alone
port=$((20000 + $$ % 20000))
cat > slurm/slurm.conf <<EOF
ClusterName=kvprci
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/slurmctld.log
SlurmdLogFile=$work/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm/slurm.conf"
slurmctld -D -i >/dev/null 2>&1 &
pids+=($!)
slurmd -D >/dev/null 2>&1 &
pids+=($!)
up=""
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then up=1; break; fi
    sleep 0.5
done
if [ -z "$up" ]; then
    state=$(sinfo -h -o '%t %E' 2>&1 | head -3 || true)
    log=slurm/slurmd.log
    [ -s slurm/slurmctld.log ] && ! sinfo >/dev/null 2>&1 && log=slurm/slurmctld.log
    slurm_skip "the one-node cluster did not come up within 30 s (sinfo: ${state:-no answer})" "$log"
fi

# the README's job array, one shard per task
mkdir sl && cd sl
cat > job.sh <<EOF
#!/usr/bin/env bash
#SBATCH --array=1-$nshard
#SBATCH --output=$work/sl/job-%a.out
$kvpr run $work/recipe.exp --shard \${SLURM_ARRAY_TASK_ID}/$nshard --db shard-\${SLURM_ARRAY_TASK_ID}.db --jobs 1
EOF
if ! out=$(timeout 120 sbatch --wait --chdir="$work/sl" job.sh 2>&1); then
    # the array was accepted but its tasks failed: say which, with their output
    if ls job-*.out >/dev/null 2>&1; then
        echo "recipes: Slurm: the job array failed: $out" >&2
        tail -n 5 job-*.out >&2
        grep -qs 'kvpr:' job-*.out && exit 1 # kvpr itself failed: a real failure
    fi
    slurm_skip "sbatch --wait failed: $out" "$work/slurm/slurmd.log"
fi
"$kvpr" merge results.db shard-*.db >/dev/null
result_set results.db > merged.txt
if ! cmp -s ../all.txt merged.txt; then
    echo "recipes: Slurm: the merged shards differ from the unsharded run:" >&2
    diff ../all.txt merged.txt | head -20 >&2
    exit 1
fi
echo "recipes: Slurm: job array of $nshard tasks merged = the unsharded run ($nruns runs)"
