/* Untrusted input: experiment files, config.json files, profiles and trace dumps come from other
 * people. They never run a command, reach a file outside the output they name, hang the tool or
 * leave partial output; every failure is one escaped line with exit status 2 (bad input) or 1. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../core/kv_io.h"
#include "../core/kv_str.h"
#include "../exp/exp.h"
#include "../hwmodel/calib.h"
#include "tests.h"

static char out[1 << 16];

/* A fresh directory under the test directory, for commands run inside it. */
static void subdir(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmp_dir(), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    assert_int_equal(system(cmd), 0);
}

static int exists(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* The failure is one "kvpr: " line: no newline inside it, no control characters at all. */
static void one_line(const char *what) {
    size_t n = strlen(out);
    if (strncmp(out, "kvpr: ", 6) != 0 || n == 0 || strchr(out, '\n') != out + n - 1)
        fail_msg("%s: not one 'kvpr: ' line:\n%s", what, out);
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) fail_msg("%s: control character 0x%02x in: %s", what, out[i], out);
}

static void expect_rc(int want, const char *needle, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect_rc(int want, const char *needle, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = run_cmd(out, sizeof out, "%s", cmd);
    if (rc != want || (needle && !strstr(out, needle)))
        fail_msg("%s: exit %d, wanted %d with '%s'; output:\n%s", cmd, rc, want, needle ? needle : "", out);
    if (want != 0) one_line(cmd);
}

static const char *TINY_EXP = "models = OPT-125M\nhardware = t4\nbatch = 2\nprompt = 16\ngen = 3\n";

/* items 1, 2, 4: names never reach a shell or leave --plots; titles are gnuplot literals */
static void t_gnuplot_injection(void **s) {
    (void)s;
    char d[600], f[700];
    subdir(d, sizeof d, "inject");
    snprintf(f, sizeof f, "%s/e1.exp", d);
    char text[1000];
    snprintf(text, sizeof text, "name = x';touch INJECTED;'\n%s", TINY_EXP);
    write_text(f, text);
    expect_rc(2, "must be 1 to 63 characters", "cd %s && %s run e1.exp --db r.db --plots plots --jobs 1", d, kvpr_bin());
    assert_false(exists(d, "INJECTED"));
    /* a path in the name would write figures outside --plots */
    snprintf(f, sizeof f, "%s/plots", d);
    mkdir(f, 0755);
    snprintf(f, sizeof f, "%s/e2.exp", d);
    snprintf(text, sizeof text, "name = ../escaped\n%s", TINY_EXP);
    write_text(f, text);
    expect_rc(2, "name '../escaped' must be", "cd %s && %s run e2.exp --db r.db --plots plots --jobs 1", d, kvpr_bin());
    assert_false(exists(d, "escaped-latency.dat"));
    assert_false(exists(d, "escaped-latency.gp"));
    /* a title that closes gnuplot's quote: drawn as text, never run */
    snprintf(f, sizeof f, "%s/e3.exp", d);
    snprintf(text, sizeof text, "name = ok\ntitle = '; system \"touch INJECTED2\"; print '`touch INJECTED3`\n%s", TINY_EXP);
    write_text(f, text);
    expect_rc(0, "== ok:", "cd %s && %s run e3.exp --db r.db --plots plots --jobs 1", d, kvpr_bin());
    assert_false(exists(d, "INJECTED2"));
    assert_false(exists(d, "INJECTED3"));
    assert_true(exists(d, "plots/ok-latency.gp"));
    /* a config.json's _name_or_path reaches the figures of kvpr validate */
    snprintf(f, sizeof f, "%s/evil-config.json", d);
    write_text(f, "{\"_name_or_path\": \"x'; system \\\"touch INJECTED4\\\"; '\", \"model_type\": \"opt\", \"hidden_size\": 768,"
                  " \"num_hidden_layers\": 2, \"num_attention_heads\": 12, \"ffn_dim\": 3072, \"vocab_size\": 50272,"
                  " \"max_position_embeddings\": 2048}");
    snprintf(f, sizeof f, "%s/grid.json", d);
    write_text(f, "{\"models\": [\"./evil-config.json\"], \"hardware\": [\"t4\"], \"batch\": [2], \"prompt\": [16], \"gen\": [3],"
                  " \"mode\": [\"latency\"], \"schedulers\": [\"paper\"]}");
    expect_rc(0, "regret", "cd %s && %s validate --grid grid.json --no-db --quiet --plots vplots", d, kvpr_bin());
    assert_false(exists(d, "INJECTED4"));
    assert_true(exists(d, "vplots/validate-first.gp"));
    /* the quoting itself */
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    exp_gp_str(m, "'it's\na `test` @x \"$y\" \\");
    fclose(m);
    assert_string_equal(buf, "\"\\047it\\047s a \\140test\\140 \\100x \\042\\044y\\042 \\134\"");
    free(buf);
    exp_fig F;
    assert_int_equal(exp_fig_open(&F, d, "a';b", 1), KV_EINVAL);
    assert_int_equal(exp_fig_open(&F, d, "../a", 1), KV_EINVAL);
}

/* item 3: a trace dump is data, not a program */
static void t_dump_cannot_run_sql(void **s) {
    (void)s;
    char d[600], db[700], sql[700], q[1600];
    subdir(d, sizeof d, "dump");
    snprintf(db, sizeof db, "%s/results.db", d);
    kv_db *h;
    assert_int_equal(db_open(db, 1000, &h), KV_OK);
    db_run_info in = {.kind = "sim", .model = "m", .hardware = "h"};
    int64_t id;
    assert_int_equal(db_run_begin(h, &in, &id), KV_OK);
    assert_int_equal(db_run_commit(h), KV_OK);
    db_close(h);
    /* a dump as sqlite3 .dump writes it, with an attack at its end */
    snprintf(sql, sizeof sql, "%s/traces.sql", d);
    snprintf(q, sizeof q,
             "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"
             "CREATE TABLE measurements(id INTEGER PRIMARY KEY, created TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,"
             " params TEXT NOT NULL, x REAL, value REAL NOT NULL, unit TEXT NOT NULL);\n"
             "INSERT INTO measurements VALUES(1,'2026-01-01','gpu','copy_h2d_pinned','{}',1e6,1e-4,'s');\nCOMMIT;\n"
             "ATTACH '%s' AS v; DELETE FROM v.runs;\n", db);
    write_text(sql, q);
    expect_rc(2, "not a plain results database dump", "cd %s && %s calibrate --from traces.sql --base t4 --out cal.json --db results.db", d,
              kvpr_bin());
    snprintf(q, sizeof q, "sqlite3 %s 'SELECT count(*) FROM runs'", db);
    assert_int_equal(run_cmd(out, sizeof out, "%s", q), 0);
    assert_string_equal(out, "1\n");
    assert_false(exists(d, "cal.json"));
    /* everything beyond tables and rows is refused, before it runs */
    const char *bad[] = {
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) INSERT INTO runs(x) SELECT x FROM c;",
        "VACUUM INTO 'VACUUMED.db';",
        "CREATE TABLE runs(x); CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM runs; END;",
        "CREATE VIEW runs AS SELECT 1;",
        "CREATE TABLE notes(x);",
        "CREATE TEMP TABLE runs(x);",
        "PRAGMA writable_schema=1;",
        "SELECT load_extension('/tmp/x.so');",
        "CREATE TABLE runs(x); INSERT INTO runs VALUES(zeroblob(100));",
        "CREATE TABLE runs(x); INSERT INTO runs VALUES(1); DELETE FROM runs;",
        "CREATE VIRTUAL TABLE runs USING fts5(x);",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sqlite3 *m = NULL;
        kv_status st = hw_calib_load_dump(bad[i], "bad.sql", &m);
        if (st != KV_EPARSE) fail_msg("dump '%s' was accepted", bad[i]);
    }
    assert_int_equal(access("VACUUMED.db", F_OK), -1);
    /* the statements .dump writes still load */
    struct sqlite3 *m = NULL;
    assert_int_equal(hw_calib_load_dump("PRAGMA foreign_keys=OFF; BEGIN TRANSACTION; CREATE TABLE runs(id INTEGER PRIMARY KEY,"
                                        " kind TEXT CHECK(kind IN ('sim','engine')), run_key TEXT); INSERT INTO runs"
                                        " VALUES(1,'sim',replace('a\\nb','\\n',char(10))); CREATE UNIQUE INDEX runs_key ON"
                                        " runs(run_key) WHERE run_key IS NOT NULL; COMMIT;",
                                        "ok.sql", &m),
                     KV_OK);
    sqlite3_close(m);
}

