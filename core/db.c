/* db: SQLite results database. */
#include "db.h"
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "kv_io.h"

#ifndef KVPR_VERSION
#define KVPR_VERSION "unknown"
#endif
const char *kvpr_version(void) { return KVPR_VERSION; }

struct kv_db {
    sqlite3 *h;
    char path[512];
    int in_run;
    sqlite3_stmt *ins_span, *ins_metric, *ins_step;
    sqlite3_stmt *del_key, *ins_run; /* prepared once: preparing them per run was a tenth of a sweep */
    /* batched commits (db_batch): runs are savepoints inside one open transaction */
    int batch_max, in_batch, batch_n;
    struct timespec batch_t0;
};

/* Migration i takes the schema from version i to i+1. Never edit a shipped migration:
 * add a new one, so that every older database upgrades along the same path. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE runs("
    "  id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK(kind IN ('sim','engine')),"
    "  created TEXT NOT NULL, code_version TEXT NOT NULL, model TEXT NOT NULL, hardware TEXT NOT NULL,"
    "  workload TEXT NOT NULL, plan TEXT NOT NULL);"
    "CREATE TABLE spans("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  step INTEGER NOT NULL, layer INTEGER NOT NULL, mb INTEGER NOT NULL, op TEXT NOT NULL,"
    "  resource TEXT NOT NULL, start_ps INTEGER NOT NULL, end_ps INTEGER NOT NULL,"
    "  bytes REAL NOT NULL DEFAULT 0, flops REAL NOT NULL DEFAULT 0, CHECK(end_ps >= start_ps));"
    "CREATE TABLE metrics("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,"
    "  value REAL, unit TEXT, PRIMARY KEY(run_id, name));"
    "CREATE TABLE measurements("
    "  id INTEGER PRIMARY KEY, created TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,"
    "  params TEXT NOT NULL, x REAL, value REAL NOT NULL, unit TEXT NOT NULL);"
    "CREATE TABLE calibrations("
    "  id INTEGER PRIMARY KEY, created TEXT NOT NULL, base_profile TEXT NOT NULL, source TEXT NOT NULL,"
    "  profile TEXT NOT NULL, fit TEXT NOT NULL);",
    /* 1 -> 2: run keys (idempotent reruns of a sweep) and the join index of prediction vs measurement */
    "ALTER TABLE runs ADD COLUMN run_key TEXT;"
    "CREATE UNIQUE INDEX runs_key ON runs(run_key) WHERE run_key IS NOT NULL;"
    "CREATE INDEX spans_join ON spans(run_id, step, layer, mb, op);"
    "CREATE INDEX measurements_kind ON measurements(device, kind);",
    /* 2 -> 3: the scheduler that chose a run's split as a column of runs, so that analyses need
     * not parse it out of run keys (an experiment's keys end in it; '-' for policies without a
     * split). A column, not a table: `sqlite3 .dump` of a results database must stay replayable
     * by readers that admit only kvpr's tables (compare and calibrate --from F.sql). */
    "ALTER TABLE runs ADD COLUMN scheduler TEXT;"
    "UPDATE runs SET scheduler = NULLIF(replace(run_key, rtrim(run_key, replace(run_key, '/', '')), ''), '-')"
    "  WHERE run_key GLOB 'exp/*';",
    /* 3 -> 4: per-step times as one table (run_id, step, seconds) for analyses that go straight to
     * pandas or a spreadsheet; filled from the step_N_s metrics every run also keeps. */
    "CREATE TABLE steps("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step INTEGER NOT NULL,"
    "  seconds REAL NOT NULL, PRIMARY KEY(run_id, step));"
    "INSERT INTO steps SELECT run_id, CAST(substr(name, 6, length(name) - 7) AS INTEGER), value FROM metrics"
    "  WHERE name GLOB 'step_[0-9]*_s' AND value IS NOT NULL;",
};

