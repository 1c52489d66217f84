/* Results database: schema and upgrade path, one transaction per run, a run killed midway
 * leaves no rows and no damage, a locked database gives a clear error, shards merge. */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
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
    assert_int_equal(db_schema_version(db), 2);
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
    assert_int_equal(db_merge(m, "/nonexistent/dir/x.db"), KV_EDB);
    db_close(m);
}

void group_db(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_schema_and_run), cmocka_unit_test(t_upgrade),
                                   cmocka_unit_test(t_killed_midway), cmocka_unit_test(t_locked),
                                   cmocka_unit_test(t_merge)};
    RUN_GROUP(c, "db", t);
}