/* item 5: messages quote keys and names from files, escaped */
static void t_errors_escaped(void **s) {
    (void)s;
    kv_errorf(KV_EPARSE, "key '%s'", "a\nb\x1b[31mc\xc2\x9b\xff");
    assert_string_equal(kv_errmsg(), "key 'a\\nb\\x1b[31mc\\u009b\\xff'");
    kv_errctx(KV_EPARSE, "file\r%s: ", "\x07");
    assert_string_equal(kv_errmsg(), "file\\r\\x07: key 'a\\nb\\x1b[31mc\\u009b\\xff'");
    char buf[8];
    assert_int_equal(kv_str_copy(buf, sizeof buf, "abcdef\xc3\xa9"), 1); /* never half a character */
    assert_string_equal(buf, "abcdef");
    char d[600], f[700];
    subdir(d, sizeof d, "esc");
    snprintf(f, sizeof f, "%s/hw.json", d);
    write_text(f, "{\"name\": \"x\", \"gpu\": {\"name\": \"g\", \"turbo\\n\\u001b[31mboost\": 1}}");
    expect_rc(2, "unknown key 'gpu.turbo\\n\\x1b[31mboost'", "%s hw show %s", kvpr_bin(), f);
    expect_rc(2, "unknown command 'a\\nb'", "%s \"$(printf 'a\\nb')\"", kvpr_bin());
}

