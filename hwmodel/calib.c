/* hw_calib: GSL fits of profile parameters to measured copy, GEMM and attention times. */
#include "calib.h"
#include <gsl/gsl_fit.h>
#include <gsl/gsl_multifit.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "../core/kv_io.h"
#include "../core/model.h"
#include "cost.h"

/* Dumps are shared files: replaying one must not reach anything but a private in-memory
 * database. The authorizer admits only what `sqlite3 .dump` of a results database holds:
 * BEGIN/COMMIT, CREATE TABLE and CREATE INDEX of kvpr's tables, INSERT ... VALUES into them and the
 * functions .dump uses to spell strings. No ATTACH (nor VACUUM INTO, which SQLite authorizes as one),
 * no PRAGMA (foreign_keys=OFF, which .dump writes, is ignored), no SELECT (so no recursive CTE), no
 * triggers, views, virtual tables, DELETE, UPDATE or load_extension. */
static int is_kv_table(const char *t) {
    static const char *const known[] = {"runs", "spans", "metrics", "measurements", "calibrations", "steps", NULL};
    for (const char *const *k = known; t && *k; k++)
        if (!strcmp(t, *k)) return 1;
    return 0;
}

static int is_schema(const char *t) { return t && (!strcmp(t, "sqlite_master") || !strcmp(t, "sqlite_schema")); }

static int dump_auth(void *u, int action, const char *a, const char *b, const char *dbname, const char *trigger) {
    (void)u;
    if (trigger) return SQLITE_DENY;
    int main_db = !dbname || !strcmp(dbname, "main");
    switch (action) {
    case SQLITE_TRANSACTION: return SQLITE_OK;
    case SQLITE_PRAGMA: return a && !strcmp(a, "foreign_keys") && !dbname ? SQLITE_IGNORE : SQLITE_DENY;
    case SQLITE_CREATE_TABLE: return main_db && is_kv_table(a) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_CREATE_INDEX: return main_db && is_kv_table(b) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_REINDEX: return main_db ? SQLITE_OK : SQLITE_DENY;           /* part of CREATE INDEX */
    case SQLITE_INSERT: return main_db && (is_kv_table(a) || is_schema(a)) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_UPDATE: return main_db && is_schema(a) ? SQLITE_OK : SQLITE_DENY; /* CREATE writes the schema */
    case SQLITE_READ: return main_db && (is_kv_table(a) || is_schema(a)) ? SQLITE_OK : SQLITE_DENY; /* CHECK, index columns */
    case SQLITE_FUNCTION:
        return b && (!strcmp(b, "replace") || !strcmp(b, "char") || !strcmp(b, "unistr")) ? SQLITE_OK : SQLITE_DENY;
    default: return SQLITE_DENY;
    }
}

/* A dump of measurements replays in well under a second; the limit only stops one built to hang. */
#define DUMP_LIMIT_S 60

static int dump_progress(void *u) {
    const struct timespec *t0 = u;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec - t0->tv_sec > DUMP_LIMIT_S;
}

