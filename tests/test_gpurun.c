/* The GPU session, checked without a GPU: the portable kvpr-engine needs only glibc, libstdc++/libgcc
 * and cuBLAS from the machine it runs on; scripts/gpu-traces.sh --dry-run runs every step of the
 * real session on the host backend with a tiny grid and writes what the real one will (names,
 * counts, formats, usable by kvpr calibrate and kvpr compare); and the plan's predicted time of
 * each step fits its deadline, and all of them the session's device time. */
#include <dirent.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests.h"

static void t_portable_link(void **s) {
    (void)s;
    char out[8192];
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine version", KVPR_BUILD_DIR), 0);
    if (!strstr(out, "link: portable")) {
        print_message("  (kvpr-engine here is not the portable build: %s", out);
        test_skip();
    }
    int cuda = strstr(out, "cuda: yes") != NULL;
    assert_int_equal(run_cmd(out, sizeof out, "ldd %s/kvpr-engine", KVPR_BUILD_DIR), 0);
    /* glibc's parts, the loader and vdso, the C++ runtime the CUDA runtime needs, and cuBLAS */
    static const char *allowed[] = {"linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6",       "libm.so.6",
                                    "libpthread.so.0", "libdl.so.2",          "librt.so.1",       "libstdc++.so.6",
                                    "libgcc_s.so.1",   "libcublas.so.13",     "libcublasLt.so.13"};
    int cublas = 0, n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[256];
        if (sscanf(line, " %255s", name) != 1) continue;
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        int ok = 0;
        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) ok |= !strcmp(base, allowed[i]);
        if (!ok || strstr(line, "not found")) fail_msg("kvpr-engine needs '%s' (%s), which a bare CUDA machine does not have", base, line);
        cublas |= !strncmp(base, "libcublas", 9);
        n++;
    }
    assert_true(n >= 3);
    assert_int_equal(cublas, cuda); /* cuBLAS exactly when the binary has the CUDA backend */
}

static int count_lines(const char *path, const char *skip_prefix) {
    char *t = read_text(path);
    if (!t) fail_msg("%s is missing", path);
    int n = 0;
    for (char *l = t; *l;) {
        char *e = strchr(l, '\n');
        if (!skip_prefix || strncmp(l, skip_prefix, strlen(skip_prefix))) n++;
        if (!e) break;
        l = e + 1;
    }
    free(t);
    return n;
}

/* loads a dump into a fresh in-memory database; returns the number from sql */
static long sql_count(const char *dump, const char *sql) {
    char *t = read_text(dump);
    if (!t) fail_msg("%s is missing", dump);
    sqlite3 *h;
    sqlite3_open(":memory:", &h);
    char *em = NULL;
    if (sqlite3_exec(h, t, NULL, NULL, &em) != SQLITE_OK) fail_msg("%s does not load: %s", dump, em ? em : "?");
    free(t);
    sqlite3_stmt *q;
    long n = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return n;
}