static kv_status dberr(kv_db *db, int rc, const char *what) {
    const char *m = db && db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return kv_errorf(KV_EDB, "%s: database %s is locked by another process (%s)", what, db ? db->path : "", m);
    return kv_errorf(KV_EDB, "%s: %s (%s)", what, m, db ? db->path : "");
}

kv_status db_exec(kv_db *db, const char *sql) {
    char *em = NULL;
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, &em);
    if (rc != SQLITE_OK) {
        kv_status st = rc == SQLITE_BUSY ? dberr(db, rc, "sql") : kv_errorf(KV_EDB, "sql: %s (%s)", em ? em : sqlite3_errstr(rc), db->path);
        sqlite3_free(em);
        return st;
    }
    return KV_OK;
}

int db_schema_version(kv_db *db) {
    sqlite3_stmt *s;
    int v = -1;
    if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
    }
    return v;
}

static int pragma_int(kv_db *db, const char *sql, int *v);
static kv_status upgrade(kv_db *db, int target) {
    int v = db_schema_version(db);
    if (v < 0) return dberr(db, SQLITE_ERROR, "reading schema version");
    if (v > DB_SCHEMA_VERSION)
        return kv_errorf(KV_EDB, "%s has schema version %d, newer than this kvpr (%d): upgrade kvpr", db->path, v,
                         DB_SCHEMA_VERSION);
    for (; v < target; v++) {
        char setv[64];
        snprintf(setv, sizeof setv, "PRAGMA user_version=%d;", v + 1);
        kv_status st;
        if ((st = db_exec(db, "BEGIN IMMEDIATE"))) return st;
        /* Re-read inside the lock: another process may have upgraded meanwhile. */
        if (db_schema_version(db) != v) {
            db_exec(db, "ROLLBACK");
            v = db_schema_version(db) - 1;
            continue;
        }
        /* A text dump carries no user_version: whoever replays one infers the version from its
         * tables, and a version-3 dump looks like version 2 to a reader that predates 3. Its
         * tables are already there, so only the version number is missing. */
        int have = 0;
        if (v == 2) pragma_int(db, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'scheduler'", &have);
        if (v == 3) pragma_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'steps'", &have);
        const char *mig = have ? "SELECT 1" : migrations[v];
        if ((st = db_exec(db, mig)) || (st = db_exec(db, setv)) || (st = db_exec(db, "COMMIT"))) {
            db_exec(db, "ROLLBACK");
            return kv_errctx(st, "upgrading schema to version %d: ", v + 1);
        }
    }
    return KV_OK;
}

kv_status db_timeout_from_env(int def, int *ms) {
    const char *e = getenv("KVPR_DB_TIMEOUT_MS");
    *ms = def;
    if (!e || !*e) return KV_OK;
    char *end;
    errno = 0;
    long v = strtol(e, &end, 10);
    if (*end || errno || v < 0 || v > 3600000)
        return kv_errorf(KV_EINVAL, "KVPR_DB_TIMEOUT_MS must be an integer in [0, 3600000], got '%s'", e);
    *ms = (int)v;
    return KV_OK;
}

static int pragma_int(kv_db *db, const char *sql, int *v) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db->h, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int(s, 0), rc = SQLITE_OK;
    sqlite3_finalize(s);
    return rc;
}

/* Is this kvpr's database? Read before anything is written, so that a wrong file given as --db
 * is refused untouched (not converted: WAL, kvpr's tables and user_version added). */
