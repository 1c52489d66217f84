/* Experiments: parsing (errors name the line), sharding (shards merged = the unsharded result),
 * idempotent reruns, parallel workers, and the tables on a tiny experiment. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../exp/exp.h"
#include "tests.h"

static const char *TINY =
    "# a tiny experiment\n"
    "name       = tiny\n"
    "title      = tiny test\n"
    "models     = OPT-125M OPT-1.3B\n"
    "hardware   = a100-40gb-pcie4 t4\n"
    "mode       = latency throughput\n"
    "batch      = 4\n"
    "prompt     = 64 128\n"
    "gen        = 4\n"
    "nb         = 2\n"
    "policies   = offload kvpr\n"
    "schedulers = paper pipelined\n"
    "timeline   = model=OPT-125M hw=t4 mode=latency prompt=64\n"
    "claim latency_reduction model=OPT-1.3B hw=a100-40gb-pcie4 mode=latency prompt=128 = 30  # made up, for the table\n"
    "claim kv_share policy=offload mode=latency = 90   # also made up\n";

static void spec_file(char *path, size_t n, const char *name, const char *text) {
    snprintf(path, n, "%s/%s.exp", tmp_dir(), name);
    assert_int_equal(write_text(path, text), 0);
}

static void expect_parse(const char *text, kv_status want, const char *needle) {
    char p[512];
    spec_file(p, sizeof p, "bad", text);
    static exp_spec s;
    kv_status st = exp_parse(p, &s);
    if (st != want || !strstr(kv_errmsg(), needle)) fail_msg("got %d '%s', wanted %d with '%s'", st, kv_errmsg(), want, needle);
}

static void t_parse(void **st) {
    (void)st;
    char p[512];
    spec_file(p, sizeof p, "tiny", TINY);
    static exp_spec s;
    if (exp_parse(p, &s)) fail_msg("%s", kv_errmsg());
    assert_string_equal(s.name, "tiny");
    assert_int_equal(s.nmodels, 2);
    assert_int_equal(s.nmodes, 2);
    assert_int_equal(s.nclaims, 2);
    assert_rel(s.claims[0].value, 30, 1e-15);
    assert_int_equal(s.claims[0].where.n, 4);
    assert_string_equal(s.claims[0].text, "made up, for the table");
    exp_run *r;
    int n;
    assert_int_equal(exp_runs(&s, &r, &n), KV_OK);
    assert_int_equal(n, 2 * 2 * 2 * 2 * 3); /* models x hw x modes x prompts x (offload + 2 schedulers) */
    free(r);
    /* every shipped experiment parses */
    const char *shipped[] = {"paper-latency", "paper-throughput", "paper-batch", "paper-breakdown", "whatif-links", "whatif-models", "whatif-dynamic"};
    for (int i = 0; i < 7; i++) {
        char path[1024];
        assert_int_equal(exp_find(shipped[i], path, sizeof path), KV_OK);
        if (exp_parse(path, &s)) fail_msg("%s", kv_errmsg());
    }
    expect_parse("name = x\nmodles = OPT-125M\n", KV_EPARSE, "bad.exp:2: unknown key 'modles'");
    expect_parse("name = x\n\n\nbatch = 4 zero\n", KV_EINVAL, "bad.exp:4: 'batch' value 'zero' is not an integer");
    expect_parse("name = x\nmode = fast\n", KV_EINVAL, "bad.exp:2: unknown mode 'fast'");
    expect_parse("name = x\npolicies = offload magic\n", KV_EINVAL, "bad.exp:2: unknown policy 'magic'");
    expect_parse("name = x\nschedulers = lucky\n", KV_EINVAL, "bad.exp:2: unknown scheduler 'lucky'");
    expect_parse("name = x\nname = y\n", KV_EPARSE, "bad.exp:2: 'name' given twice");
    expect_parse("name = x\njust words\n", KV_EPARSE, "bad.exp:2: expected 'key = value'");
    expect_parse("name = x\nsweep = size=3\n", KV_EPARSE, "bad.exp:2: unknown filter key 'size'");
    expect_parse("name = x\nclaim speedup model=a = 3\n", KV_EPARSE, "bad.exp:2: unknown claim metric 'speedup'");
    expect_parse("name = x\nclaim latency_reduction = many\n", KV_EINVAL, "bad.exp:2: claim value 'many' is not a number");
    expect_parse("name = x\nclaim kv_share = 3\nmodels = a\nhardware = b\nbatch = 1\nprompt = 1\ngen = 2\n", KV_EPARSE,
                 "bad.exp:2: claim 'kv_share' needs a policy");
    expect_parse("name = x\nmodels = OPT-125M\n", KV_EPARSE, "missing required key 'hardware'");
    expect_parse("name = x\ngen = 1\n", KV_EINVAL, "bad.exp:2: 'gen' value '1' is not an integer in [2,");
    char path[64];
    assert_int_equal(exp_find("no-such-experiment", path, sizeof path), KV_ENOTFOUND);
}

