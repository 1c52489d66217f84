/* Results database: schema and upgrade path, one transaction per run, a run killed midway
 * leaves no rows and no damage, a locked database gives a clear error, shards merge. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../core/db.h"
#include "tests.h"

static int64_t count(kv_db *db, const char *sql) {
    sqlite3_stmt *s;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL) != SQLITE_OK) fail_msg("%s", sqlite3_errmsg(db_handle(db)));
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

static void path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmp_dir(), name);
    unlink(buf);
}

static kv_status add_run(kv_db *db, const char *key, int nspans) {
    db_run_info in = {.kind = "sim", .model = "OPT-6.7B", .hardware = "paper-a100", .workload = "{\"batch\":64}",
                      .plan = "{\"policy\":\"kvpr\"}", .run_key = key};
    int64_t id;
    kv_status st = db_run_begin(db, &in, &id);
    if (st) return st;
    for (int i = 0; i < nspans; i++) {
        kv_span sp = {.step = i / 32, .layer = i % 32, .mb = 0, .op = "kv_h2d", .resource = "h2d",
                      .start_ps = i * 1000, .end_ps = i * 1000 + 900, .bytes = 4096, .flops = 0};
        if ((st = db_run_span(db, id, &sp))) return st;
    }
    if ((st = db_run_metric(db, id, "decode_time", 1.5, "s"))) return st;
    return db_run_commit(db);
}

static void t_schema_and_run(void **s) {
    (void)s;
    char p[512];
    path(p, sizeof p, "a.db");
    kv_db *db;
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_schema_version(db), DB_SCHEMA_VERSION);
    assert_int_equal(add_run(db, NULL, 100), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), 100);
    assert_int_equal(count(db, "SELECT count(*) FROM metrics WHERE name='decode_time' AND value=1.5"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode='wal'"), 1);
    /* an aborted run leaves nothing */
    db_run_info in = {.kind = "engine", .model = "m", .hardware = "h"};
    int64_t id;
    assert_int_equal(db_run_begin(db, &in, &id), KV_OK);
    kv_span sp = {0, 0, 0, "attn", "gpu", 0, 10, 0, 0};
    assert_int_equal(db_run_span(db, id, &sp), KV_OK);
    db_run_abort(db);
    assert_int_equal(count(db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), 100);
    /* a bad kind and a span outside a run are refused */
    in.kind = "guess";
    assert_int_equal(db_run_begin(db, &in, &id), KV_EINVAL);
    assert_int_equal(db_run_span(db, 1, &sp), KV_EINVAL);
    /* reruns with the same key replace the earlier run and its spans */
    assert_int_equal(add_run(db, "cfg-1", 10), KV_OK);
    assert_int_equal(add_run(db, "cfg-1", 20), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE run_key='cfg-1'"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), 120);
    assert_int_equal(db_measurement(db, "H100", "h2d_pinned", "{}", 1e6, 50.1, "GB/s"), KV_OK);
    int64_t cid;
    assert_int_equal(db_calibration(db, "h100-sxm", "traces/x.csv", "{}", "{}", &cid), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM measurements"), 1);
    db_close(db);
}

static void t_upgrade(void **s) {
    (void)s;
    char p[512];
    path(p, sizeof p, "old.db");
    kv_db *db;
    assert_int_equal(db_open_version(p, 1000, 1, &db), KV_OK);
    assert_int_equal(db_schema_version(db), 1);
    assert_int_equal(db_exec(db, "INSERT INTO runs(kind,created,code_version,model,hardware,workload,plan)"
                                 " VALUES('sim','2026-01-01T00:00:00Z','v0','OPT-6.7B','t4','{}','{}');"
                                 "INSERT INTO spans VALUES(1,0,0,0,'kv_h2d','h2d',0,5,1,0);"),
                     KV_OK);
    db_close(db);
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_schema_version(db), DB_SCHEMA_VERSION);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE model='OPT-6.7B' AND run_key IS NULL"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM sqlite_master WHERE name='spans_join'"), 1);
    /* a database from a newer kvpr is refused, not damaged */
    assert_int_equal(db_exec(db, "PRAGMA user_version=99"), KV_OK);
    db_close(db);
    assert_int_equal(db_open(p, 1000, &db), KV_EDB);
    assert_non_null(strstr(kv_errmsg(), "newer than this kvpr"));
    /* a file that is not a database */
    path(p, sizeof p, "junk.db");
    assert_int_equal(write_text(p, "this is not an SQLite database, just some text that is long enough......"), 0);
    assert_int_equal(db_open(p, 1000, &db), KV_EDB);
}