/* item 11: the grid's nb is range-checked before it becomes an int */
static void t_grid_nb(void **s) {
    (void)s;
    char d[600], f[700];
    subdir(d, sizeof d, "grid");
    snprintf(f, sizeof f, "%s/grid.json", d);
    write_text(f, "{\"models\": [\"OPT-125M\"], \"hardware\": [\"t4\"], \"batch\": [2], \"prompt\": [16], \"gen\": [3],"
                  " \"mode\": [\"throughput\"], \"nb\": 4294967297, \"schedulers\": [\"paper\"]}");
    expect_rc(2, "'nb' must be an integer in [1, 64]", "%s validate --grid %s --no-db --plots %s/p", kvpr_bin(), f, d);
}

/* item 12: a FIFO (or anything but a regular file) given as input is refused, not waited on */
static void t_fifo_inputs(void **s) {
    (void)s;
    char d[600], f[700];
    subdir(d, sizeof d, "fifo");
    const char *names[] = {"m.json", "p.json", "e.exp", "g.json", "t.sql"};
    for (int i = 0; i < 5; i++) {
        snprintf(f, sizeof f, "%s/%s", d, names[i]);
        assert_int_equal(mkfifo(f, 0600), 0);
    }
    expect_rc(2, "not a regular file", "cd %s && timeout 20 %s model show ./m.json", d, kvpr_bin());
    expect_rc(2, "not a regular file", "cd %s && timeout 20 %s hw show ./p.json", d, kvpr_bin());
    expect_rc(2, "not a regular file", "cd %s && timeout 20 %s run ./e.exp --db r.db", d, kvpr_bin());
    expect_rc(2, "not a regular file", "cd %s && timeout 20 %s validate --grid g.json --no-db --plots p", d, kvpr_bin());
    expect_rc(2, "not a regular file", "cd %s && timeout 20 %s calibrate --from t.sql --base t4 --out c.json --db r.db", d, kvpr_bin());
    expect_rc(2, "it is a directory", "cd %s && timeout 20 %s model show %s/", d, kvpr_bin(), d);
    FILE *fp;
    assert_int_equal(kv_io_open_read(d, &fp), KV_EINVAL);
}