/* (run_key, metric, value) of every run, sorted: what a result set is */
static char *dump(const char *db) {
    char *out = malloc(1 << 20);
    int rc = run_cmd(out, 1 << 20,
                     "sqlite3 %s \"SELECT r.run_key, m.name, printf('%%.17g', m.value) FROM runs r JOIN metrics m ON m.run_id = r.id "
                     "ORDER BY 1, 2; SELECT count(*) FROM spans;\"", db);
    assert_int_equal(rc, 0);
    return out;
}

/* equal texts, or a failure naming the first line that differs */
static void same_text(const char *what, const char *a, const char *b) {
    int line = 1;
    const char *la = a, *lb = b;
    for (; *a && *a == *b; a++, b++)
        if (*a == '\n') line++, la = a + 1, lb = b + 1;
    if (!*a && !*b) return;
    fail_msg("%s: line %d differs:\n  %.*s\n  %.*s", what, line, (int)strcspn(la, "\n"), la, (int)strcspn(lb, "\n"), lb);
}

static void t_shards_and_reruns(void **st) {
    (void)st;
    char p[512], a[512], b1[512], b2[512], m[512];
    spec_file(p, sizeof p, "tiny", TINY);
    static exp_spec s;
    assert_int_equal(exp_parse(p, &s), KV_OK);
    snprintf(a, sizeof a, "%s/exp-all.db", tmp_dir());
    snprintf(b1, sizeof b1, "%s/exp-s1.db", tmp_dir());
    snprintf(b2, sizeof b2, "%s/exp-s2.db", tmp_dir());
    snprintf(m, sizeof m, "%s/exp-merged.db", tmp_dir());
    unlink(a), unlink(b1), unlink(b2), unlink(m);
    int ran, nofit;
    exp_opts o = {.jobs = 1, .nshard = 1, .db = a};
    if (exp_execute(&s, &o, &ran, &nofit)) fail_msg("%s", kv_errmsg());
    assert_int_equal(ran + nofit, 48);
    char *all = dump(a);
    /* rerun: the same result set, not twice as many rows */
    assert_int_equal(exp_execute(&s, &o, &ran, &nofit), KV_OK);
    char *again = dump(a);
    same_text("rerun", all, again);
    /* two shards, one of them with two workers, merged */
    exp_opts s1 = {.jobs = 2, .shard = 1, .nshard = 2, .db = b1}, s2 = {.jobs = 1, .shard = 2, .nshard = 2, .db = b2};
    assert_int_equal(exp_execute(&s, &s1, &ran, &nofit), KV_OK);
    assert_int_equal(ran + nofit, 24);
    assert_int_equal(exp_execute(&s, &s2, &ran, &nofit), KV_OK);
    assert_int_equal(ran + nofit, 24);
    char out[4096];
    assert_int_equal(run_cmd(out, sizeof out, "%s merge %s %s %s", kvpr_bin(), m, b1, b2), 0);
    char *merged = dump(m);
    same_text("merged shards", all, merged);
    /* parallel workers give the same set as one process */
    char par[512];
    snprintf(par, sizeof par, "%s/exp-par.db", tmp_dir());
    unlink(par);
    exp_opts op = {.jobs = 3, .nshard = 1, .db = par};
    assert_int_equal(exp_execute(&s, &op, &ran, &nofit), KV_OK);
    char *pr = dump(par);
    same_text("parallel workers", all, pr);
    /* a report of one shard alone says what is missing */
    FILE *f = tmpfile();
    assert_int_equal(exp_report(&s, b1, tmp_dir(), f), KV_OK);
    rewind(f);
    char buf[1 << 15];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "24 of 48 runs are not in"));
    free(all), free(again), free(merged), free(pr);
}