kv_status hw_calib_load_dump(const char *sql, const char *label, sqlite3 **out) {
    sqlite3 *h;
    if (sqlite3_open_v2(":memory:", &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return kv_errorf(KV_EDB, "cannot open an in-memory database");
    }
    sqlite3_db_config(h, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_VIEW, 0, (int *)NULL);
    sqlite3_db_config(h, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    sqlite3_limit(h, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_set_authorizer(h, dump_auth, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sqlite3_progress_handler(h, 100000, dump_progress, &t0);
    char *em = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &em);
    sqlite3_progress_handler(h, 0, NULL, NULL);
    sqlite3_set_authorizer(h, NULL, NULL);
    if (rc != SQLITE_OK) {
        kv_status st = rc == SQLITE_INTERRUPT
                           ? kv_errorf(KV_EPARSE, "%s: replaying the dump took longer than %d s: refused", label, DUMP_LIMIT_S)
                       : rc == SQLITE_AUTH
                           ? kv_errorf(KV_EPARSE, "%s: not a plain results database dump (%s): it may only create kvpr's tables and insert rows",
                                       label, em ? em : sqlite3_errstr(rc))
                           : kv_errorf(KV_EPARSE, "%s: not a results database dump (%s)", label, em ? em : sqlite3_errstr(rc));
        sqlite3_free(em);
        sqlite3_close(h);
        return st;
    }
    *out = h;
    return KV_OK;
}

kv_status hw_calib_open_source(const char *path, kv_db **out) {
    size_t n = strlen(path);
    if (n < 4 || strcmp(path + n - 4, ".sql") != 0) {
        struct stat sb;
        if (stat(path, &sb) != 0) return kv_errorf(KV_ENOTFOUND, "no measurements at %s", path);
        return db_open(path, 5000, out);
    }
    /* a text dump: replay it into memory, so traces/ stays plain text */
    char *sql;
    size_t len;
    kv_status st = kv_io_read_all(path, (size_t)1 << 30, &sql, &len);
    if (st) return st == KV_ENOTFOUND ? kv_errorf(st, "no measurements at %s", path) : st;
    if (strlen(sql) != len) {
        free(sql);
        return kv_errorf(KV_EPARSE, "%s: not a results database dump (it holds a NUL byte)", path);
    }
    sqlite3 *h;
    st = hw_calib_load_dump(sql, path, &h);
    free(sql);
    if (st) return st;
    /* .dump does not carry PRAGMA user_version: infer it from the schema the dump brought */
    sqlite3_stmt *q;
    int version = 0;
    if (sqlite3_prepare_v2(h, "SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'runs'),"
                              " (SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'run_key'),"
                              " (SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'scheduler'),"
                              " (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'steps')", -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW)
            version = !sqlite3_column_int(q, 0) ? 0
                      : sqlite3_column_int(q, 3) ? 4
                      : sqlite3_column_int(q, 2) ? 3
                      : sqlite3_column_int(q, 1) ? 2
                                                 : 1;
        sqlite3_finalize(q);
    }
    char pv[96];
    snprintf(pv, sizeof pv, "PRAGMA user_version=%d; PRAGMA application_id=%d", version, DB_APPLICATION_ID);
    sqlite3_exec(h, pv, NULL, NULL, NULL);
    /* hand the in-memory database over through a temporary file: db_open checks and upgrades it */
    char tmp[4096];
    kv_status ts = db_mkstemp(tmp, sizeof tmp, "kvpr-calib"); /* under $TMPDIR */
    if (ts) {
        sqlite3_close(h);
        return ts;
    }
    sqlite3 *dst;
    int rc = sqlite3_open(tmp, &dst);
    sqlite3_backup *bk = rc == SQLITE_OK ? sqlite3_backup_init(dst, "main", h, "main") : NULL;
    rc = bk ? sqlite3_backup_step(bk, -1) : SQLITE_ERROR;
    if (bk) sqlite3_backup_finish(bk);
    sqlite3_close(dst);
    sqlite3_close(h);
    if (rc != SQLITE_DONE) {
        unlink(tmp);
        return kv_errorf(KV_EIO, "%s: cannot copy the dump into a temporary database (%s)", path, sqlite3_errstr(rc));
    }
    st = db_open(tmp, 5000, out);
    unlink(tmp); /* the open handle keeps it alive */
    return st;
}

typedef struct {
    double x, t; /* size or M; measured time */
    double k, n; /* GEMM K, N */
    double flops, bytes; /* GEMM: 2MKN and the operands' bytes; attention: 4 b ctx nh d and the K/V bytes */
    int hold;
} pt;

static int cmp_x(const void *a, const void *b) {
    double x = ((const pt *)a)->x, y = ((const pt *)b)->x;
    return x < y ? -1 : x > y;
}

static kv_status load(kv_db *db, const char *device, const char *kind, pt **out, int *n) {
    sqlite3_stmt *q;
    const char *sql = "SELECT x, value, params FROM measurements WHERE kind = ? AND device = ? ORDER BY x, id";
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &q, NULL) != SQLITE_OK)
        return kv_errorf(KV_EDB, "reading measurements: %s", sqlite3_errmsg(db_handle(db)));
    sqlite3_bind_text(q, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, device, -1, SQLITE_STATIC);
    int cap = 64, k = 0;
    pt *p = malloc(sizeof(pt) * (size_t)cap);
    while (p && sqlite3_step(q) == SQLITE_ROW) {
        if (k == cap) {
            pt *r = realloc(p, sizeof(pt) * (size_t)(cap *= 2));
            if (!r) break;
            p = r;
        }
        p[k] = (pt){sqlite3_column_double(q, 0), sqlite3_column_double(q, 1), 0, 0, 0, 0, 0};
        const char *js = (const char *)sqlite3_column_text(q, 2);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        if (o) {
            p[k].k = json_number_value(json_object_get(o, "K"));
            p[k].n = json_number_value(json_object_get(o, "N"));
            p[k].flops = 2 * p[k].x * p[k].k * p[k].n;
            p[k].bytes = 2 * (p[k].x * p[k].k + p[k].k * p[k].n + p[k].x * p[k].n);
            /* attention rows name their model: its heads give the per-query work */
            kv_model m;
            const char *mn = json_string_value(json_object_get(o, "model"));
            double b = json_number_value(json_object_get(o, "batch")), c = json_number_value(json_object_get(o, "ctx"));
            if (!strcmp(kind, "attn_time") && mn && b > 0 && c > 0 && !kv_model_find(mn, &m))
                p[k].flops = 4.0 * b * c * m.n_heads * m.head_dim, p[k].bytes = p[k].x;
            json_decref(o);
        }
        if (p[k].t > 0 && p[k].x > 0 && isfinite(p[k].t) && isfinite(p[k].x)) k++;
    }
    sqlite3_finalize(q);
    if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
    qsort(p, (size_t)k, sizeof *p, cmp_x);
    for (int i = 0; i < k; i++) p[i].hold = i % 4 == 3; /* every fourth point is held out */
    *out = p;
    *n = k;
    return KV_OK;
}

/* relative errors of model(point) against the measured time, on fit and held-out points */
static void score(hw_calib_fit *f, const pt *p, int n, const double *pred) {
    double sf = 0, sh = 0;
    f->n_fit = f->n_hold = 0;
    f->fit_max = f->hold_max = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs(pred[i] - p[i].t) / p[i].t;
        if (p[i].hold) sh += e * e, f->hold_max = fmax(f->hold_max, e), f->n_hold++;
        else sf += e * e, f->fit_max = fmax(f->fit_max, e), f->n_fit++;
    }
    f->fit_rms = f->n_fit ? sqrt(sf / f->n_fit) : 0;
    f->hold_rms = f->n_hold ? sqrt(sh / f->n_hold) : 0;
}