/* item 16: kvpr run waits for a locked database only as long as KVPR_DB_TIMEOUT_MS says */
static void t_run_db_timeout(void **s) {
    (void)s;
    char d[600], f[700];
    subdir(d, sizeof d, "timeout");
    snprintf(f, sizeof f, "%s/t.exp", d);
    char text[600];
    snprintf(text, sizeof text, "name = t\n%s", TINY_EXP);
    write_text(f, text);
    expect_rc(0, "", "cd %s && %s run t.exp --db r.db --jobs 1 --no-report", d, kvpr_bin()); /* creates the database */
    /* another process holds the write lock for 4 s; the old fixed 30 s wait outlasted it */
    expect_rc(1, "is locked by another process",
              "cd %s && ((echo 'BEGIN EXCLUSIVE; SELECT 1;'; sleep 4) | sqlite3 r.db >/dev/null) & sleep 1; cd %s && "
              "KVPR_DB_TIMEOUT_MS=200 %s run t.exp --db r.db --jobs 1 --no-report; rc=$?; wait; exit $rc",
              d, d, kvpr_bin());
    expect_rc(2, "KVPR_DB_TIMEOUT_MS must be an integer", "cd %s && KVPR_DB_TIMEOUT_MS=soon %s run t.exp --db r.db --no-report", d,
              kvpr_bin());
}

/* Runs a command with files limited to 1 KiB (writes past it fail with EFBIG, as on a full disk). */
static int run_limited(const char *dir, const char *args) {
    return run_cmd(out, sizeof out, "cd %s && sh -c \"trap '' XFSZ; ulimit -f 2; exec %s %s\"", dir, kvpr_bin(), args);
}

/* No output of a failed write: none of names exists, and nothing is left that is empty or a
 * temporary file. (Files written completely before the failure may stay.) */
static void nothing_left(const char *dir, const char *const *names) {
    for (; *names; names++)
        if (exists(dir, *names)) fail_msg("%s/%s was left behind", dir, *names);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "find %s \\( -name '.*tmp-*' -o -size 0 \\) -type f ! -name '*-wal' ! -name '*-shm' | wc -l", dir);
    assert_int_equal(run_cmd(out, sizeof out, "%s", cmd), 0);
    if (atoi(out) != 0) {
        snprintf(cmd, sizeof cmd, "find %s -type f -ls", dir);
        run_cmd(out, sizeof out, "%s", cmd);
        fail_msg("empty or temporary files left in %s:\n%s", dir, out);
    }
}

/* item 17: a full disk fails the command and leaves no partial file */
static void t_full_disk(void **s) {
    (void)s;
    char d[600];
    subdir(d, sizeof d, "full");
    int rc = run_limited(d, "plan --model OPT-1.3B --hw t4 --batch 8 --prompt 256 --gen 8 --write-lp big.lp");
    if (rc == 0) fail_msg("plan --write-lp on a full disk exited 0:\n%s", out);
    one_line("plan --write-lp on a full disk");
    const char *lp[] = {"big.lp", NULL};
    nothing_left(d, lp);
    /* figures: the sweep's data file alone is larger than the limit */
    char f[700];
    snprintf(f, sizeof f, "%s/grid.json", d);
    write_text(f, "{\"models\": [\"OPT-125M\"], \"hardware\": [\"t4\"], \"batch\": [2], \"prompt\": [200], \"gen\": [3],"
                  " \"mode\": [\"latency\"], \"schedulers\": [\"paper\"]}");
    rc = run_limited(d, "validate --grid grid.json --no-db --quiet --plots vp");
    if (rc == 0) fail_msg("validate --plots on a full disk exited 0:\n%s", out);
    const char *vp[] = {"vp/validate-first.dat", "vp/validate-first.gp", "vp/validate-first.png", "vp/validate-first.svg", NULL};
    nothing_left(d, vp);
    /* report: the database is written without the limit, the figures with it */
    snprintf(f, sizeof f, "%s/r.exp", d);
    char text[600];
    snprintf(text, sizeof text, "name = r\nprompt = 16 32 64 128 256\nmodels = OPT-125M OPT-1.3B\nhardware = t4 a100-40gb-pcie4\n"
                                "batch = 2\ngen = 3\n");
    write_text(f, text);
    expect_rc(0, "", "cd %s && %s run r.exp --db r.db --jobs 1 --no-report", d, kvpr_bin());
    /* out of WAL mode, so that reading it needs no -shm file (which the limit would stop) */
    expect_rc(0, "delete", "cd %s && sqlite3 r.db 'PRAGMA journal_mode=DELETE'", d);
    rc = run_limited(d, "report r.exp --db r.db --plots rp");
    if (!strstr(out, "cannot write rp/")) fail_msg("report --plots on a full disk: %s", out);
    if (rc == 0) fail_msg("report --plots on a full disk exited 0:\n%s", out);
    const char *rp[] = {"rp/r-latency.png", "rp/r-latency.svg", NULL};
    nothing_left(d, rp);
    /* the writer itself: an existing file keeps its old content when the new one does not fit */
    snprintf(f, sizeof f, "%s/keep.txt", d);
    write_text(f, "old content\n");
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        static char big[100000];
        memset(big, 'x', sizeof big);
        _exit(kv_io_write_all(f, big, sizeof big) == KV_EIO ? 0 : 1);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    char *t = read_text(f);
    assert_string_equal(t, "old content\n");
    free(t);
    const char *none[] = {NULL};
    nothing_left(d, none);
}