static void t_tables(void **st) {
    (void)st;
    char p[512], db[512];
    spec_file(p, sizeof p, "tiny", TINY);
    static exp_spec s;
    assert_int_equal(exp_parse(p, &s), KV_OK);
    snprintf(db, sizeof db, "%s/exp-all.db", tmp_dir());
    FILE *f = tmpfile();
    assert_int_equal(exp_report(&s, db, tmp_dir(), f), KV_OK);
    rewind(f);
    char buf[1 << 15];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "== tiny: tiny test"));
    assert_non_null(strstr(buf, "kvpr/pipelined"));
    assert_non_null(strstr(buf, "OPT-1.3B a100-40gb-pcie4 latency b4 p128 g4"));
    assert_non_null(strstr(buf, "made up, for the table"));
    /* the claim row holds our number: recompute it from the database independently */
    char out[4096];
    assert_int_equal(run_cmd(out, sizeof out,
                             "sqlite3 %s \"SELECT printf('%%.1f', 100 * (1 - k.value / o.value)) FROM runs rk JOIN metrics k ON k.run_id = rk.id "
                             "JOIN runs ro JOIN metrics o ON o.run_id = ro.id WHERE k.name = 'decode_s' AND o.name = 'decode_s' "
                             "AND rk.run_key = 'exp/tiny/OPT-1.3B/a100-40gb-pcie4/latency/4/128/4/kvpr/pipelined' "
                             "AND ro.run_key = 'exp/tiny/OPT-1.3B/a100-40gb-pcie4/latency/4/128/4/offload/-'\"",
                             db),
                     0);
    out[strcspn(out, "\n")] = 0;
    char want[80];
    snprintf(want, sizeof want, " %.60s%%", out);
    char *row = strstr(buf, "made up, for the table");
    assert_non_null(row);
    char *eol = strchr(row, '\n');
    *eol = 0;
    if (!strstr(row, want)) fail_msg("claim row '%s' lacks '%s'", row, want);
    /* the timeline figure came from stored spans */
    char png[600];
    snprintf(png, sizeof png, "%s/tiny-timeline.png", tmp_dir());
    assert_int_equal(access(png, R_OK), 0);
}


/* items 4, 6, 7, 14: names are plain and never cut, list entries unique, claims whole */
static void t_parse_untrusted(void **st) {
    (void)st;
    const char *base = "models = OPT-125M\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n";
    char t[2000];
    snprintf(t, sizeof t, "name = x\n%spolicies = kvpr kvpr\nschedulers = paper pipelined\n", base);
    expect_parse(t, KV_EINVAL, "'policies' lists 'kvpr' twice");
    snprintf(t, sizeof t, "name = x\n%sschedulers = paper paper\n", base);
    expect_parse(t, KV_EINVAL, "'schedulers' lists 'paper' twice");
    snprintf(t, sizeof t, "name = x\nmodels = OPT-125M OPT-125M\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n");
    expect_parse(t, KV_EINVAL, "'models' lists 'OPT-125M' twice");
    snprintf(t, sizeof t, "name = x\nmodels = OPT-125M\nhardware = t4\nbatch = 2 2\nprompt = 16\ngen = 3\n");
    expect_parse(t, KV_EINVAL, "'batch' lists 2 twice");
    snprintf(t, sizeof t, "name = x\n%smode = latency latency\n", base);
    expect_parse(t, KV_EINVAL, "'mode' lists 'latency' twice");
    snprintf(t, sizeof t, "name = x\n%snb = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\n", base);
    expect_parse(t, KV_EPARSE, "'nb' is one integer");
    snprintf(t, sizeof t, "name = x\n%sclaim  = 2\n", base);
    expect_parse(t, KV_EPARSE, "needs a metric");
    snprintf(t, sizeof t, "name = ../../x\n%s", base);
    expect_parse(t, KV_EINVAL, "name '../../x' must be");
    snprintf(t, sizeof t, "name = a/b\n%s", base);
    expect_parse(t, KV_EINVAL, "must be 1 to 63 characters");
    snprintf(t, sizeof t, "name = .hidden\n%s", base);
    expect_parse(t, KV_EINVAL, "not start with '.'");
    /* 64 characters: two such names sharing 63 would replace each other's runs */
    snprintf(t, sizeof t, "name = %s\n%s", "a123456789b123456789c123456789d123456789e123456789f123456789abcd", base);
    expect_parse(t, KV_EINVAL, "must be 1 to 63 characters");
    char longm[300];
    memset(longm, 'm', 200);
    longm[200] = 0;
    snprintf(t, sizeof t, "name = x\nmodels = %s\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n", longm);
    expect_parse(t, KV_EINVAL, "longer than 127 bytes");
    /* 63 is fine, and the run count is what the loop fills */
    snprintf(t, sizeof t, "name = %s\n%spolicies = offload kvpr gpu\nschedulers = paper pipelined dynamic\n",
             "a123456789b123456789c123456789d123456789e123456789f123456789abc", base);
    char p[512];
    spec_file(p, sizeof p, "ok63", t);
    static exp_spec s;
    if (exp_parse(p, &s)) fail_msg("%s", kv_errmsg());
    assert_int_equal(strlen(s.name), 63);
    exp_run *r;
    int n;
    assert_int_equal(exp_runs(&s, &r, &n), KV_OK);
    assert_int_equal(n, 1 + 3 + 1);
    free(r);
    /* a NUL byte would cut the file short */
    spec_file(p, sizeof p, "nul", "name = x\n");
    FILE *f = fopen(p, "ab");
    fwrite("models = a\0\nbatch = 1\n", 1, 22, f);
    fclose(f);
    assert_int_equal(exp_parse(p, &s), KV_EPARSE);
    assert_non_null(strstr(kv_errmsg(), "NUL byte"));
}