static kv_status identify(kv_db *db) {
    int app = 0, uv = 0, nobj = 0, legacy = 0, rc;
    if ((rc = pragma_int(db, "PRAGMA application_id", &app)) || (rc = pragma_int(db, "PRAGMA user_version", &uv)) ||
        (rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &nobj)) ||
        (rc = pragma_int(db, "SELECT count(*) FROM pragma_table_info('runs') WHERE name IN ('code_version', 'workload')", &legacy)))
        return rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? dberr(db, rc, "opening")
                                                          : kv_errorf(KV_EDB, "%s: %s", db->path, sqlite3_errmsg(db->h));
    if (app == DB_APPLICATION_ID || (app == 0 && nobj == 0)) return KV_OK;
    if (app == 0 && uv >= 1 && legacy == 2) return KV_OK; /* made by a kvpr before application ids */
    if (app != 0)
        return kv_errorf(KV_EINVAL, "%s is not a kvpr results database (application id 0x%08x): refusing to use it", db->path,
                         (unsigned)app);
    return kv_errorf(KV_EINVAL, "%s is not a kvpr results database (it holds %d other schema objects): refusing to use it",
                     db->path, nobj);
}

/* PRAGMA quick_check: a damaged file is reported before anything reads from or writes into it. */
static kv_status check(kv_db *db) {
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(db->h, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    const char *r = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
    kv_status st = KV_OK;
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) st = dberr(db, rc, "checking");
    else if (!r || strcmp(r, "ok") != 0)
        st = kv_errorf(KV_EDB, "%s is damaged (quick_check: %s): restore it from a copy or move it away", db->path,
                       r ? r : sqlite3_errmsg(db->h));
    sqlite3_finalize(s);
    return st;
}

/* Settings of every connection: nothing in a database file may run code or reach other files. */
static void harden(sqlite3 *h) {
    sqlite3_db_config(h, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_VIEW, 0, (int *)NULL);
    sqlite3_exec(h, "PRAGMA cell_size_check=ON", NULL, NULL, NULL);
}

kv_status db_open(const char *path, int timeout_ms, kv_db **out) {
    return db_open_version(path, timeout_ms, DB_SCHEMA_VERSION, out);
}

kv_status db_open_version(const char *path, int timeout_ms, int version, kv_db **out) {
    if (version < 1 || version > DB_SCHEMA_VERSION)
        return kv_errorf(KV_EINVAL, "db_open_version: no schema version %d", version);
    kv_status st = kv_io_check_output(path); /* a directory, a FIFO, a missing directory: bad input */
    if (st) return st;
    kv_db *db = calloc(1, sizeof *db);
    if (!db) return kv_errorf(KV_ENOMEM, "db_open: out of memory");
    snprintf(db->path, sizeof db->path, "%s", path);
    int rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        st = kv_errorf(KV_EDB, "cannot open results database %s: %s", path, db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
        goto err;
    }
    sqlite3_busy_timeout(db->h, timeout_ms);
    harden(db->h);
    if ((st = identify(db)) || (st = check(db))) goto err;
    if ((st = db_exec(db, "PRAGMA journal_mode=WAL")) || (st = db_exec(db, "PRAGMA foreign_keys=ON")) ||
        (st = db_exec(db, "PRAGMA synchronous=NORMAL")) || (st = upgrade(db, version)))
        goto err;
    int app = 0;
    if (pragma_int(db, "PRAGMA application_id", &app) == SQLITE_OK && app != DB_APPLICATION_ID) {
        char q[64];
        snprintf(q, sizeof q, "PRAGMA application_id=%d", DB_APPLICATION_ID);
        if ((st = db_exec(db, q))) goto err;
    }
    if (version < DB_SCHEMA_VERSION) { /* old schemas only serve upgrade tests */
        *out = db;
        return KV_OK;
    }
    rc = sqlite3_prepare_v2(db->h,
                            "INSERT INTO spans(run_id,step,layer,mb,op,resource,start_ps,end_ps,bytes,flops)"
                            " VALUES(?,?,?,?,?,?,?,?,?,?)", -1, &db->ins_span, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db->h, "INSERT OR REPLACE INTO metrics(run_id,name,value,unit) VALUES(?,?,?,?)", -1,
                                &db->ins_metric, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db->h, "INSERT OR REPLACE INTO steps(run_id,step,seconds) VALUES(?,?,?)", -1, &db->ins_step, NULL);
    if (rc != SQLITE_OK) {
        st = dberr(db, rc, "preparing statements");
        goto err;
    }
    *out = db;
    return KV_OK;
err:
    db_close(db);
    return st;
}

