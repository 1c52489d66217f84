/* Experiments: parsing (errors name the line), sharding (shards merged = the unsharded result),
 * idempotent reruns, parallel workers, and the tables on a tiny experiment. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../core/par.h"
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

/* An experiment file written, parsed and checked; and run into tmp_dir()/DBNAME.db (fresh). */
static void spec_load(exp_spec *s, const char *name, const char *text) {
    char p[512];
    spec_file(p, sizeof p, name, text);
    if (exp_parse(p, s) || exp_check(s)) fail_msg("%s", kv_errmsg());
}

static void spec_run(const exp_spec *s, const char *dbname, int jobs, char *db, size_t n, int *ran, int *nofit) {
    snprintf(db, n, "%s/%s.db", tmp_dir(), dbname);
    unlink(db);
    exp_opts o = {.jobs = jobs, .nshard = 1, .db = db};
    if (exp_execute(s, &o, ran, nofit)) fail_msg("%s", kv_errmsg());
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
        if (exp_parse(path, &s) || exp_check(&s)) fail_msg("%s", kv_errmsg()); /* names resolve, filters match */
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

/* issue 11 item 8 (and item 7's experiment part): the whole file is checked before any run
 * starts; a bad name or a filter that matches nothing names its line, exits 2, writes nothing */
static void t_check_first(void **st) {
    (void)st;
    const char *base = "name = chk\nmodels = OPT-125M\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n";
    struct {
        const char *extra, *needle;
    } bad[] = {
        {"", NULL}, /* the base itself passes */
        {"", ":3: "},
        {"", ":2: "},
        {"sweep = model=OPT-1.3B\n", ":7: sweep filter 'model=OPT-1.3B' matches no run"},
        {"timeline = batch=8\n", ":7: timeline filter 'batch=8' matches no run"},
        {"claim latency_reduction hw=a100-40gb-pcie4 = 30\n", ":7: claim filter 'hw=a100-40gb-pcie4' matches no run"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[600], p[512], db[700], cmd[4096], out[4096];
        if (i == 1) snprintf(text, sizeof text, "%s", "name = chk\nmodels = OPT-125M\nhardware = no-such-gpu\nbatch = 2\nprompt = 16\ngen = 3\n");
        else if (i == 2) snprintf(text, sizeof text, "%s", "name = chk\nmodels = OPT-99B\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n");
        else snprintf(text, sizeof text, "%s%s", base, bad[i].extra);
        spec_file(p, sizeof p, "chk", text);
        static exp_spec s;
        if (exp_parse(p, &s)) fail_msg("case %zu: %s", i, kv_errmsg()); /* parsing alone cannot tell */
        kv_status cs = exp_check(&s);
        if (!bad[i].needle) {
            if (cs) fail_msg("case %zu: %s", i, kv_errmsg());
            continue;
        }
        if (cs == KV_OK || !strstr(kv_errmsg(), bad[i].needle)) fail_msg("case %zu: got %d '%s', wanted '%s'", i, cs, kv_errmsg(), bad[i].needle);
        /* the command: exit 2, the line named, no database, no job files, no plots */
        char dir[600];
        snprintf(dir, sizeof dir, "%s/chk%zu", tmp_dir(), i);
        snprintf(db, sizeof db, "%s/r.db", dir);
        snprintf(cmd, sizeof cmd, "mkdir -p %s && cd %s && %s run %s --db %s --plots %s/plots --jobs 2 2>&1", dir, dir, kvpr_bin(), p, db, dir);
        assert_int_equal(run_cmd(out, sizeof out, "%s", cmd), 2);
        if (!strstr(out, bad[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, out, bad[i].needle);
        snprintf(cmd, sizeof cmd, "ls -A %s", dir);
        assert_int_equal(run_cmd(out, sizeof out, "%s", cmd), 0);
        if (out[0]) fail_msg("case %zu: a failed check left files behind: %s", i, out);
    }
}

/* issue 11 item 1: a heat-map over several configurations and schedulers shows each of them,
 * named, never just the first one under a title that does not say which */
static void t_heatmap_panels(void **st) {
    (void)st;
    char db[512];
    static exp_spec s;
    spec_load(&s, "heat", "name = heat\nmodels = OPT-125M\nhardware = t4 a100-40gb-pcie4\nbatch = 2 32\nprompt = 256\ngen = 3\n"
                                  "schedulers = paper pipelined\nfigures = heatmap\n");
    int ran, nofit;
    spec_run(&s, "heat", 1, db, sizeof db, &ran, &nofit);
    FILE *f = tmpfile();
    if (exp_report(&s, db, tmp_dir(), f)) fail_msg("%s", kv_errmsg());
    rewind(f);
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    const char *want[] = {"(kvpr/paper, latency b2 p256 g3)", "(kvpr/pipelined, latency b2 p256 g3)", "(kvpr/paper, latency b32 p256 g3)",
                          "(kvpr/pipelined, latency b32 p256 g3)"};
    for (int i = 0; i < 4; i++)
        if (!strstr(buf, want[i])) fail_msg("no table for %s in:\n%s", want[i], buf);
    /* the b32 table holds b32's numbers: its speed-up differs from b2's on some profile */
    char *b2 = strstr(buf, want[1]), *b8 = strstr(buf, want[3]);
    char r2[200], r8[200];
    snprintf(r2, sizeof r2, "%.*s", (int)strcspn(strchr(b2, '\n') + 1, "\n"), strchr(b2, '\n') + 1);
    snprintf(r8, sizeof r8, "%.*s", (int)strcspn(strchr(b8, '\n') + 1, "\n"), strchr(b8, '\n') + 1);
    if (!strcmp(r2, r8)) fail_msg("b2 and b8 rows are the same: '%s'", r2);
    /* the figure: one titled panel per configuration and scheduler */
    char gp[600];
    snprintf(gp, sizeof gp, "%s/heat-heatmap.gp", tmp_dir());
    char *script = read_text(gp);
    assert_non_null(script);
    assert_non_null(strstr(script, "set multiplot layout 2,2"));
    for (int i = 0; i < 4; i++) {
        char t[200];
        snprintf(t, sizeof t, "speed-up over offloading: %.*s", (int)strlen(want[i]) - 2, want[i] + 1);
        if (!strstr(script, t)) fail_msg("no panel titled '%s'", t);
    }
    assert_non_null(strstr(script, "index 3 using"));
    free(script);
    /* habits: the same runs as CSV, one row per run, every dimension a column */
    f = tmpfile();
    if (exp_report_csv(&s, db, f)) fail_msg("%s", kv_errmsg());
    rewind(f);
    len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    int lines = 0;
    for (char *c = buf; *c; c++) lines += *c == '\n';
    assert_int_equal(lines, 1 + 2 * 2 * 3); /* header + hw x batch x (offload + 2 schedulers) */
    assert_non_null(strstr(buf, "experiment,model,hardware,mode,batch,nb,prompt,gen,policy,scheduler,status,decode_s,"));
    /* the t4 b32 pipelined row holds the speed-up the table shows */
    char *row = strstr(buf, "heat,OPT-125M,t4,latency,32,1,256,3,kvpr,pipelined,ok,");
    assert_non_null(row);
    row[strcspn(row, "\n")] = 0;
    char *sp = strrchr(row, ',');
    char wantx[32];
    snprintf(wantx, sizeof wantx, "%.3fx", strtod(sp + 1, NULL));
    if (!strstr(r8, wantx)) fail_msg("csv speed-up %s is not the table's '%s'", sp + 1, r8);
}

/* issue 11 item 11: figures say what they show (hardware, mode, the fixed configuration), keep
 * the legend off the data, split many configurations into panels, and the breakdown figure is a
 * breakdown: per policy and resource, each op's share of decode time stacked */
static void t_figures(void **st) {
    (void)st;
    char db[512], path[600];
    static exp_spec s;
    spec_load(&s, "figs", "name = figs\ntitle = figure test\nmodels = OPT-125M\nhardware = t4\nbatch = 1 2 4 8 16 32 64\n"
                                  "prompt = 16 32\ngen = 3\nfigures = bars breakdown\nsweep = batch=64 prompt=32\n");
    int ran, nofit;
    spec_run(&s, "figs", 1, db, sizeof db, &ran, &nofit);
    FILE *f = tmpfile();
    if (exp_report(&s, db, tmp_dir(), f)) fail_msg("%s", kv_errmsg());
    fclose(f);
    snprintf(path, sizeof path, "%s/figs-latency.gp", tmp_dir());
    char *gp = read_text(path);
    assert_non_null(gp);
    /* the title's second line names the hardware, the mode and what the x axis does not vary */
    assert_non_null(strstr(gp, "\"figure test\".\"\\n\".\"t4\\073 latency\\073 OPT-125M\\073 gen 3\""));
    assert_non_null(strstr(gp, "set key outside"));
    assert_null(strstr(gp, "set key top left"));
    /* 14 configurations: two panels of 7, each from its own block of the data file */
    assert_non_null(strstr(gp, "set multiplot layout 2,1"));
    assert_non_null(strstr(gp, "index 1 using c:xtic(1)"));
    free(gp);
    snprintf(path, sizeof path, "%s/figs-breakdown.gp", tmp_dir());
    gp = read_text(path);
    assert_non_null(gp);
    assert_non_null(strstr(gp, "rowstacked"));
    free(gp);
    snprintf(path, sizeof path, "%s/figs-breakdown.dat", tmp_dir());
    char *dat = read_text(path);
    assert_non_null(dat);
    /* one bar per configuration, policy and busy resource; a resource's ops add up to at most 100 % */
    int bars = 0;
    for (char *l = strchr(dat, '\n') + 1; *l; l = strchr(l, '\n') + 1) {
        if (*l == '"' && l[1] != '"') {
            char *q = strchr(l + 1, '"');
            double sum = 0, v;
            int n;
            for (char *c = q + 1; sscanf(c, "%lf%n", &v, &n) == 1; c += n) sum += v;
            if (sum > 100.5 || sum <= 0) fail_msg("bar '%.*s' adds up to %g %%", (int)(q - l - 1), l + 1, sum);
            bars++;
        }
        if (!strchr(l, '\n')) break;
    }
    assert_int_equal(bars, 14 * 2 * 3); /* configurations x (offload, kvpr) x (H2D, D2H, GPU) */
    assert_non_null(strstr(dat, "\"b64 p32 kvpr/pipelined: H2D link\""));
    free(dat);
    /* the split sweep names its configuration, its legend below the curve */
    snprintf(path, sizeof path, "%s/figs-sweep1.gp", tmp_dir());
    gp = read_text(path);
    assert_non_null(gp);
    assert_non_null(strstr(gp, "\"OPT-125M t4 latency b64 p32 g3\""));
    assert_non_null(strstr(gp, "set key outside below"));
    free(gp);
}

/* The sweep figure comes from results.db: 'kvpr run' stores every split's decode time with the
 * configuration's kvpr run (sweep_l_L, 0 .. the largest split), and the report draws the same
 * data file from them as from simulating the sweep itself (what it does when they are missing). */
static void t_sweep_stored(void **st) {
    (void)st;
    char db[512], path[600];
    static exp_spec s;
    spec_load(&s, "swp", "name = swp\nmodels = OPT-125M\nhardware = t4\nbatch = 8 64\nprompt = 32\ngen = 3\n"
                                 "sweep = batch=64\n");
    int ran, nofit;
    spec_run(&s, "swp", 1, db, sizeof db, &ran, &nofit);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h, "SELECT count(*), count(DISTINCT r.id), max(r.run_key) FROM metrics m JOIN runs r ON r.id = m.run_id"
                                           " WHERE m.name LIKE 'sweep%'", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 33); /* splits 0 .. 32 */
    assert_int_equal(sqlite3_column_int(q, 1), 1);  /* on one run: batch 64's kvpr run */
    assert_non_null(strstr((const char *)sqlite3_column_text(q, 2), "/latency/64/32/"));
    sqlite3_finalize(q);
    sqlite3_close(h);
    FILE *f = tmpfile();
    if (exp_report(&s, db, tmp_dir(), f)) fail_msg("%s", kv_errmsg());
    fclose(f);
    snprintf(path, sizeof path, "%s/swp-sweep1.dat", tmp_dir());
    char *stored = read_text(path);
    assert_non_null(stored);
    /* without them the report simulates the splits: the same file */
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "DELETE FROM metrics WHERE name LIKE 'sweep%'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    unlink(path);
    f = tmpfile();
    if (exp_report(&s, db, tmp_dir(), f)) fail_msg("%s", kv_errmsg());
    fclose(f);
    char *simulated = read_text(path);
    assert_non_null(simulated);
    assert_string_equal(stored, simulated);
    free(stored), free(simulated);
}


/* kv_par: every piece done exactly once, by any number of workers, results in shared memory;
 * a worker that stops fails the loop. A large stored sweep spread over workers stores the same
 * values as one process. */
static int par_square(void *ctx, long i, void **local) {
    long *out = ctx;
    if (!*local) *local = malloc(1); /* a worker's scratch, freed by fini */
    out[i] += i * i + 1;              /* += : a piece done twice would show */
    return i == 4242;                 /* piece 4242 (only asked for below) stops its worker */
}

static void t_par_sweep(void **st) {
    (void)st;
    for (int jobs = 1; jobs <= 5; jobs += 2) {
        long *out = kv_par_map(sizeof(long) * 1000);
        assert_non_null(out);
        assert_int_equal(kv_par_for(1000, jobs, par_square, free, out), KV_OK);
        for (long i = 0; i < 1000; i++) assert_true(out[i] == i * i + 1);
        kv_par_unmap(out, sizeof(long) * 1000);
        out = kv_par_map(sizeof(long) * 5000);
        assert_int_not_equal(kv_par_for(5000, jobs, par_square, free, out), KV_OK);
        kv_par_unmap(out, sizeof(long) * 5000);
    }
    assert_int_equal(kv_par_for(0, 3, par_square, free, NULL), KV_OK);
    char db[2][512];
    static exp_spec s;
    spec_load(&s, "swpar", "name = swpar\nmodels = OPT-125M\nhardware = t4\nbatch = 8\nprompt = 200\ngen = 3\nsweep = batch=8\n");
    char *vals[2];
    for (int k = 0; k < 2; k++) {
        int ran, nofit;
        spec_run(&s, k ? "swpar1" : "swpar0", k ? 3 : 1, db[k], sizeof db[k], &ran, &nofit);
        sqlite3 *h;
        assert_int_equal(sqlite3_open(db[k], &h), SQLITE_OK);
        sqlite3_stmt *q;
        assert_int_equal(sqlite3_prepare_v2(h, "SELECT count(*), group_concat(v, ' ') FROM (SELECT m.name || '=' || printf('%.17g', m.value) AS v"
                                               " FROM metrics m WHERE m.name LIKE 'sweep%' ORDER BY m.name)", -1, &q, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), 201); /* splits 0 .. 200: spread over workers at jobs 3 */
        vals[k] = strdup((const char *)sqlite3_column_text(q, 1));
        sqlite3_finalize(q);
        sqlite3_close(h);
    }
    assert_string_equal(vals[0], vals[1]);
    free(vals[0]), free(vals[1]);
}


/* A large grid's bars: at most 24 panels a figure (the rest in NAME-MODE-2, ...), every image
 * within Cairo's 32767 pixels, and configurations that fit nowhere have no bar (a panel of only
 * those was an empty histogram gnuplot refused, failing the whole report). */
static void t_figures_large(void **st) {
    (void)st;
    char db[512], path[600];
    static exp_spec s;
    spec_load(&s, "big", "name = big\nmodels = OPT-125M OPT-175B\nhardware = t4 l4 a100-40gb-pcie4 h100-pcie rtx4090 v100\n"
                                 "batch = 1 2 3 4 6 8 12 16 24 32 48 64\nprompt = 8 16 24 32 48 64\ngen = 2\npolicies = offload\n");
    int ran, nofit;
    spec_run(&s, "big", 1, db, sizeof db, &ran, &nofit);
    assert_true(ran >= 432 && nofit > 0);
    FILE *f = tmpfile();
    if (exp_report(&s, db, tmp_dir(), f)) fail_msg("%s", kv_errmsg());
    fclose(f);
    int figs = 0, bars = 0;
    for (int k = 1; k <= 4; k++) {
        if (k == 1) snprintf(path, sizeof path, "%s/big-latency.gp", tmp_dir());
        else snprintf(path, sizeof path, "%s/big-latency-%d.gp", tmp_dir(), k);
        char *gp = read_text(path);
        if (!gp) break;
        figs++;
        int w, h;
        const char *t = strstr(gp, "pngcairo size ");
        assert_non_null(t);
        assert_int_equal(sscanf(t, "pngcairo size %d,%d", &w, &h), 2);
        assert_true(h <= 32767 && w <= 32767);
        const char *m = strstr(gp, "multiplot layout ");
        int np = 1;
        if (m) assert_int_equal(sscanf(m, "multiplot layout %d,", &np), 1);
        assert_true(np <= 24);
        free(gp);
        if (k == 1) snprintf(path, sizeof path, "%s/big-latency.png", tmp_dir());
        else snprintf(path, sizeof path, "%s/big-latency-%d.png", tmp_dir(), k);
        assert_int_equal(access(path, F_OK), 0);
        if (k == 1) snprintf(path, sizeof path, "%s/big-latency.dat", tmp_dir());
        else snprintf(path, sizeof path, "%s/big-latency-%d.dat", tmp_dir(), k);
        char *dat = read_text(path);
        assert_non_null(dat);
        for (const char *q = dat; (q = strchr(q, '\n')); q++)
            if (q[1] && q[1] != '\n' && strncmp(q + 1, "config", 6)) bars++;
        assert_null(strstr(dat, " NaN\n")); /* OPT-175B fits none of these GPUs: no bar of its */
        free(dat);
    }
    assert_int_equal(figs, 2); /* the 432 OPT-125M configurations: 36 panels of 12, 24 and 12 */
    assert_int_equal(bars, ran);
}

/* Shards and workers: every run in exactly one hand, hands within one run of each other in size and
 * in experiment order, the same deal every time, and with the policy as the innermost loop (even
 * and odd indices) an even number of hands still gets both policies in near-equal shares. */
static void t_deal(void **st) {
    (void)st;
    enum { N = 4368 };
    static int idx[N], out[N], seen[N];
    for (int i = 0; i < N; i++) idx[i] = i;
    const int ms[] = {1, 2, 3, 8, 13, 64};
    for (size_t c = 0; c < sizeof ms / sizeof ms[0]; c++) {
        int m = ms[c];
        memset(seen, 0, sizeof seen);
        for (int k = 0; k < m; k++) {
            int n = exp_deal(idx, N, k, m, out), even = 0;
            assert_true(n == N / m || n == N / m + 1);
            for (int j = 0; j < n; j++) {
                assert_true(out[j] >= 0 && out[j] < N);
                seen[out[j]]++;
                if (j) assert_true(out[j] > out[j - 1]);
                even += out[j] % 2 == 0;
            }
            if (m > 1 && m <= 13) assert_true(even > 0.4 * n && even < 0.6 * n);
            static int again[N];
            assert_int_equal(exp_deal(idx, N, k, m, again), n);
            assert_memory_equal(out, again, (size_t)n * sizeof *out);
        }
        for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    }
    /* a hand of a hand: the workers of one shard split it the same way */
    int n = exp_deal(idx, N, 3, 8, out), sub[N], total = 0;
    for (int w = 0; w < 2; w++) total += exp_deal(out, n, w, 2, sub);
    assert_int_equal(total, n);
}

/* 'sweep_splits = N': every kvpr configuration's run carries every N-th split (0, N, 2N, ..., up
 * to the largest), each the decode time a direct simulation of that split gives; a configuration
 * the sweep filter matches still gets every split. Bad values are refused. */
static void t_sweep_splits(void **st) {
    (void)st;
    char p[512], db[512];
    spec_file(p, sizeof p, "sws", "name = sws\nmodels = OPT-125M\nhardware = t4\nbatch = 8 64\nprompt = 32\ngen = 3\n"
                                 "sweep = batch=64\nsweep_splits = 16\n");
    static exp_spec s;
    if (exp_parse(p, &s) || exp_check(&s)) fail_msg("%s", kv_errmsg());
    assert_int_equal(s.sweep_splits, 16);
    snprintf(db, sizeof db, "%s/sws.db", tmp_dir());
    unlink(db);
    int ran, nofit;
    exp_opts o = {.jobs = 1, .nshard = 1, .db = db};
    if (exp_execute(&s, &o, &ran, &nofit)) fail_msg("%s", kv_errmsg());
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h, "SELECT r.run_key, count(*) FROM metrics m JOIN runs r ON r.id = m.run_id"
                                           " WHERE m.name LIKE 'sweep%' GROUP BY r.id ORDER BY r.run_key", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_non_null(strstr((const char *)sqlite3_column_text(q, 0), "/latency/64/32/"));
    assert_int_equal(sqlite3_column_int(q, 1), 33); /* the sweep filter's: every split */
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_non_null(strstr((const char *)sqlite3_column_text(q, 0), "/latency/8/32/"));
    assert_int_equal(sqlite3_column_int(q, 1), 3); /* 0, 16, 32 */
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    /* the stored values are those of the splits simulated one by one */
    exp_run *runs;
    int n;
    if (exp_runs(&s, &runs, &n)) fail_msg("%s", kv_errmsg());
    sim_ctx *sx = sim_new();
    int checked = 0;
    for (int i = 0; i < n; i++) {
        if (runs[i].pol != KV_POL_KVPR || s.batch[runs[i].batch] != 8) continue;
        kv_model m;
        hw_profile hp;
        kv_plan pl;
        int *steps;
        if (exp_plan(&s, &runs[i], &m, &hp, &pl, &steps)) fail_msg("%s", kv_errmsg());
        pl.split_steps = NULL;
        for (int l = 0; l <= 32; l += 16) {
            sim_result r;
            pl.split = l;
            if (sim_run(sx, &m, &hp, &pl, &r)) fail_msg("%s", kv_errmsg());
            char sql[200];
            snprintf(sql, sizeof sql, "SELECT value FROM metrics WHERE name = 'sweep_l_%d' AND run_id IN"
                                      " (SELECT id FROM runs WHERE run_key LIKE '%%/latency/8/32/%%')", l);
            assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
            assert_int_equal(sqlite3_step(q), SQLITE_ROW);
            assert_true(sqlite3_column_double(q, 0) == r.decode_s);
            sqlite3_finalize(q);
            checked++;
        }
        free(steps);
    }
    assert_int_equal(checked, 3);
    sim_free(sx);
    free(runs);
    sqlite3_close(h);
    const char *bad[] = {"sweep_splits = 0\n", "sweep_splits = 16 32\n", "sweep_splits = x\n", "sweep_splits =\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[300];
        snprintf(text, sizeof text, "name = b\nmodels = OPT-125M\nhardware = t4\nbatch = 8\nprompt = 32\ngen = 3\n%s", bad[i]);
        kv_status e = exp_parse_text(text, "bad.exp", &s);
        assert_true(e == KV_EINVAL || e == KV_EPARSE);
        assert_non_null(strstr(kv_errmsg(), "sweep_splits"));
    }
}

void group_exp(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_parse), cmocka_unit_test(t_shards_and_reruns), cmocka_unit_test(t_tables),
                                   cmocka_unit_test(t_parse_untrusted), cmocka_unit_test(t_stale_workers),
                                   cmocka_unit_test(t_check_first), cmocka_unit_test(t_heatmap_panels),
                                   cmocka_unit_test(t_figures), cmocka_unit_test(t_deal), cmocka_unit_test(t_sweep_stored),
                                   cmocka_unit_test(t_sweep_splits), cmocka_unit_test(t_par_sweep), cmocka_unit_test(t_figures_large)};
    RUN_GROUP(c, "exp", t);
}