static void t_killed_midway(void **s) {
    (void)s;
    char p[512];
    path(p, sizeof p, "kill.db");
    kv_db *db;
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(add_run(db, "before", 500), KV_OK);
    db_close(db);
    pid_t pid = fork();
    if (pid == 0) {
        kv_db *c;
        if (db_open(p, 1000, &c)) _exit(3);
        db_run_info in = {.kind = "sim", .model = "m", .hardware = "h", .run_key = "before"};
        int64_t id;
        if (db_run_begin(c, &in, &id)) _exit(4);
        for (int i = 0; i < 20000; i++) {
            kv_span sp = {i, 0, 0, "recompute", "gpu", i, i + 1, 0, 1e9};
            if (db_run_span(c, id, &sp)) _exit(5);
        }
        raise(SIGKILL); /* dies inside the transaction, after deleting the old run of the same key */
        _exit(6);
    }
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE run_key='before'"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), 500);
    assert_int_equal(count(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check='ok'"), 1);
    /* and the database takes new runs */
    assert_int_equal(add_run(db, "after", 5), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs"), 2);
    db_close(db);
}

static void t_locked(void **s) {
    (void)s;
    char p[512];
    path(p, sizeof p, "lock.db");
    kv_db *a, *b;
    assert_int_equal(db_open(p, 1000, &a), KV_OK);
    assert_int_equal(db_open(p, 100, &b), KV_OK);
    assert_int_equal(db_exec(a, "BEGIN EXCLUSIVE"), KV_OK);
    db_run_info in = {.kind = "sim", .model = "m", .hardware = "h"};
    int64_t id;
    assert_int_equal(db_run_begin(b, &in, &id), KV_EDB);
    assert_non_null(strstr(kv_errmsg(), "locked"));
    assert_int_equal(db_exec(a, "COMMIT"), KV_OK);
    assert_int_equal(add_run(b, NULL, 3), KV_OK);
    db_close(a);
    db_close(b);
}

static void t_merge(void **s) {
    (void)s;
    char p1[512], p2[512], pm[512];
    path(p1, sizeof p1, "s1.db");
    path(p2, sizeof p2, "s2.db");
    path(pm, sizeof pm, "m.db");
    kv_db *a, *b, *m;
    assert_int_equal(db_open(p1, 1000, &a), KV_OK);
    assert_int_equal(db_open(p2, 1000, &b), KV_OK);
    assert_int_equal(add_run(a, "k1", 3), KV_OK);
    assert_int_equal(add_run(a, "k2", 4), KV_OK);
    assert_int_equal(add_run(b, "k3", 5), KV_OK);
    assert_int_equal(add_run(b, NULL, 6), KV_OK);
    db_close(a);
    db_close(b);
    assert_int_equal(db_open(pm, 1000, &m), KV_OK);
    assert_int_equal(add_run(m, "k2", 1), KV_OK); /* an older run of k2, replaced by the shard's */
    assert_int_equal(db_merge(m, p1), KV_OK);
    assert_int_equal(db_merge(m, p2), KV_OK);
    assert_int_equal(count(m, "SELECT count(*) FROM runs"), 4);
    assert_int_equal(count(m, "SELECT count(*) FROM spans"), 18);
    /* spans follow their runs */
    assert_int_equal(count(m, "SELECT count(*) FROM spans s JOIN runs r ON r.id=s.run_id WHERE r.run_key='k2'"), 4);
    assert_int_equal(count(m, "SELECT count(*) FROM spans s JOIN runs r ON r.id=s.run_id WHERE r.run_key='k3'"), 5);
    assert_int_equal(count(m, "SELECT count(*) FROM metrics"), 4);
    /* merging the same shard again is idempotent for keyed runs */
    assert_int_equal(db_merge(m, p1), KV_OK);
    assert_int_equal(count(m, "SELECT count(*) FROM runs"), 4);
    assert_int_equal(db_merge(m, "/nonexistent/dir/x.db"), KV_ENOTFOUND); /* and not created */
    db_close(m);
}


static void file_bytes(const char *p, char **buf, long *n) {
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)*n + 1);
    assert_int_equal(fread(*buf, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
}

/* item 18: kvpr writes only into its own databases, and never into a damaged one */
static void t_refuse_foreign(void **s) {
    (void)s;
    char p[512], wal[600];
    path(p, sizeof p, "notes.db");
    sqlite3 *h;
    assert_int_equal(sqlite3_open(p, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "CREATE TABLE notes(x); INSERT INTO notes VALUES('keep me');", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    char *before, *after;
    long nb, na;
    file_bytes(p, &before, &nb);
    kv_db *db;
    assert_int_equal(db_open(p, 1000, &db), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "not a kvpr results database"));
    file_bytes(p, &after, &na);
    assert_true(na == nb && !memcmp(before, after, (size_t)nb)); /* not converted: no tables, no WAL, no user_version */
    free(before), free(after);
    snprintf(wal, sizeof wal, "%s-wal", p);
    assert_int_equal(access(wal, F_OK), -1);
    /* another application's id */
    path(p, sizeof p, "app.db");
    assert_int_equal(sqlite3_open(p, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "PRAGMA application_id=1234;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    assert_int_equal(db_open(p, 1000, &db), KV_EINVAL);
    assert_int_equal(db_open_ro(p, 1000, &db), KV_EINVAL);
    /* a kvpr database made before application ids opens, and gets the id */
    path(p, sizeof p, "legacy.db");
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_exec(db, "PRAGMA application_id=0"), KV_OK);
    db_close(db);
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(count(db, "SELECT application_id FROM pragma_application_id"), DB_APPLICATION_ID);
    db_close(db);
    /* random bytes over a page in the middle */
    path(p, sizeof p, "damaged.db");
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    for (int i = 0; i < 6; i++) assert_int_equal(add_run(db, NULL, 2000), KV_OK);
    assert_int_equal(db_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)"), KV_OK);
    db_close(db);
    FILE *f = fopen(p, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, (size / 4096 / 2) * 4096, SEEK_SET);
    unsigned x = 12345;
    for (int i = 0; i < 4096; i++) fputc((int)((x = x * 1103515245u + 12345u) >> 16) & 0xff, f);
    fclose(f);
    file_bytes(p, &before, &nb);
    assert_int_equal(db_open(p, 1000, &db), KV_EDB);
    assert_non_null(strstr(kv_errmsg(), "is damaged"));
    assert_int_equal(db_open_ro(p, 1000, &db), KV_EDB);
    file_bytes(p, &after, &na);
    assert_true(na == nb && !memcmp(before, after, (size_t)nb));
    free(before), free(after);
    /* a path that cannot be a database file */
    assert_int_equal(db_open(tmp_dir(), 1000, &db), KV_EINVAL);
    assert_int_equal(db_open("/nonexistent-dir/x.db", 1000, &db), KV_EINVAL);
    assert_int_equal(db_open_ro("/nonexistent-dir/x.db", 1000, &db), KV_ENOTFOUND);
}

/* item 19: merging the same shard again changes nothing; a database cannot merge into itself */
static void t_merge_idempotent(void **s) {
    (void)s;
    char ps[512], pm[512];
    path(ps, sizeof ps, "shard.db");
    path(pm, sizeof pm, "main.db");
    kv_db *a, *m;
    assert_int_equal(db_open(ps, 1000, &a), KV_OK);
    assert_int_equal(add_run(a, NULL, 3), KV_OK);
    assert_int_equal(add_run(a, "keyed", 2), KV_OK);
    assert_int_equal(db_measurement(a, "H100", "copy_h2d_pinned", "{}", 1e6, 5e-5, "s"), KV_OK);
    assert_int_equal(db_measurement(a, "H100", "copy_h2d_pinned", "{}", 2e6, 9e-5, "s"), KV_OK);
    assert_int_equal(db_calibration(a, "h100-sxm", "traces/x.sql", "{}", "{}", NULL), KV_OK);
    db_close(a);
    assert_int_equal(db_open(pm, 1000, &m), KV_OK);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(db_merge(m, ps), KV_OK);
        assert_int_equal(count(m, "SELECT count(*) FROM runs"), 2);
        assert_int_equal(count(m, "SELECT count(*) FROM spans"), 5);
        assert_int_equal(count(m, "SELECT count(*) FROM metrics"), 2);
        assert_int_equal(count(m, "SELECT count(*) FROM measurements"), 2);
        assert_int_equal(count(m, "SELECT count(*) FROM calibrations"), 1);
    }
    assert_int_equal(db_merge(m, pm), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "into itself"));
    assert_int_equal(count(m, "SELECT count(*) FROM runs"), 2);
    db_close(m);
}

/* issue 11 item 9: a database removed while open (compare's and calibrate's temporary copy of a
 * .sql dump) leaves no -wal or -shm file behind when closed */
static void t_removed_leaves_nothing(void **s) {
    (void)s;
    char p[512], side[600];
    path(p, sizeof p, "gone.db");
    kv_db *d;
    assert_int_equal(db_open(p, 1000, &d), KV_OK);
    assert_int_equal(add_run(d, "k", 2), KV_OK);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(count(d, "SELECT count(*) FROM runs"), 1); /* still readable through the handle */
    db_close(d);
    snprintf(side, sizeof side, "%s-wal", p);
    assert_int_equal(access(side, F_OK), -1);
    snprintf(side, sizeof side, "%s-shm", p);
    assert_int_equal(access(side, F_OK), -1);
    /* temporary databases go where $TMPDIR says */
    char tmp[600], dir[600];
    path(dir, sizeof dir, "tmpd");
    assert_int_equal(mkdir(dir, 0700), 0);
    const char *old = getenv("TMPDIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("TMPDIR", dir, 1);
    assert_int_equal(db_mkstemp(tmp, sizeof tmp, "kvpr-x"), KV_OK);
    if (saved) setenv("TMPDIR", saved, 1);
    else unsetenv("TMPDIR");
    free(saved);
    assert_int_equal(strncmp(tmp, dir, strlen(dir)), 0);
    assert_int_equal(db_open(tmp, 1000, &d), KV_OK);
    assert_int_equal(unlink(tmp), 0);
    db_close(d);
    assert_int_equal(rmdir(dir), 0); /* empty: no -wal, no -shm */
    /* a database that is still there keeps what it needs */
    assert_int_equal(db_open(p, 1000, &d), KV_OK);
    db_close(d);
    assert_int_equal(access(p, F_OK), 0);
}

/* issue 11 (habits): the scheduler is a column of runs: a version-2 database upgrades with it
 * filled from its experiment run keys, new runs get it, and a merge carries it */
static void t_scheduler_column(void **s) {
    (void)s;
    char p[512], q[512];
    path(p, sizeof p, "v2.db");
    path(q, sizeof q, "v3.db");
    kv_db *db;
    assert_int_equal(db_open_version(p, 1000, 2, &db), KV_OK);
    assert_int_equal(db_exec(db, "INSERT INTO runs(kind,created,code_version,model,hardware,workload,plan,run_key) VALUES"
                                 "('sim','2026-01-01T00:00:00Z','v0','OPT-6.7B','t4','{}','{}','exp/x/OPT-6.7B/t4/latency/4/64/3/kvpr/paper'),"
                                 "('sim','2026-01-01T00:00:00Z','v0','OPT-6.7B','t4','{}','{}','exp/x/OPT-6.7B/t4/latency/4/64/3/offload/-'),"
                                 "('sim','2026-01-01T00:00:00Z','v0','OPT-6.7B','t4','{}','{}',NULL);"),
                     KV_OK);
    db_close(db);
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_schema_version(db), DB_SCHEMA_VERSION);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE scheduler = 'paper' AND run_key GLOB '*/kvpr/paper'"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE scheduler IS NULL"), 2);
    db_close(db);
    /* new runs: given, or taken from an experiment's key */
    assert_int_equal(db_open(q, 1000, &db), KV_OK);
    db_run_info a = {.kind = "sim", .model = "m", .hardware = "h", .run_key = "exp/y/m/h/latency/4/64/3/kvpr/pipelined"};
    db_run_info b = {.kind = "sim", .model = "m", .hardware = "h", .scheduler = "dynamic"};
    int64_t id;
    assert_int_equal(db_run_begin(db, &a, &id), KV_OK);
    assert_int_equal(db_run_commit(db), KV_OK);
    assert_int_equal(db_run_begin(db, &b, &id), KV_OK);
    assert_int_equal(db_run_commit(db), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE scheduler = 'pipelined' AND run_key GLOB 'exp/y/*'"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE scheduler = 'dynamic' AND run_key IS NULL"), 1);
    /* a merge carries the column */
    assert_int_equal(db_merge(db, p), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM runs WHERE scheduler = 'paper'"), 1);
    db_close(db);
}

/* Per-step times as one table (schema 4): filled from step_N_s metrics, by the upgrade for old
 * runs and on insert for new ones, carried by a merge; other metrics do not land there. */
static void t_steps_table(void **s) {
    (void)s;
    char p[512], q[512];
    path(p, sizeof p, "steps-v3.db");
    path(q, sizeof q, "steps-new.db");
    kv_db *db;
    assert_int_equal(db_open_version(p, 1000, 3, &db), KV_OK);
    assert_int_equal(db_exec(db, "INSERT INTO runs(id,kind,created,code_version,model,hardware,workload,plan) VALUES"
                                 "(7,'sim','2026-01-01T00:00:00Z','v0','m','h','{}','{}');"
                                 "INSERT INTO metrics VALUES(7,'step_0_s',0.5,'s'),(7,'step_12_s',0.25,'s'),(7,'decode_s',0.75,'s'),"
                                 "(7,'step_x_s',9,'s');"),
                     KV_OK);
    db_close(db);
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_schema_version(db), 4);
    assert_int_equal(count(db, "SELECT count(*) FROM steps"), 2);
    assert_int_equal(count(db, "SELECT count(*) FROM steps WHERE run_id = 7 AND step = 12 AND seconds = 0.25"), 1);
    db_close(db);
    assert_int_equal(db_open(q, 1000, &db), KV_OK);
    db_run_info a = {.kind = "sim", .model = "m", .hardware = "h"};
    int64_t id;
    assert_int_equal(db_run_begin(db, &a, &id), KV_OK);
    assert_int_equal(db_run_metric(db, id, "step_3_s", 1.5, "s"), KV_OK);
    assert_int_equal(db_run_metric(db, id, "step_3_sx", 2.5, "s"), KV_OK);
    assert_int_equal(db_run_metric(db, id, "decode_s", 1.5, "s"), KV_OK);
    assert_int_equal(db_run_commit(db), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM steps"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM steps WHERE step = 3 AND seconds = 1.5"), 1);
    assert_int_equal(db_merge(db, p), KV_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM steps"), 3);
    db_close(db);
}