/* "file:" URI of a path, for SQLite's immutable mode. */
static char *file_uri(const char *path) {
    size_t n = strlen(path);
    char *u = malloc(3 * n + 32);
    if (!u) return NULL;
    size_t o = (size_t)sprintf(u, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++)
        o += (size_t)(*c == '%' || *c == '?' || *c == '#' || *c < 0x20 ? sprintf(u + o, "%%%02X", *c) : sprintf(u + o, "%c", *c));
    sprintf(u + o, "?immutable=1");
    return u;
}

kv_status db_open_ro(const char *path, int timeout_ms, kv_db **out) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return kv_errorf(KV_ENOTFOUND, "no results database %s", path);
        return kv_errorf(KV_EINVAL, "cannot read %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return kv_errorf(KV_EINVAL, "cannot read %s: not a regular file", path);
    kv_db *db = calloc(1, sizeof *db);
    if (!db) return kv_errorf(KV_ENOMEM, "db_open: out of memory");
    snprintf(db->path, sizeof db->path, "%s", path);
    kv_status st = KV_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *uri = attempt ? file_uri(path) : NULL;
        if (attempt && !uri) {
            st = kv_errorf(KV_ENOMEM, "db_open: out of memory");
            break;
        }
        int rc = sqlite3_open_v2(attempt ? uri : path, &db->h, SQLITE_OPEN_READONLY | (attempt ? SQLITE_OPEN_URI : 0), NULL);
        free(uri);
        if (rc == SQLITE_OK) {
            sqlite3_busy_timeout(db->h, timeout_ms);
            harden(db->h);
            int app;
            rc = pragma_int(db, "PRAGMA application_id", &app);
        }
        /* A WAL database needs its -shm file; where the directory or the file is read-only and
         * none exists, SQLite cannot read it. Nobody can be writing it then either (the same
         * permissions stop them), so it is read as immutable. */
        if (!attempt && (rc == SQLITE_READONLY || rc == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_READONLY)) {
            sqlite3_close(db->h);
            db->h = NULL;
            continue;
        }
        if (rc != SQLITE_OK) st = kv_errorf(KV_EDB, "cannot read results database %s: %s", path, db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
        break;
    }
    if (!st) st = identify(db);
    if (!st) st = check(db);
    if (!st) {
        int v = db_schema_version(db);
        if (v > DB_SCHEMA_VERSION)
            st = kv_errorf(KV_EDB, "%s has schema version %d, newer than this kvpr (%d): upgrade kvpr", path, v, DB_SCHEMA_VERSION);
        else if (v < DB_SCHEMA_VERSION)
            st = kv_errorf(KV_EDB, "%s has schema version %d: a kvpr command that writes to it (kvpr run, kvpr sim --db) upgrades it",
                           path, v);
    }
    if (st) {
        db_close(db);
        return st;
    }
    *out = db;
    return KV_OK;
}

kv_status db_mkstemp(char *path, size_t n, const char *stem) {
    /* $TMPDIR as POSIX and every shell tool read it: a user who points it at a private or larger
     * disk expects temporary databases there, not in /tmp */
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    int len = snprintf(path, n, "%s/%s-XXXXXX", dir, stem);
    if (len < 0 || (size_t)len >= n) return kv_errorf(KV_EINVAL, "temporary directory path too long: %s", dir);
    int fd = mkstemp(path);
    if (fd < 0) return kv_errorf(KV_EIO, "cannot create a temporary file in %s (%s)", dir, strerror(errno));
    close(fd);
    return KV_OK;
}