static void provenance(char *dst, const char *what, const char *src, const hw_calib_report *r, const hw_calib_fit *f) {
    /* a fit that cannot explain its held-out points says so in every field it set (kvpr compare
     * looks for HW_CALIB_FAILED) */
    int bad = f->n_hold && f->hold_rms > HW_CALIB_MAX_ERROR;
    int dn = (int)strcspn(r->device, "("); /* "NVIDIA H200 (cc 9.0, ...)": the name, room for the rest */
    while (dn > 0 && r->device[dn - 1] == ' ') dn--;
    snprintf(dst, HW_SRC_MAX, "[calib] %.30s fitted to %.60s on %.*s (%.10s): %d points, RMS error %.1f %% fit, %.1f %% held out (%d)%s",
             what, src, dn < 40 ? dn : 40, r->device, r->date, f->n_fit, 100 * f->fit_rms, 100 * f->hold_rms, f->n_hold,
             bad ? "; " HW_CALIB_FAILED : "");
}

/* Isotonic (non-decreasing) least-squares fit of y, in place: pool adjacent violators. A running
 * max would let one noisy point lift every point after it. */
static void isotonic(double *y, int n) {
    double *v = malloc(sizeof(double) * (size_t)n), *w = malloc(sizeof(double) * (size_t)n);
    int *len = malloc(sizeof(int) * (size_t)n), k = 0;
    if (!v || !w || !len) goto out;
    for (int i = 0; i < n; i++) {
        v[k] = y[i], w[k] = 1, len[k] = 1, k++;
        while (k > 1 && v[k - 2] > v[k - 1]) {
            v[k - 2] = (v[k - 2] * w[k - 2] + v[k - 1] * w[k - 1]) / (w[k - 2] + w[k - 1]);
            w[k - 2] += w[k - 1], len[k - 2] += len[k - 1], k--;
        }
    }
    for (int b = 0, i = 0; b < k; b++)
        for (int j = 0; j < len[b]; j++) y[i++] = v[b];
out:
    free(v), free(w), free(len);
}

/* t = alpha + bytes / (B eff(bytes)): alpha from a weighted (relative-error) line through the fit
 * points, B the best achieved rate above alpha, eff what each size reaches of it, made monotone. */