/* item 17, for real: a tiny file system, where it can be mounted (root, outside most CI) */
static void t_full_disk_tmpfs(void **s) {
    (void)s;
    char d[600];
    subdir(d, sizeof d, "tmpfs");
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=16k kvpr-test %s 2>/dev/null", d);
    if (geteuid() != 0 || system(cmd) != 0) test_skip();
    /* fill it, so that any new file fails at its first block */
    snprintf(cmd, sizeof cmd, "dd if=/dev/zero of=%s/filler bs=4k count=16 2>/dev/null; true", d);
    assert_int_equal(system(cmd), 0);
    int rc1 = run_cmd(out, sizeof out, "cd %s && %s plan --model OPT-1.3B --hw t4 --batch 8 --prompt 256 --gen 8 --write-lp x.lp",
                      d, kvpr_bin());
    char o1[1024];
    snprintf(o1, sizeof o1, "%.1000s", out);
    char db[700]; /* the measurements the calib group wrote */
    snprintf(db, sizeof db, "%s/calib.db", tmp_dir());
    int rc2 = run_cmd(out, sizeof out, "%s calibrate --from %s --base a100-40gb-pcie4 --out %s/cal.json --db %s/cal.db", kvpr_bin(),
                      db, d, tmp_dir());
    int l1 = exists(d, "x.lp"), l2 = exists(d, "cal.json");
    snprintf(cmd, sizeof cmd, "umount %s", d);
    assert_int_equal(system(cmd), 0);
    if (rc1 == 0 || l1) fail_msg("plan on a full file system: exit %d, file left %d: %s", rc1, l1, o1);
    if (access(db, F_OK) == 0 && (rc2 == 0 || l2)) fail_msg("calibrate on a full file system: exit %d, file left %d: %s", rc2, l2, out);
}

/* item 18: a report reads a database it may not write */
static void t_readonly_report(void **s) {
    (void)s;
    char d[600], f[700];
    snprintf(d, sizeof d, "/tmp/kvpr-ro-%d", (int)getpid());
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && chmod 755 %s", d, d, d);
    assert_int_equal(system(cmd), 0);
    snprintf(f, sizeof f, "%s/t.exp", d);
    char text[600];
    snprintf(text, sizeof text, "name = ro\n%s", TINY_EXP);
    write_text(f, text);
    chmod(f, 0644);
    expect_rc(0, "", "cd %s && %s run t.exp --db r.db --jobs 1 --no-report", d, kvpr_bin());
    /* read-only file in a read-only directory, no -shm left: SQLite alone cannot open it */
    snprintf(cmd, sizeof cmd, "cd %s && rm -f r.db-wal r.db-shm && chmod 444 r.db && chmod 555 %s", d, d);
    assert_int_equal(system(cmd), 0);
    const char *as = geteuid() == 0 ? "su nobody -s /bin/sh -c" : "sh -c";
    int rc = run_cmd(out, sizeof out, "%s 'cd %s && %s report t.exp --db r.db --plots /tmp/kvpr-ro-plots-%d'", as, d, kvpr_bin(),
                     (int)getpid());
    snprintf(cmd, sizeof cmd, "chmod 755 %s; rm -rf %s /tmp/kvpr-ro-plots-%d", d, d, (int)getpid());
    if (system(cmd) != 0) fail_msg("cleanup of %s", d);
    if (rc != 0 || !strstr(out, "OPT-125M t4 latency b2 p16 g3")) fail_msg("report on a read-only database: exit %d:\n%s", rc, out);
}

