/* db: SQLite results database. */
#include "db.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef KVPR_VERSION
#define KVPR_VERSION "unknown"
#endif
const char *kvpr_version(void) { return KVPR_VERSION; }

struct kv_db {
    sqlite3 *h;
    char path[512];
    int in_run;
    sqlite3_stmt *ins_span, *ins_metric;
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
        if ((st = db_exec(db, migrations[v])) || (st = db_exec(db, setv)) || (st = db_exec(db, "COMMIT"))) {
            db_exec(db, "ROLLBACK");
            return kv_errctx(st, "upgrading schema to version %d: ", v + 1);
        }
    }
    return KV_OK;
}

kv_status db_open(const char *path, int timeout_ms, kv_db **out) {
    return db_open_version(path, timeout_ms, DB_SCHEMA_VERSION, out);
}

kv_status db_open_version(const char *path, int timeout_ms, int version, kv_db **out) {
    if (version < 1 || version > DB_SCHEMA_VERSION)
        return kv_errorf(KV_EINVAL, "db_open_version: no schema version %d", version);
    kv_db *db = calloc(1, sizeof *db);
    if (!db) return kv_errorf(KV_ENOMEM, "db_open: out of memory");
    snprintf(db->path, sizeof db->path, "%s", path);
    int rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    kv_status st = KV_OK;
    if (rc != SQLITE_OK) {
        st = kv_errorf(KV_EDB, "cannot open results database %s: %s", path, db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
        goto err;
    }
    sqlite3_busy_timeout(db->h, timeout_ms);
    /* journal_mode=WAL also proves the file is a database: a non-database fails here. */
    if ((st = db_exec(db, "PRAGMA journal_mode=WAL")) || (st = db_exec(db, "PRAGMA foreign_keys=ON")) ||
        (st = db_exec(db, "PRAGMA synchronous=NORMAL")) || (st = upgrade(db, version)))
        goto err;
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

void db_close(kv_db *db) {
    if (!db) return;
    if (db->in_run) db_run_abort(db);
    sqlite3_finalize(db->ins_span);
    sqlite3_finalize(db->ins_metric);
    sqlite3_close(db->h);
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
    kv_status st = db_exec(db, "BEGIN IMMEDIATE");
    if (st) return st;
    db->in_run = 1;
    if (in->run_key) {
        sqlite3_stmt *d;
        if (sqlite3_prepare_v2(db->h, "DELETE FROM runs WHERE run_key=?", -1, &d, NULL) != SQLITE_OK)
            goto fail;
        sqlite3_bind_text(d, 1, in->run_key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(d);
        sqlite3_finalize(d);
        if (rc != SQLITE_DONE) goto fail;
    }
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h,
                           "INSERT INTO runs(kind,created,code_version,model,hardware,workload,plan,run_key)"
                           " VALUES(?,?,?,?,?,?,?,?)", -1, &s, NULL) != SQLITE_OK)
        goto fail;
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
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
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
    return KV_OK;
}

kv_status db_run_commit(kv_db *db) {
    if (!db->in_run) return kv_errorf(KV_EINVAL, "db_run_commit: no run is open");
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
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    db->in_run = 0;
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

kv_status db_merge(kv_db *db, const char *src) {
    kv_db *tmp;
    /* Open the shard once through db_open so that an old shard is upgraded first. */
    kv_status st = db_open(src, 5000, &tmp);
    if (st) return st;
    db_close(tmp);
    char *q = sqlite3_mprintf("ATTACH DATABASE %Q AS src", src);
    st = db_exec(db, q);
    sqlite3_free(q);
    if (st) return st;
    const char *sql =
        "BEGIN IMMEDIATE;"
        "DELETE FROM main.runs WHERE run_key IN (SELECT run_key FROM src.runs WHERE run_key IS NOT NULL);"
        "CREATE TEMP TABLE idmap AS SELECT id AS old, NULL AS new FROM src.runs;"
        "INSERT INTO main.runs(kind,created,code_version,model,hardware,workload,plan,run_key)"
        "  SELECT kind,created,code_version,model,hardware,workload,plan,run_key FROM src.runs ORDER BY id;"
        /* New ids are consecutive and in the same order as the old ones. */
        "UPDATE idmap SET new = (SELECT max(id) FROM main.runs) - (SELECT count(*) FROM src.runs)"
        "  + (SELECT count(*) FROM src.runs r WHERE r.id <= idmap.old);"
        "INSERT INTO main.spans SELECT m.new,s.step,s.layer,s.mb,s.op,s.resource,s.start_ps,s.end_ps,s.bytes,s.flops"
        "  FROM src.spans s JOIN idmap m ON m.old = s.run_id;"
        "INSERT INTO main.metrics SELECT m.new,x.name,x.value,x.unit FROM src.metrics x JOIN idmap m ON m.old = x.run_id;"
        "INSERT INTO main.measurements(created,device,kind,params,x,value,unit)"
        "  SELECT created,device,kind,params,x,value,unit FROM src.measurements;"
        "INSERT INTO main.calibrations(created,base_profile,source,profile,fit)"
        "  SELECT created,base_profile,source,profile,fit FROM src.calibrations;"
        "DROP TABLE temp.idmap;"
        "COMMIT;";
    st = db_exec(db, sql);
    if (st) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
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