static kv_status fit_dir(kv_db *db, const char *dev, const char *dir, hw_link_dir *d, hw_calib_report *rep, const char *src) {
    char kind[64];
    pt *p;
    int n;
    snprintf(kind, sizeof kind, "copy_%s_pinned", dir);
    kv_status st = load(db, dev, kind, &p, &n);
    if (st) return st;
    if (n < 4) {
        free(p);
        return KV_OK; /* nothing to fit: keep the base values */
    }
    double *x = malloc(sizeof(double) * (size_t)n), *y = malloc(sizeof(double) * (size_t)n), *w = malloc(sizeof(double) * (size_t)n);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!p[i].hold) x[m] = p[i].x, y[m] = p[i].t, w[m] = 1 / (p[i].t * p[i].t), m++;
    double c0, c1, cov00, cov01, cov11, chisq;
    gsl_fit_wlinear(x, 1, w, 1, y, 1, (size_t)m, &c0, &c1, &cov00, &cov01, &cov11, &chisq);
    double alpha = c0 > 0 ? c0 : 0;
    /* The plateau: the best rate reached once alpha is paid, among copies whose byte term is at
     * least alpha (below that, noise on the total swamps the byte term). */
    double B = 0;
    for (int i = 0; i < m; i++)
        if (y[i] - alpha >= alpha) B = fmax(B, x[i] / (y[i] - alpha));
    if (!(B > 0)) B = 1 / c1;
    hw_table t = {.n = 0};
    for (int i = 0; i < m && t.n < HW_TABLE_MAX; i++) {
        if (y[i] - alpha < alpha) continue; /* the efficiency of tiny copies is not identifiable */
        double e = fmin(1, fmax(1e-3, x[i] / ((y[i] - alpha) * B)));
        if (t.n && x[i] == t.x[t.n - 1]) {
            t.y[t.n - 1] = 0.5 * (t.y[t.n - 1] + e);
            continue;
        }
        t.x[t.n] = x[i], t.y[t.n] = e, t.n++;
    }
    if (!t.n) t.n = 1, t.x[0] = 1, t.y[0] = 1;
    isotonic(t.y, t.n); /* monotone, as the format requires */
    d->overhead.value = alpha;
    d->bandwidth.value = B;
    double pageable = d->pageable.value;
    d->size_eff = t;
    double *pred = malloc(sizeof(double) * (size_t)n);
    hw_profile tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.link.h2d = *d;
    for (int i = 0; i < n; i++) pred[i] = hw_copy_time(&tmp, HW_H2D, p[i].x, 0, 0);
    hw_calib_fit *f = &rep->fits[rep->nfits++];
    f->group = !strcmp(dir, "h2d") ? "h2d copies" : "d2h copies";
    score(f, p, n, pred);
    provenance(d->overhead.source, "per-copy overhead", src, rep, f);
    provenance(d->bandwidth.source, "plateau bandwidth", src, rep, f);
    provenance(d->size_eff.source, "size efficiency", src, rep, f);
    free(pred);
    /* pageable plateau and duplex factor from their own rows, at large sizes */
    pt *q;
    int nq;
    snprintf(kind, sizeof kind, "copy_%s_pageable", dir);
    if (!(st = load(db, dev, kind, &q, &nq))) {
        double best = 0;
        for (int i = 0; i < nq; i++)
            if (q[i].t - alpha >= alpha) best = fmax(best, q[i].x / (q[i].t - alpha));
        if (best > 0) {
            d->pageable.value = fmin(best, B);
            snprintf(d->pageable.source, HW_SRC_MAX, "[calib] best pageable rate in %.60s on %.60s (%.10s), %d points", src, rep->device, rep->date, nq);
        } else d->pageable.value = fmin(pageable, B);
        free(q);
    }
    snprintf(kind, sizeof kind, "copy_%s_duplex_pinned", dir);
    if (!st && !(st = load(db, dev, kind, &q, &nq))) {
        double r[64];
        int k = 0;
        for (int i = 0; i < nq && k < 64; i++)
            if (q[i].x >= 16e6) r[k++] = fmin(1, (alpha + q[i].x / (B * hw_table_eval(&t, q[i].x))) / q[i].t);
        if (k) {
            gsl_sort(r, 1, (size_t)k);
            d->duplex.value = fmax(0.01, gsl_stats_median_from_sorted_data(r, 1, (size_t)k));
            snprintf(d->duplex.source, HW_SRC_MAX, "[calib] duplex: rate with the other direction busy / alone, copies >= 16 MB, %.40s on %.40s (%.10s), %d points",
                     src, rep->device, rep->date, k);
        }
        free(q);
    }
    free(x), free(y), free(w), free(p);
    return st;
}

/* Weighted least squares for relative error: t - L = sum_j c_j X_j over the points, weights 1/t^2.
 * A negative coefficient (the data cannot separate that term) is dropped and the rest refitted.
 * Returns the number of coefficients kept > 0 (0: nothing fits). */