/* item 15: the worker databases of a killed 'kvpr run' are merged by the next one and removed */
static void t_stale_workers(void **st) {
    (void)st;
    char p[512], db[600], job[700], side[800];
    spec_file(p, sizeof p, "stale", "name = stale\nmodels = OPT-125M\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n");
    static exp_spec s;
    if (exp_parse(p, &s)) fail_msg("%s", kv_errmsg());
    snprintf(db, sizeof db, "%s/stale.db", tmp_dir());
    unlink(db);
    pid_t dead = fork(); /* a pid that is surely gone: our own child, reaped */
    if (dead == 0) _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    snprintf(job, sizeof job, "%s.job%d-0", db, (int)dead);
    kv_db *h;
    assert_int_equal(db_open(job, 1000, &h), KV_OK);
    db_run_info in = {.kind = "sim", .model = "m", .hardware = "h", .run_key = "exp/killed/run"};
    int64_t id;
    assert_int_equal(db_run_begin(h, &in, &id), KV_OK);
    assert_int_equal(db_run_metric(h, id, "decode_s", 1.0, "s"), KV_OK);
    assert_int_equal(db_run_commit(h), KV_OK);
    db_close(h);
    /* a live run's worker file is left alone */
    snprintf(side, sizeof side, "%s.job%d-0", db, (int)getppid());
    assert_int_equal(db_open(side, 1000, &h), KV_OK);
    db_close(h);
    exp_opts o = {.jobs = 2, .shard = 1, .nshard = 1, .db = db};
    int ran, nofit;
    if (exp_execute(&s, &o, &ran, &nofit)) fail_msg("%s", kv_errmsg());
    assert_int_equal(ran, 2);
    assert_int_equal(access(job, F_OK), -1);
    char wal[800];
    snprintf(wal, sizeof wal, "%s-wal", job);
    assert_int_equal(access(wal, F_OK), -1);
    assert_int_equal(access(side, F_OK), 0);
    unlink(side);
    assert_int_equal(db_open(db, 1000, &h), KV_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db_handle(h), "SELECT count(*) FROM runs WHERE run_key = 'exp/killed/run'", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    db_close(h);
}

void group_exp(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_parse), cmocka_unit_test(t_shards_and_reruns), cmocka_unit_test(t_tables),
                                   cmocka_unit_test(t_parse_untrusted), cmocka_unit_test(t_stale_workers)};
    RUN_GROUP(c, "exp", t);
}