/* Batched commits: runs are savepoints in one transaction. An aborted run drops only its own rows;
 * nothing is visible to another connection before the batch commits; a batch commits by itself
 * when full; a process killed inside a batch leaves the committed batches and no partial run. */
static void t_batch(void **s) {
    (void)s;
    char p[512];
    path(p, sizeof p, "batch.db");
    kv_db *db, *rd;
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    assert_int_equal(db_open(p, 1000, &rd), KV_OK);
    db_batch(db, 3);
    assert_int_equal(add_run(db, "a", 10), KV_OK);
    db_run_info in = {.kind = "sim", .model = "m", .hardware = "h", .run_key = "a"};
    int64_t id;
    /* a run that replaces "a" and is aborted: "a" and its spans stay */
    assert_int_equal(db_run_begin(db, &in, &id), KV_OK);
    kv_span sp = {0, 0, 0, "recompute", "gpu", 0, 1, 0, 1e9};
    assert_int_equal(db_run_span(db, id, &sp), KV_OK);
    db_run_abort(db);
    assert_int_equal(add_run(db, "b", 5), KV_OK);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 0); /* the batch is open: 2 of 3 */
    assert_int_equal(add_run(db, "c", 1), KV_OK);                /* third run: the batch commits */
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 3);
    assert_int_equal(count(rd, "SELECT count(*) FROM spans"), 16);
    assert_int_equal(add_run(db, "d", 1), KV_OK);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 3);
    assert_int_equal(db_flush(db), KV_OK);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 4);
    assert_int_equal(db_flush(db), KV_OK); /* nothing open: nothing to do */
    db_close(db);
    pid_t pid = fork();
    if (pid == 0) {
        kv_db *c;
        if (db_open(p, 1000, &c)) _exit(3);
        db_batch(c, 100);
        if (add_run(c, "e", 3) || add_run(c, "a", 2)) _exit(4);
        if (db_run_begin(c, &in, &id)) _exit(5);
        if (db_run_span(c, id, &sp)) _exit(6);
        raise(SIGKILL); /* inside the batch, inside a run */
        _exit(7);
    }
    int wst;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 4);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs WHERE run_key = 'e'"), 0);
    assert_int_equal(count(rd, "SELECT count(*) FROM spans WHERE run_id = (SELECT id FROM runs WHERE run_key = 'a')"), 10);
    assert_int_equal(count(rd, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check='ok'"), 1);
    /* db_close commits an open batch */
    assert_int_equal(db_open(p, 1000, &db), KV_OK);
    db_batch(db, 100);
    assert_int_equal(add_run(db, "f", 2), KV_OK);
    db_close(db);
    assert_int_equal(count(rd, "SELECT count(*) FROM runs"), 5);
    db_close(rd);
}

void group_db(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_schema_and_run), cmocka_unit_test(t_upgrade),
                                   cmocka_unit_test(t_killed_midway), cmocka_unit_test(t_locked),
                                   cmocka_unit_test(t_merge), cmocka_unit_test(t_refuse_foreign),
                                   cmocka_unit_test(t_merge_idempotent), cmocka_unit_test(t_removed_leaves_nothing),
                                   cmocka_unit_test(t_scheduler_column), cmocka_unit_test(t_steps_table), cmocka_unit_test(t_batch)};
    RUN_GROUP(c, "db", t);
}