static int wls(const pt *p, int n, double L, int ncol, double (*col)(const pt *, int), int use_hold, double *c) {
    int keep[4] = {1, 1, 1, 1}, m = 0;
    for (int i = 0; i < n; i++) m += use_hold || !p[i].hold;
    for (int j = 0; j < ncol; j++) c[j] = 0;
    for (int round = 0; round < ncol; round++) {
        int k = 0;
        for (int j = 0; j < ncol; j++) k += keep[j];
        if (!k || m < k) return 0;
        gsl_matrix *X = gsl_matrix_alloc((size_t)m, (size_t)k), *cov = gsl_matrix_alloc((size_t)k, (size_t)k);
        gsl_vector *y = gsl_vector_alloc((size_t)m), *w = gsl_vector_alloc((size_t)m), *cv = gsl_vector_alloc((size_t)k);
        gsl_multifit_linear_workspace *ws = gsl_multifit_linear_alloc((size_t)m, (size_t)k);
        int ok = X && cov && y && w && cv && ws;
        for (int i = 0, r = 0; ok && i < n; i++) {
            if (!use_hold && p[i].hold) continue;
            for (int j = 0, q = 0; j < ncol; j++)
                if (keep[j]) gsl_matrix_set(X, (size_t)r, (size_t)q++, col(&p[i], j));
            gsl_vector_set(y, (size_t)r, p[i].t - L);
            gsl_vector_set(w, (size_t)r, 1 / (p[i].t * p[i].t));
            r++;
        }
        double chisq;
        ok = ok && gsl_multifit_wlinear(X, w, y, cv, cov, &chisq, ws) == 0;
        int neg = -1;
        for (int j = 0, q = 0; ok && j < ncol; j++)
            if (keep[j]) {
                c[j] = gsl_vector_get(cv, (size_t)q++);
                if (!(c[j] > 0) && (neg < 0 || c[j] < c[neg])) neg = j;
            }
        gsl_matrix_free(X), gsl_matrix_free(cov), gsl_vector_free(y), gsl_vector_free(w), gsl_vector_free(cv);
        gsl_multifit_linear_free(ws);
        if (!ok) return 0;
        if (neg < 0) return k;
        keep[neg] = 0, c[neg] = 0;
    }
    return 0;
}
static double col_bytes(const pt *p, int j) { return j == 0 ? p->bytes : j == 1 ? p->flops : 1; }
static double col_bytes_one(const pt *p, int j) { return j == 0 ? p->bytes : 1; }

/* The device's own rates, fitted to what it measured (nothing of the base profile's datasheet):
 *   GEMM       t = L + max(flops / (P eff(M)), bytes / Bm): Bm from the smallest-M GEMMs, which
 *              stream their weights once; P the best rate reached; eff(M) what each M reaches of it;
 *   attention  t = L + X + bytes / Ba + flops / Fa: K/V streamed, plus each query head's work,
 *              plus X, what the kernel takes beyond a launch (the CUDA kernel is a split pass and a
 *              merge pass);
 *   launch L   shared by every kernel, at most the smallest kernel's time: the value in [0, that]
 *              that explains both groups best (a grid; each candidate refits the rest).
 * hbm_bw is the fastest stream seen (a device-to-device copy, the GEMMs' or attention's), so both
 * efficiencies are fractions of a measured number. */
typedef struct {
    double L, Bm, P, Ba, Fa, Xa, err; /* Xa: the attention kernel's fixed time beyond L */
    int additive;                     /* GEMM: memory + compute, not max(memory, compute) */
    hw_table eff;
} gpu_fit;

/* what a GEMM leaves for its compute term */
static double gemm_compute(const pt *p, double L, double Bm, int additive) {
    return p->t - L - (additive && Bm > 0 ? p->bytes / Bm : 0);
}

static void gemm_eff_table(const pt *g, int ng, double L, double Bm, int additive, double P, hw_table *t) {
    t->n = 0;
    for (int i = 0; i < ng && t->n < HW_TABLE_MAX;) {
        double r[256];
        int k = 0, j = i;
        for (; j < ng && g[j].x == g[i].x; j++)
            if (!g[j].hold && k < 256) r[k++] = g[j].flops / (P * fmax(gemm_compute(&g[j], L, Bm, additive), 1e-12));
        if (k) {
            gsl_sort(r, 1, (size_t)k);
            t->x[t->n] = g[i].x;
            t->y[t->n] = fmin(1, fmax(1e-4, gsl_stats_median_from_sorted_data(r, 1, (size_t)k)));
            t->n++;
        }
        i = j;
    }
    isotonic(t->y, t->n);
}