/* item 18 through the command: a foreign or damaged database is refused and left as it was */
static void t_foreign_db_cmd(void **s) {
    (void)s;
    char d[600];
    subdir(d, sizeof d, "foreign");
    const char *sim = "sim --model OPT-125M --hw t4 --batch 2 --prompt 16 --gen 3";
    expect_rc(0, "", "cd %s && sqlite3 notes.db 'CREATE TABLE notes(x); INSERT INTO notes VALUES(1);'", d);
    expect_rc(2, "not a kvpr results database", "cd %s && %s %s --db notes.db", d, kvpr_bin(), sim);
    expect_rc(0, "delete\n0\n", "cd %s && sqlite3 notes.db 'PRAGMA journal_mode; PRAGMA user_version;'", d);
    /* a kvpr database with a page of garbage in the middle */
    expect_rc(0, "", "cd %s && %s %s --db c.db >/dev/null && %s %s --policy offload --db c.db >/dev/null", d, kvpr_bin(), sim, kvpr_bin(), sim);
    expect_rc(0, "", "cd %s && sqlite3 c.db 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null && n=$(($(stat -c %%s c.db) / 4096 / 2)) && "
                     "head -c 4096 /dev/urandom | dd of=c.db bs=4096 seek=$n conv=notrunc 2>/dev/null && md5sum c.db > c.md5",
              d);
    expect_rc(1, "is damaged", "cd %s && %s %s --db c.db", d, kvpr_bin(), sim);
    expect_rc(0, "OK", "cd %s && md5sum -c c.md5", d);
    /* output paths: a directory or a missing directory is bad input */
    expect_rc(2, "it is a directory", "cd %s && %s %s --db .", d, kvpr_bin(), sim);
    expect_rc(2, "does not exist", "cd %s && %s %s --db nodir/r.db", d, kvpr_bin(), sim);
}

/* item 20: exit codes of bad output paths and a bad --measured */
static void t_exit_codes(void **s) {
    (void)s;
    char d[600];
    subdir(d, sizeof d, "codes");
    expect_rc(2, "does not exist", "cd %s && %s plan --model OPT-1.3B --hw t4 --batch 8 --prompt 64 --gen 4 --write-lp nodir/x.lp", d,
              kvpr_bin());
    expect_rc(2, "it is a directory", "cd %s && %s plan --model OPT-1.3B --hw t4 --batch 8 --prompt 64 --gen 4 --write-lp .", d, kvpr_bin());
    expect_rc(2, "it is a directory", "cd %s && %s calibrate --from r.db --base t4 --out . --db r.db", d, kvpr_bin());
    expect_rc(2, "parent directory does not exist", "cd %s && %s validate --no-db --plots nodir/p", d, kvpr_bin());
    expect_rc(0, "", "cd %s && %s sim --model OPT-125M --hw t4 --batch 2 --prompt 16 --gen 3 --db r.db >/dev/null", d, kvpr_bin());
    expect_rc(2, "--measured takes 'all' or run ids", "cd %s && %s compare --profile t4 --db r.db --measured ,", d, kvpr_bin());
    assert_null(strstr(out, "syntax error"));
    expect_rc(2, "--measured takes 'all' or run ids", "cd %s && %s compare --profile t4 --db r.db --measured 1,,2", d, kvpr_bin());
    expect_rc(2, "cannot merge", "cd %s && %s merge r.db r.db", d, kvpr_bin());
    assert_null(strstr(out, "locked"));
}

void group_input(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_gnuplot_injection), cmocka_unit_test(t_dump_cannot_run_sql),
                                   cmocka_unit_test(t_errors_escaped),    cmocka_unit_test(t_grid_nb),
                                   cmocka_unit_test(t_fifo_inputs),       cmocka_unit_test(t_run_db_timeout),
                                   cmocka_unit_test(t_full_disk),         cmocka_unit_test(t_full_disk_tmpfs),
                                   cmocka_unit_test(t_readonly_report),   cmocka_unit_test(t_foreign_db_cmd),
                                   cmocka_unit_test(t_exit_codes)};
    RUN_GROUP(c, "input", t);
}