void db_close(kv_db *db) {
    if (!db) return;
    if (db->in_run) db_run_abort(db);
    db_flush(db);
    sqlite3_finalize(db->ins_span);
    sqlite3_finalize(db->ins_metric);
    sqlite3_finalize(db->ins_step);
    sqlite3_finalize(db->del_key);
    sqlite3_finalize(db->ins_run);
    /* A database whose file was removed while open (a temporary copy, e.g. of a .sql dump that
     * compare and calibrate replay) can never be opened again: its -wal and -shm files would
     * only pile up in the temporary directory, so they go with the last handle. */
    struct stat sb;
    int gone = db->path[0] && db->path[0] != ':' && stat(db->path, &sb) != 0 && errno == ENOENT;
    sqlite3_close(db->h);
    if (gone) {
        char side[600];
        snprintf(side, sizeof side, "%s-wal", db->path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", db->path);
        unlink(side);
    }
    free(db);
}

struct sqlite3 *db_handle(kv_db *db) { return db->h; }

static void now_iso(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

kv_status db_run_begin(kv_db *db, const db_run_info *in, int64_t *run_id) {
    if (db->in_run) return kv_errorf(KV_EINVAL, "db_run_begin: a run is already open");
    if (!in->kind || (strcmp(in->kind, "sim") != 0 && strcmp(in->kind, "engine") != 0))
        return kv_errorf(KV_EINVAL, "db_run_begin: kind must be 'sim' or 'engine'");
    kv_status st;
    if (db->batch_max > 1) {
        /* one transaction for the batch, a savepoint per run inside it */
        if (!db->in_batch) {
            if ((st = db_exec(db, "BEGIN IMMEDIATE"))) return st;
            db->in_batch = 1, db->batch_n = 0;
            clock_gettime(CLOCK_MONOTONIC, &db->batch_t0);
        }
        st = db_exec(db, "SAVEPOINT kvpr_run");
    } else {
        st = db_exec(db, "BEGIN IMMEDIATE");
    }
    if (st) return st;
    db->in_run = 1;
    if (in->run_key) {
        if (!db->del_key && sqlite3_prepare_v2(db->h, "DELETE FROM runs WHERE run_key=?", -1, &db->del_key, NULL) != SQLITE_OK)
            goto fail;
        sqlite3_stmt *d = db->del_key;
        sqlite3_reset(d);
        sqlite3_bind_text(d, 1, in->run_key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(d);
        sqlite3_reset(d);
        sqlite3_clear_bindings(d);
        if (rc != SQLITE_DONE) goto fail;
    }
    if (!db->ins_run && sqlite3_prepare_v2(db->h,
                                           "INSERT INTO runs(kind,created,code_version,model,hardware,workload,plan,run_key,scheduler)"
                                           " VALUES(?,?,?,?,?,?,?,?,?)", -1, &db->ins_run, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_stmt *s = db->ins_run;
    sqlite3_reset(s);
    char ts[32];
    now_iso(ts, sizeof ts);
    sqlite3_bind_text(s, 1, in->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ts, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, kvpr_version(), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, in->model ? in->model : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, in->hardware ? in->hardware : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, in->workload ? in->workload : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, in->plan ? in->plan : "{}", -1, SQLITE_STATIC);
    if (in->run_key) sqlite3_bind_text(s, 8, in->run_key, -1, SQLITE_STATIC);
    else sqlite3_bind_null(s, 8);
    /* an experiment's run key ends in its scheduler ('-' for policies without a split) */
    const char *sched = in->scheduler;
    char last[64] = "";
    if (!sched && in->run_key && !strncmp(in->run_key, "exp/", 4)) {
        const char *sl = strrchr(in->run_key, '/');
        snprintf(last, sizeof last, "%s", sl + 1);
        if (last[0] && strcmp(last, "-") != 0) sched = last;
    }
    if (sched) sqlite3_bind_text(s, 9, sched, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(s, 9);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s); /* the bound strings are the caller's */
    if (rc != SQLITE_DONE) goto fail;
    *run_id = sqlite3_last_insert_rowid(db->h);
    return KV_OK;
fail:
    st = dberr(db, sqlite3_errcode(db->h), "inserting run");
    db_run_abort(db);
    return st;
}

kv_status db_run_span(kv_db *db, int64_t run_id, const kv_span *sp) {
    if (!db->in_run) return kv_errorf(KV_EINVAL, "db_run_span: no run is open");
    sqlite3_stmt *s = db->ins_span;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int(s, 2, sp->step);
    sqlite3_bind_int(s, 3, sp->layer);
    sqlite3_bind_int(s, 4, sp->mb);
    sqlite3_bind_text(s, 5, sp->op, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, sp->resource, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, sp->start_ps);
    sqlite3_bind_int64(s, 8, sp->end_ps);
    sqlite3_bind_double(s, 9, sp->bytes);
    sqlite3_bind_double(s, 10, sp->flops);
    if (sqlite3_step(s) != SQLITE_DONE) return dberr(db, sqlite3_errcode(db->h), "inserting span");
    return KV_OK;
}

kv_status db_run_metric(kv_db *db, int64_t run_id, const char *name, double value, const char *unit) {
    if (!db->in_run) return kv_errorf(KV_EINVAL, "db_run_metric: no run is open");
    sqlite3_stmt *s = db->ins_metric;
    sqlite3_reset(s);
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, value);
    sqlite3_bind_text(s, 4, unit ? unit : "", -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) return dberr(db, sqlite3_errcode(db->h), "inserting metric");
    /* a step's time also goes to the steps table (the metric stays for existing queries) */
    int step;
    char tail;
    if (sscanf(name, "step_%d_s%c", &step, &tail) == 1 && step >= 0 && !strncmp(name, "step_", 5)) {
        char back[32];
        snprintf(back, sizeof back, "step_%d_s", step);
        if (!strcmp(back, name)) {
            s = db->ins_step;
            sqlite3_reset(s);
            sqlite3_bind_int64(s, 1, run_id);
            sqlite3_bind_int(s, 2, step);
            sqlite3_bind_double(s, 3, value);
            if (sqlite3_step(s) != SQLITE_DONE) return dberr(db, sqlite3_errcode(db->h), "inserting step time");
        }
    }
    return KV_OK;
}

kv_status db_run_commit(kv_db *db) {
    if (!db->in_run) return kv_errorf(KV_EINVAL, "db_run_commit: no run is open");
    if (db->in_batch) {
        kv_status st = db_exec(db, "RELEASE kvpr_run");
        if (st) {
            db_run_abort(db);
            return st;
        }
        db->in_run = 0;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double age = (double)(now.tv_sec - db->batch_t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - db->batch_t0.tv_nsec);
        /* a batch also ends after a while: readers see progress, a kill loses little */
        if (++db->batch_n >= db->batch_max || age > 1.0) return db_flush(db);
        return KV_OK;
    }
    kv_status st = db_exec(db, "COMMIT");
    if (st) {
        db_run_abort(db);
        return st;
    }
    db->in_run = 0;
    return KV_OK;
}

void db_run_abort(kv_db *db) {
    if (!db->in_run) return;
    if (db->in_batch) {
        /* only this run's rows go; the batch's committed runs stay */
        if (sqlite3_exec(db->h, "ROLLBACK TO kvpr_run; RELEASE kvpr_run", NULL, NULL, NULL) != SQLITE_OK &&
            sqlite3_get_autocommit(db->h))
            db->in_batch = 0; /* SQLite rolled the whole transaction back (e.g. disk full) */
    } else {
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    }
    db->in_run = 0;
}

void db_batch(kv_db *db, int max_runs) {
    db->batch_max = max_runs > 1 ? max_runs : 0;
    /* a run's savepoint journal in memory: on a file it spilled to a temporary file, page by page
     * (ten times the writes of committing every run) */
    if (db->batch_max) sqlite3_exec(db->h, "PRAGMA temp_store=MEMORY", NULL, NULL, NULL);
}

kv_status db_flush(kv_db *db) {
    if (!db || !db->in_batch || db->in_run) return KV_OK;
    db->in_batch = 0;
    kv_status st = db_exec(db, "COMMIT");
    if (st) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

kv_status db_measurement(kv_db *db, const char *device, const char *kind, const char *params, double x, double value,
                         const char *unit) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h,
                           "INSERT INTO measurements(created,device,kind,params,x,value,unit) VALUES(?,?,?,?,?,?,?)",
                           -1, &s, NULL) != SQLITE_OK)
        return dberr(db, sqlite3_errcode(db->h), "inserting measurement");
    char ts[32];
    now_iso(ts, sizeof ts);
    sqlite3_bind_text(s, 1, ts, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, params ? params : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 5, x);
    sqlite3_bind_double(s, 6, value);
    sqlite3_bind_text(s, 7, unit, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? KV_OK : dberr(db, rc, "inserting measurement");
}

kv_status db_calibration(kv_db *db, const char *base, const char *source, const char *profile, const char *fit,
                         int64_t *id) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h,
                           "INSERT INTO calibrations(created,base_profile,source,profile,fit) VALUES(?,?,?,?,?)", -1,
                           &s, NULL) != SQLITE_OK)
        return dberr(db, sqlite3_errcode(db->h), "inserting calibration");
    char ts[32];
    now_iso(ts, sizeof ts);
    sqlite3_bind_text(s, 1, ts, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, base, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, profile, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, fit, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return dberr(db, rc, "inserting calibration");
    if (id) *id = sqlite3_last_insert_rowid(db->h);
    return KV_OK;
}

static kv_status merge_runs(kv_db *db) {
    /* keyless runs already here, indexed, so that each shard run is looked up once */
    kv_status st = db_exec(db,
                           "CREATE TEMP TABLE seen AS SELECT kind,created,code_version,model,hardware,workload,plan FROM main.runs"
                           "  WHERE run_key IS NULL;"
                           "CREATE INDEX temp.seen_i ON seen(created, model, hardware);"
                           "CREATE TEMP TABLE idmap(old INTEGER PRIMARY KEY, new INTEGER NOT NULL);");
    if (st) return st;
    sqlite3_stmt *q = NULL, *dup = NULL, *ins = NULL, *map = NULL;
    int rc = sqlite3_prepare_v2(db->h, "SELECT id,kind,created,code_version,model,hardware,workload,plan,run_key,scheduler FROM src.runs ORDER BY id",
                                -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db->h,
                                "SELECT 1 FROM temp.seen WHERE kind IS ?1 AND created IS ?2 AND code_version IS ?3 AND model IS ?4"
                                " AND hardware IS ?5 AND workload IS ?6 AND plan IS ?7",
                                -1, &dup, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db->h,
                                "INSERT INTO main.runs(kind,created,code_version,model,hardware,workload,plan,run_key,scheduler)"
                                " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)", -1, &ins, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db->h, "INSERT INTO temp.idmap(old,new) VALUES(?,?)", -1, &map, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        int keyed = sqlite3_column_type(q, 8) != SQLITE_NULL;
        if (!keyed) {
            sqlite3_reset(dup);
            for (int i = 1; i <= 7; i++) sqlite3_bind_value(dup, i, sqlite3_column_value(q, i));
            int d = sqlite3_step(dup);
            if (d == SQLITE_ROW) continue; /* merged before */
            if (d != SQLITE_DONE) {
                rc = d;
                break;
            }
        }
        sqlite3_reset(ins);
        for (int i = 1; i <= 9; i++) sqlite3_bind_value(ins, i, sqlite3_column_value(q, i));
        if ((rc = sqlite3_step(ins)) != SQLITE_DONE) break;
        sqlite3_reset(map);
        sqlite3_bind_int64(map, 1, sqlite3_column_int64(q, 0));
        sqlite3_bind_int64(map, 2, sqlite3_last_insert_rowid(db->h));
        if ((rc = sqlite3_step(map)) != SQLITE_DONE) break;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK) st = dberr(db, rc, "copying runs");
    sqlite3_finalize(q), sqlite3_finalize(dup), sqlite3_finalize(ins), sqlite3_finalize(map);
    return st;
}

kv_status db_merge(kv_db *db, const char *src) {
    struct stat a, b;
    if (stat(src, &b) != 0) return kv_errorf(KV_ENOTFOUND, "no shard database %s", src);
    if (stat(db->path, &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return kv_errorf(KV_EINVAL, "cannot merge %s into itself", src);
    kv_db *tmp;
    /* Open the shard once through db_open so that an old shard is upgraded first, and one that
     * is damaged or not kvpr's is refused. */
    kv_status st = db_flush(db);
    if (st) return st;
    if ((st = db_open(src, 5000, &tmp))) return st;
    db_close(tmp);
    char *q = sqlite3_mprintf("ATTACH DATABASE %Q AS src", src);
    st = db_exec(db, q);
    sqlite3_free(q);
    if (st) return st;
    st = db_exec(db, "BEGIN IMMEDIATE;"
                     "DELETE FROM main.runs WHERE run_key IN (SELECT run_key FROM src.runs WHERE run_key IS NOT NULL);");
    if (!st) st = merge_runs(db);
    if (!st)
        st = db_exec(db,
                     "INSERT INTO main.spans SELECT m.new,s.step,s.layer,s.mb,s.op,s.resource,s.start_ps,s.end_ps,s.bytes,s.flops"
                     "  FROM src.spans s JOIN temp.idmap m ON m.old = s.run_id;"
                     "INSERT INTO main.metrics SELECT m.new,x.name,x.value,x.unit FROM src.metrics x JOIN temp.idmap m ON m.old = x.run_id;"
                     "INSERT INTO main.steps SELECT m.new,x.step,x.seconds FROM src.steps x JOIN temp.idmap m ON m.old = x.run_id;"
                     /* measurements and calibrations carry no key: rows already here are not copied again */
                     "INSERT INTO main.measurements(created,device,kind,params,x,value,unit)"
                     "  SELECT created,device,kind,params,x,value,unit FROM src.measurements s WHERE NOT EXISTS (SELECT 1 FROM"
                     "  main.measurements m WHERE m.device IS s.device AND m.kind IS s.kind AND m.created IS s.created AND"
                     "  m.params IS s.params AND m.x IS s.x AND m.value IS s.value AND m.unit IS s.unit);"
                     "INSERT INTO main.calibrations(created,base_profile,source,profile,fit)"
                     "  SELECT created,base_profile,source,profile,fit FROM src.calibrations s WHERE NOT EXISTS (SELECT 1 FROM"
                     "  main.calibrations c WHERE c.created IS s.created AND c.base_profile IS s.base_profile AND"
                     "  c.source IS s.source AND c.profile IS s.profile AND c.fit IS s.fit);"
                     "COMMIT;");
    if (st) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(db->h, "DROP TABLE IF EXISTS temp.idmap; DROP TABLE IF EXISTS temp.seen;", NULL, NULL, NULL);
    sqlite3_exec(db->h, "DETACH DATABASE src", NULL, NULL, NULL);
    if (st) return kv_errctx(st, "merging %s: ", src);
    return KV_OK;
}

kv_status db_metric_add(kv_db *db, int64_t run_id, const char *name, double value, const char *unit) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h, "INSERT OR REPLACE INTO metrics(run_id,name,value,unit) VALUES(?,?,?,?)", -1, &s, NULL) != SQLITE_OK)
        return dberr(db, sqlite3_errcode(db->h), "adding metric");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, value);
    sqlite3_bind_text(s, 4, unit ? unit : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? KV_OK : dberr(db, rc, "adding metric");
}
