/* Test harness: cmocka groups, counted into one closing line "N passed, N failed". */
#ifndef KV_TESTS_H
#define KV_TESTS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>
#include "../core/model.h"
#include "../hwmodel/profile.h"

/* Relative comparison with a stated tolerance. */
#define assert_rel(a, b, tol)                                                                          \
    do {                                                                                               \
        double a_ = (a), b_ = (b);                                                                     \
        if (!(fabs(a_ - b_) <= (tol) * fmax(fabs(a_), fabs(b_)) || a_ == b_))                          \
            fail_msg("%s = %.17g, expected %.17g (rel tol %g)", #a, a_, b_, (double)(tol));            \
    } while (0)

/* Runs a command through the shell; returns its exit status and captures stdout+stderr. */
int run_cmd(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Path of the kvpr binary under test, of the source tree, and a fresh temp dir per process. */
const char *kvpr_bin(void);
const char *src_dir(void);
const char *tmp_dir(void);
/* Reads a whole file (malloc'ed) or returns NULL. */
char *read_text(const char *path);
int write_text(const char *path, const char *text);

/* A built-in model or a shipped profile; fails the test if it does not resolve. */
kv_model mdl(const char *name);
hw_profile hwp(const char *name);

typedef struct {
    int run, failed;
} tcount;
/* Marks the running test skipped (counted apart from passes), e.g. a GPU test without a GPU. */
extern int tests_skipped;
#define test_skip()          \
    do {                     \
        tests_skipped++;     \
        skip();              \
    } while (0)
#ifndef KVPR_BUILD
#define KVPR_BUILD "."
#endif
#define KVPR_BUILD_DIR KVPR_BUILD
void tgroup(tcount *c, const char *name, const struct CMUnitTest *t, size_t n);
#define RUN_GROUP(c, name, arr) tgroup(c, name, arr, sizeof(arr) / sizeof((arr)[0]))

void group_model(tcount *c);
void group_quant(tcount *c);
void group_topo(tcount *c);
void group_profile(tcount *c);
void group_cost(tcount *c);
void group_db(tcount *c);
void group_cli(tcount *c);
void group_sim(tcount *c);
void group_graph(tcount *c);
void group_sched(tcount *c);
void group_search(tcount *c);
void group_exp(tcount *c);
void group_engine(tcount *c);
void group_gpurun(tcount *c);
void group_calib(tcount *c);
void group_input(tcount *c);

#endif