static void t_gpu_script_dry_run(void **s) {
    (void)s;
    char out[1 << 15], dir[512], f[700];
    snprintf(dir, sizeof dir, "%s/gpu-traces", tmp_dir());
    int rc = run_cmd(out, sizeof out, "rm -rf %s && OUT=%s/out WORK=%s/work ENGINE=%s/kvpr-engine %s/scripts/gpu-traces.sh --dry-run", dir,
                     dir, dir, KVPR_BUILD_DIR, src_dir());
    if (rc != 0) fail_msg("dry run failed (%d):\n%s", rc, out);
    /* exactly these files, at most 6 per step, straight in OUT: no database, -wal, -shm or .tmp */
    static const char *steps[] = {"check", "bench", "runs-a", "runs-b"};
    static const char *files[] = {"check-device.txt", "check-nvidia-smi.txt", "check-selftest.txt", "check-sanitizer.txt",
                                  "check-log.txt",    "bench.csv",            "bench.txt",          "bench.sql",
                                  "bench-log.txt",    "runs-a.jsonl",         "runs-a.sql",         "runs-a-log.txt",
                                  "runs-b.jsonl",     "runs-b.sql",           "runs-b-log.txt"};
    snprintf(f, sizeof f, "%s/out", dir);
    DIR *d = opendir(f);
    assert_non_null(d);
    int per[4] = {0}, total = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        int known = 0;
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) known |= !strcmp(e->d_name, files[i]);
        if (!known) fail_msg("unexpected file in OUT: %s", e->d_name);
        for (int k = 0; k < 4; k++) per[k] += !strncmp(e->d_name, steps[k], strlen(steps[k]));
        total++;
    }
    closedir(d);
    assert_int_equal(total, (int)(sizeof files / sizeof files[0]));
    for (int k = 0; k < 4; k++) assert_true(per[k] >= 3 && per[k] <= 6);
    /* the steps' logs: the plan's prediction first, what each command took, the step's total */
    for (int k = 0; k < 4; k++) {
        snprintf(f, sizeof f, "%s/out/%s-log.txt", dir, steps[k]);
        char *t = read_text(f);
        assert_non_null(t);
        int p, b;
        char name[32];
        assert_int_equal(sscanf(t, "plan: %31s predicted %d s on h100-sxm, budget %d s", name, &p, &b), 3);
        assert_string_equal(name, steps[k]);
        assert_true(p >= 0 && b > 0);
        assert_non_null(strstr(t, "took"));
        assert_null(strstr(t, "rc 124")); /* nothing ran into its deadline */
        free(t);
    }
    /* check: device, selftest, sanitizer passes */
    snprintf(f, sizeof f, "%s/out/check-device.txt", dir);
    char *t = read_text(f);
    assert_non_null(strstr(t, "(link: "));
    assert_non_null(strstr(t, "== ldd =="));
    assert_non_null(strstr(t, "host backend: "));
    assert_non_null(strstr(t, "== nvidia-smi: negotiated link =="));
    free(t);
    snprintf(f, sizeof f, "%s/out/check-selftest.txt", dir);
    t = read_text(f);
    int passed = 0, failed = -1;
    const char *sl = strstr(t, "selftest: ");
    assert_non_null(sl);
    assert_int_equal(sscanf(sl, "selftest: %d passed, %d failed", &passed, &failed), 2);
    assert_true(passed > 5 && failed == 0);
    free(t);
    snprintf(f, sizeof f, "%s/out/check-sanitizer.txt", dir);
    t = read_text(f);
    assert_non_null(strstr(t, "== memcheck: exit 0 =="));
    assert_non_null(strstr(t, "== racecheck: exit 0 =="));
    /* memcheck over the quick selftest; racecheck over its kernels alone (fewer checks, no
     * end-to-end runs) */
    const char *mc = strstr(t, "selftest (quick) on "), *rk = strstr(t, "selftest (quick) (kernels) on ");
    assert_non_null(mc);
    assert_non_null(rk);
    assert_true(mc < rk);
    int pm = 0, pr = 0, fm = -1, fr = -1;
    assert_int_equal(sscanf(strstr(mc, "selftest: "), "selftest: %d passed, %d failed", &pm, &fm), 2);
    assert_int_equal(sscanf(strstr(rk, "selftest: "), "selftest: %d passed, %d failed", &pr, &fr), 2);
    assert_true(fm == 0 && fr == 0 && pr > 5 && pr < pm);
    assert_null(strstr(rk, "test-mha"));
    free(t);
    /* bench: CSV rows = measurements in the dump; every kind calibration reads; the plateau fields */
    snprintf(f, sizeof f, "%s/out/bench.csv", dir);
    int rows = count_lines(f, "#") - 1;
    t = read_text(f);
    assert_non_null(strstr(t, "\nkind,params,x,value,unit\n"));
    static const char *kinds[] = {"copy_h2d_pinned,",        "copy_d2h_pinned,", "copy_h2d_pageable,", "copy_h2d_duplex_pinned,",
                                  "copy_d2h_duplex_pinned,", "copy_d2d,",        "gemm_time,",         "attn_time,",
                                  "link_field,"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strstr(t, kinds[i])) fail_msg("bench.csv has no %s rows", kinds[i]);
    free(t);
    snprintf(f, sizeof f, "%s/out/bench.sql", dir);
    assert_true(rows > 50);
    assert_int_equal(sql_count(f, "SELECT count(*) FROM measurements"), rows);
    snprintf(f, sizeof f, "%s/out/bench.txt", dir);
    t = read_text(f);
    assert_non_null(strstr(t, "link.h2d.bandwidth_gbps"));
    assert_non_null(strstr(t, "link.d2h.duplex_factor"));
    free(t);
    /* runs: one JSON object per run (6 per cell: offload, kvpr at four splits, gpu), the same runs in
     * the dump with every span */
    for (int k = 2; k < 4; k++) {
        snprintf(f, sizeof f, "%s/out/%s.jsonl", dir, steps[k]);
        t = read_text(f);
        int nrun = 0;
        long spans = 0;
        for (char *l = t, *e; l && *l; l = e ? e + 1 : NULL) {
            e = strchr(l, '\n');
            if (e) *e = 0;
            json_error_t je;
            json_t *o = json_loads(l, 0, &je);
            if (!json_is_object(o)) fail_msg("%s line %d is not a JSON object: %s", steps[k], nrun + 1, je.text);
            assert_true(json_number_value(json_object_get(o, "decode_s")) > 0);
            assert_non_null(json_string_value(json_object_get(o, "policy")));
            spans += (long)json_integer_value(json_object_get(o, "spans"));
            json_decref(o);
            nrun++;
        }
        free(t);
        assert_int_equal(nrun, 6);
        snprintf(f, sizeof f, "%s/out/%s.sql", dir, steps[k]);
        assert_int_equal(sql_count(f, "SELECT count(*) FROM runs WHERE kind = 'engine'"), nrun);
        assert_int_equal(sql_count(f, "SELECT count(*) FROM spans"), spans);
    }
    /* the steps' dumps merged into one traces.sql (kvpr merge), and what the next session does with
     * them works on these */
    assert_int_equal(run_cmd(out, sizeof out, "ENGINE=%s/kvpr-engine %s/scripts/gpu-traces.sh --collect %s/out", KVPR_BUILD_DIR, src_dir(), dir),
                     0);
    snprintf(f, sizeof f, "%s/out/traces.sql", dir);
    assert_int_equal(sql_count(f, "SELECT count(*) FROM runs WHERE kind = 'engine'"), 12);
    assert_int_equal(sql_count(f, "SELECT count(*) FROM measurements"), rows);
    assert_int_equal(run_cmd(out, sizeof out, "cd %s && %s calibrate --from out/bench.sql --base h100-sxm --out cal.json --db cal.db --force", dir,
                             kvpr_bin()),
                     0);
    assert_int_equal(run_cmd(out, sizeof out, "cd %s && %s compare --profile h100-sxm --from out/runs-b.sql --plots plots", dir, kvpr_bin()), 0);
    assert_non_null(strstr(out, "engine runs re-simulated"));
}

/* The real session's plan: each step's predicted time inside its deadline, every deadline well inside
 * the 10 minutes a command may run, and all of them inside the session's device time (15 minutes,
 * of which the machine's start takes one or two). */
static void t_gpu_script_plan(void **s) {
    (void)s;
    char out[8192];
    assert_int_equal(run_cmd(out, sizeof out, "ENGINE=%s/kvpr-engine %s/scripts/gpu-traces.sh --plan", KVPR_BUILD_DIR, src_dir()), 0);
    int steps = 0, sum_p = 0, sum_b = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[32];
        int p, b;
        if (sscanf(line, "step %31s predicted %d s budget %d s", name, &p, &b) != 3) continue;
        if (!(p > 0 && p < b)) fail_msg("step %s: predicted %d s, budget %d s", name, p, b);
        assert_true(b <= 300);
        sum_p += p, sum_b += b, steps++;
    }
    assert_int_equal(steps, 4);
    assert_true(sum_b <= 12 * 60);
    assert_true(sum_p <= 9 * 60);
}

void group_gpurun(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_portable_link), cmocka_unit_test(t_gpu_script_plan),
                                   cmocka_unit_test(t_gpu_script_dry_run)};
    RUN_GROUP(c, "gpurun", t);
}