static double gemm_pred(const gpu_fit *f, const pt *p) {
    double c = p->flops / (f->P * hw_table_eval(&f->eff, p->x)), m = f->Bm > 0 ? p->bytes / f->Bm : 0;
    return (f->additive ? c + m : fmax(c, m)) + f->L;
}
static double attn_pred(const gpu_fit *f, const pt *p) {
    return (f->Ba > 0 ? p->bytes / f->Ba : 0) + (f->Fa > 0 ? p->flops / f->Fa : 0) + f->Xa + f->L;
}

/* all parameters for one launch overhead L; err: RMS relative error over the fit points */
static void gpu_fit_at(const pt *g, int ng, const pt *a, int na, double L, int additive, gpu_fit *f) {
    memset(f, 0, sizeof *f);
    f->L = L, f->additive = additive;
    double c[2];
    /* memory line through the smallest-M GEMMs (fit points) */
    int n0 = 0;
    while (n0 < ng && g[n0].x == g[0].x) n0++;
    if (ng && wls(g, n0, L, 1, col_bytes, 0, c)) f->Bm = 1 / c[0];
    /* the best rate: among GEMMs whose compute term is at least half their time (below that, noise
     * on the total swamps it) */
    for (int i = 0; i < ng; i++) {
        double tc = gemm_compute(&g[i], L, f->Bm, additive);
        if (!g[i].hold && tc > 0.5 * (g[i].t - L)) f->P = fmax(f->P, g[i].flops / tc);
    }
    if (ng && f->P > 0) gemm_eff_table(g, ng, L, f->Bm, additive, f->P, &f->eff);
    if (na) {
        /* one model, or models of one heads-per-byte ratio: flops is a multiple of bytes, keep one */
        double lo = HUGE_VAL, hi = 0;
        for (int i = 0; i < na; i++) lo = fmin(lo, a[i].flops / a[i].bytes), hi = fmax(hi, a[i].flops / a[i].bytes);
        double c3[3];
        if (lo > 0 && hi > 1.05 * lo) {
            if (wls(a, na, L, 3, col_bytes, 0, c3)) f->Ba = c3[0] > 0 ? 1 / c3[0] : 0, f->Fa = c3[1] > 0 ? 1 / c3[1] : 0, f->Xa = c3[2];
        } else if (wls(a, na, L, 2, col_bytes_one, 0, c3))
            f->Ba = c3[0] > 0 ? 1 / c3[0] : 0, f->Xa = c3[1];
    }
    double se = 0;
    int n = 0;
    for (int i = 0; i < ng; i++)
        if (!g[i].hold && f->P > 0) {
            double e = (gemm_pred(f, &g[i]) - g[i].t) / g[i].t;
            se += e * e, n++;
        }
    for (int i = 0; i < na; i++)
        if (!a[i].hold) {
            double e = (attn_pred(f, &a[i]) - a[i].t) / a[i].t;
            se += e * e, n++;
        }
    f->err = n ? sqrt(se / n) : HUGE_VAL;
}

