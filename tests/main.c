/* kvpr-tests: runs every group and closes with "kvpr-tests: N passed, N failed". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "tests.h"

#ifndef KVPR_DATADIR
#define KVPR_DATADIR "."
#endif

int tests_skipped;

const char *kvpr_bin(void) { return KVPR_BUILD "/kvpr"; }
const char *src_dir(void) { return KVPR_DATADIR; }

const char *tmp_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/kvpr-tests-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

int run_cmd(char *out, size_t n, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[4200];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

kv_model mdl(const char *name) {
    kv_model m;
    if (kv_model_find(name, &m) != KV_OK) fail_msg("%s", kv_errmsg());
    return m;
}

hw_profile hwp(const char *name) {
    hw_profile p;
    if (hw_profile_resolve(name, &p) != KV_OK) fail_msg("%s", kv_errmsg());
    return p;
}

void tgroup(tcount *c, const char *name, const struct CMUnitTest *t, size_t n) {
    int failed = _cmocka_run_group_tests(name, t, n, NULL, NULL);
    c->run += (int)n;
    c->failed += failed;
}

int main(void) {
    tcount c = {0, 0};
    setenv("KVPR_PROFILES", KVPR_DATADIR "/hwmodel/profiles", 1);
    /* KVPR_TEST=t_name* runs only the matching tests (cmocka's filter; the others count as passed) */
    if (getenv("KVPR_TEST")) cmocka_set_test_filter(getenv("KVPR_TEST"));
    group_model(&c);
    group_profile(&c);
    group_cost(&c);
    group_db(&c);
    group_sim(&c);
    group_graph(&c);
    group_sched(&c);
    group_search(&c);
    group_exp(&c);
    group_engine(&c);
    group_gpurun(&c);
    group_calib(&c);
    group_cli(&c);
    group_input(&c);
    group_quant(&c);
    group_topo(&c);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir());
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir());
    printf("kvpr-tests: %d passed, %d failed, %d skipped\n", c.run - c.failed - tests_skipped, c.failed, tests_skipped);
    return c.failed ? 1 : 0;
}
