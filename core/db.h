/* db: the results database (SQLite). Runs, their timelines (spans), metrics,
 * micro-benchmark measurements and calibrations. One transaction per run, WAL mode and a
 * busy timeout, so a run killed midway leaves nothing behind and never damages earlier runs. */
#ifndef KV_DB_H
#define KV_DB_H

#include <stddef.h>
#include <stdint.h>
#include "kv_err.h"

#define DB_SCHEMA_VERSION 4
#define DB_DEFAULT_PATH "results.db"
/* PRAGMA application_id of a kvpr database ("KVPR"): kvpr writes only into an empty database,
 * one with this id, or one that an older kvpr made (its tables, application_id 0). */
#define DB_APPLICATION_ID 0x4b565052

typedef struct kv_db kv_db;
struct sqlite3;

/* One span of a timeline; simulator and engine write the same names so that measured and
 * simulated runs join on (step, layer, mb, op). Times in integer picoseconds. */
typedef struct {
    int step, layer, mb;
    const char *op;       /* "kv_h2d", "act_h2d", "recompute", "attn", ... */
    const char *resource; /* "h2d", "d2h", "gpu", "cpu" */
    int64_t start_ps, end_ps;
    double bytes, flops;
} kv_span;

typedef struct {
    const char *kind;     /* "sim" or "engine" */
    const char *model, *hardware;
    const char *workload; /* JSON */
    const char *plan;     /* JSON */
    const char *run_key;  /* optional: identifies a configuration, so reruns replace, not add */
    const char *scheduler; /* optional: how the split was chosen; NULL takes it from an exp/ run key */
} db_run_info;

/* Opens for writing (creating or upgrading the schema); timeout_ms bounds the wait for a lock.
 * Refuses (KV_EINVAL) a path that is a directory or lies in a missing directory, and a database
 * that is neither empty nor kvpr's; refuses (KV_EDB) one that PRAGMA quick_check finds damaged. */
kv_status db_open(const char *path, int timeout_ms, kv_db **out);
/* Opens an existing kvpr database for reading only: works on a read-only file or directory;
 * KV_ENOTFOUND if there is none. */
kv_status db_open_ro(const char *path, int timeout_ms, kv_db **out);
/* The lock timeout: $KVPR_DB_TIMEOUT_MS if set (an integer in [0, 3600000], else KV_EINVAL),
 * else def. */
kv_status db_timeout_from_env(int def, int *ms);
/* Opens at an older schema version (upgrade tests); statements that need the newest schema fail. */
kv_status db_open_version(const char *path, int timeout_ms, int version, kv_db **out);
void db_close(kv_db *db);
/* Creates an empty temporary file $TMPDIR/STEM-XXXXXX (/tmp when TMPDIR is unset or empty) for a
 * temporary database and puts its path in path. Open it with db_open, then unlink it: db_close
 * removes the -wal and -shm files of a database whose file is gone. */
kv_status db_mkstemp(char *path, size_t n, const char *stem);
struct sqlite3 *db_handle(kv_db *db);
int db_schema_version(kv_db *db);

/* A run: begin (opens the transaction and inserts the run row, replacing any run with the
 * same run_key), add spans and metrics, commit. Abort or a crash before commit leaves no rows. */
kv_status db_run_begin(kv_db *db, const db_run_info *info, int64_t *run_id);
kv_status db_run_span(kv_db *db, int64_t run_id, const kv_span *s);
kv_status db_run_metric(kv_db *db, int64_t run_id, const char *name, double value, const char *unit);
kv_status db_run_commit(kv_db *db);
void db_run_abort(kv_db *db);
/* Batched commits: from now on runs are committed together, up to max_runs runs (or about a
 * second's worth) per transaction, each run inside it a savepoint (abort drops that run's rows
 * only). The guarantee becomes "a killed process loses the runs of its open batch and leaves no
 * partial run": a batch commits whole or not at all. db_flush commits the open batch (db_close,
 * db_merge do it first); max_runs <= 1 is one transaction per run (the default). */
void db_batch(kv_db *db, int max_runs);
kv_status db_flush(kv_db *db);

/* A metric added to a committed run (its own transaction): derived results such as comparisons. */
kv_status db_metric_add(kv_db *db, int64_t run_id, const char *name, double value, const char *unit);

/* A micro-benchmark measurement (engine bench); its own transaction unless a run is open. */
kv_status db_measurement(kv_db *db, const char *device, const char *kind, const char *params_json, double x,
                         double value, const char *unit);
kv_status db_calibration(kv_db *db, const char *base_profile, const char *source, const char *profile_json,
                         const char *fit_json, int64_t *id);

/* Executes SQL with no result rows (schema tools, tests). */
kv_status db_exec(kv_db *db, const char *sql);
/* Copies every run (with spans and metrics), measurement and calibration of `src_path` into db,
 * one transaction: merging shards of a sweep. Runs with a run_key already present are replaced;
 * rows without a key that db already holds (same values in every column) are not copied again,
 * so merging a shard twice changes nothing. A shard cannot be merged into itself (KV_EINVAL). */
kv_status db_merge(kv_db *db, const char *src_path);

const char *kvpr_version(void);

#endif