static kv_status fit_gpu(kv_db *db, const char *dev, hw_profile *o, hw_calib_report *rep, const char *src) {
    pt *g = NULL, *a = NULL, *dd = NULL;
    int ng = 0, na = 0, nd = 0;
    kv_status st = load(db, dev, "gemm_time", &g, &ng);
    if (!st) st = load(db, dev, "attn_time", &a, &na);
    if (!st) st = load(db, dev, "copy_d2d", &dd, &nd);
    if (st) goto out;
    for (int i = 0; i < ng; i++)
        if (!(g[i].flops > 0)) g[i] = g[--ng], i--; /* a GEMM row without its shape says nothing */
    for (int i = 0; i < na; i++)
        if (!(a[i].flops > 0)) a[i] = a[--na], i--;
    qsort(g, (size_t)ng, sizeof *g, cmp_x);
    qsort(a, (size_t)na, sizeof *a, cmp_x);
    if (ng < 4) ng = 0;
    if (na < 4) na = 0;
    if (!ng && !na) goto out;
    double tmin = HUGE_VAL;
    for (int i = 0; i < ng; i++) tmin = fmin(tmin, g[i].t);
    for (int i = 0; i < na; i++) tmin = fmin(tmin, a[i].t);
    gpu_fit best = {.err = HUGE_VAL}, f;
    const int steps = 400;
    for (int add = 0; add < 2; add++) /* both forms of the GEMM's memory term: the one the data prefers */
        for (int s = 0; s < steps; s++) { /* L from 0 to 0.99 of the smallest kernel's time */
            gpu_fit_at(g, ng, a, na, 0.99 * tmin * s / (steps - 1), add, &f);
            if (f.err < best.err) best = f;
        }
    if (!(best.err < HUGE_VAL) || (ng && !(best.P > 0)) || (na && !(best.Ba > 0 || best.Fa > 0))) {
        st = kv_errorf(KV_EINVAL, "%s: the GEMM and attention times of %s fit no launch overhead, rate and bandwidth (times not growing with size?)",
                       src, dev);
        goto out;
    }
    double d2d = 0;
    for (int i = 0; i < nd; i++) d2d = fmax(d2d, 2 * dd[i].x / dd[i].t);
    double hbm = fmax(d2d, fmax(best.Bm, best.Ba));
    o->gpu.launch.value = best.L;
    o->gpu.memory_floor = 1;
    o->gpu.hbm_bw.value = hbm;
    snprintf(o->gpu.hbm_bw.source, HW_SRC_MAX, "[calib] fastest stream measured (%s) in %.60s on %.60s (%.10s)",
             hbm == d2d ? "device-to-device copy, read + written" : hbm == best.Bm ? "memory-bound GEMMs" : "attention", src, rep->device, rep->date);
    if (ng) {
        o->gpu.gemm_additive = best.additive;
        o->gpu.peak_flops.value = best.P;
        o->gpu.gemm_eff = best.eff;
        o->gpu.hbm_eff.value = best.Bm > 0 ? fmin(1, fmax(1e-4, best.Bm / hbm)) : o->gpu.hbm_eff.value;
        double *pred = malloc(sizeof(double) * (size_t)ng);
        if (!pred) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
        for (int i = 0; i < ng; i++) pred[i] = gemm_pred(&best, &g[i]);
        hw_calib_fit *fi = &rep->fits[rep->nfits++];
        fi->group = "gemm";
        score(fi, g, ng, pred);
        free(pred);
        provenance(o->gpu.gemm_eff.source, "GEMM efficiency against M", src, rep, fi);
        provenance(o->gpu.peak_flops.source, "best GEMM rate", src, rep, fi);
        provenance(o->gpu.hbm_eff.source, "memory-bound GEMM stream", src, rep, fi);
        provenance(o->gpu.launch.source, "kernel launch overhead", src, rep, fi);
    }
    if (na) {
        o->gpu.attn_eff.value = best.Ba > 0 ? fmin(1, fmax(1e-4, best.Ba / hbm)) : 1e-4;
        o->gpu.attn_flops.value = best.Fa; /* 0 where the data cannot separate it: streaming only */
        o->gpu.attn_fixed.value = best.Xa;
        if (best.Fa <= 0 && best.Ba <= 0) o->gpu.attn_eff.value = 1e-4;
        double *pred = malloc(sizeof(double) * (size_t)na);
        if (!pred) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            goto out;
        }
        /* the profile's own cost function: what the simulator will use */
        for (int i = 0; i < na; i++) pred[i] = attn_pred(&best, &a[i]);
        hw_calib_fit *fi = &rep->fits[rep->nfits++];
        fi->group = "attention";
        score(fi, a, na, pred);
        free(pred);
        provenance(o->gpu.attn_eff.source, "attention bandwidth", src, rep, fi);
        if (best.Fa > 0) provenance(o->gpu.attn_flops.source, "attention FLOP rate", src, rep, fi);
        provenance(o->gpu.attn_fixed.source, "attention fixed time", src, rep, fi);
        if (!ng) provenance(o->gpu.launch.source, "kernel launch overhead", src, rep, fi);
    }
out:
    free(g), free(a), free(dd);
    return st;
}

kv_status hw_calibrate(kv_db *db, const hw_profile *base, const char *source, const char *device, hw_profile *out,
                       hw_calib_report *rep) {
    memset(rep, 0, sizeof *rep);
    sqlite3_stmt *q;
    const char *sql = device ? "SELECT device, max(created), count(*) FROM measurements WHERE device = ?"
                             : "SELECT device, max(created), count(*) AS n FROM measurements GROUP BY device ORDER BY n DESC LIMIT 1";
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &q, NULL) != SQLITE_OK)
        return kv_errorf(KV_EDB, "reading measurements: %s", sqlite3_errmsg(db_handle(db)));
    if (device) sqlite3_bind_text(q, 1, device, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW || sqlite3_column_int(q, 2) == 0) {
        sqlite3_finalize(q);
        return kv_errorf(KV_ENOTFOUND, "%s: no measurements%s%s (run 'kvpr-engine bench' on the GPU first)", source,
                         device ? " for device " : "", device ? device : "");
    }
    snprintf(rep->device, sizeof rep->device, "%s", (const char *)sqlite3_column_text(q, 0));
    snprintf(rep->date, sizeof rep->date, "%.10s", sqlite3_column_text(q, 1) ? (const char *)sqlite3_column_text(q, 1) : "?");
    sqlite3_finalize(q);
    hw_profile o = *base;
    kv_status st;
    if ((st = fit_dir(db, rep->device, "h2d", &o.link.h2d, rep, source)) || (st = fit_dir(db, rep->device, "d2h", &o.link.d2h, rep, source)) ||
        (st = fit_gpu(db, rep->device, &o, rep, source)))
        return st;
    if (!rep->nfits) return kv_errorf(KV_ENOTFOUND, "%s: no copy, GEMM or attention measurements to fit for %s", source, rep->device);
    snprintf(o.description, sizeof o.description, "%.200s, calibrated on %.120s (%s) from %.120s", base->name, rep->device, rep->date, source);
    /* the device is the one measured, not the base's */
    int dn = (int)strcspn(rep->device, "(");
    while (dn > 0 && rep->device[dn - 1] == ' ') dn--;
    if (dn > 0) snprintf(o.gpu.name, sizeof o.gpu.name, "%.*s", dn < 63 ? dn : 63, rep->device);
    *out = o;
    return KV_OK;
}

void hw_calib_print(const hw_calib_report *r, FILE *f) {
    fprintf(f, "calibrated on %s (%s)\n%-12s %6s %10s %10s %6s %10s %10s\n", r->device, r->date, "group", "fit n", "fit RMS", "fit max",
            "held", "held RMS", "held max");
    for (int i = 0; i < r->nfits; i++) {
        const hw_calib_fit *x = &r->fits[i];
        fprintf(f, "%-12s %6d %9.2f%% %9.2f%% %6d %9.2f%% %9.2f%%\n", x->group, x->n_fit, 100 * x->fit_rms, 100 * x->fit_max, x->n_hold,
                100 * x->hold_rms, 100 * x->hold_max);
    }
}

char *hw_calib_json(const hw_calib_report *r) {
    json_t *a = json_array();
    for (int i = 0; i < r->nfits; i++) {
        const hw_calib_fit *x = &r->fits[i];
        json_array_append_new(a, json_pack("{s:s,s:i,s:f,s:f,s:i,s:f,s:f}", "group", x->group, "n_fit", x->n_fit, "fit_rms", x->fit_rms,
                                           "fit_max", x->fit_max, "n_hold", x->n_hold, "hold_rms", x->hold_rms, "hold_max", x->hold_max));
    }
    json_t *o = json_pack("{s:s,s:s,s:o}", "device", r->device, "date", r->date, "fits", a);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

int hw_calib_failures(const hw_calib_report *r, char *msg, size_t n) {
    int k = 0;
    size_t o = 0;
    if (n) msg[0] = 0;
    for (int i = 0; i < r->nfits; i++) {
        const hw_calib_fit *x = &r->fits[i];
        if (!x->n_hold || x->hold_rms <= HW_CALIB_MAX_ERROR) continue;
        if (o < n) o += (size_t)snprintf(msg + o, n - o, "%s%s %.1f %%", k ? ", " : "", x->group, 100 * x->hold_rms);
        k++;
    }
    return k;
}

int hw_profile_failed_fit(const hw_profile *p, char *what, size_t n) {
    const char *src[] = {p->gpu.peak_flops.source, p->gpu.hbm_bw.source, p->gpu.launch.source, p->gpu.attn_eff.source,
                         p->gpu.hbm_eff.source, p->gpu.gemm_eff.source, p->gpu.attn_flops.source, p->gpu.attn_fixed.source,
                         p->link.h2d.bandwidth.source, p->link.h2d.overhead.source, p->link.h2d.size_eff.source,
                         p->link.d2h.bandwidth.source, p->link.d2h.overhead.source, p->link.d2h.size_eff.source};
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++)
        if (strstr(src[i], HW_CALIB_FAILED)) {
            if (what && n) snprintf(what, n, "%s", src[i]);
            return 1;
        }
    return 0;
}
