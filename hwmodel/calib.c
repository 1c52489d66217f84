/* hw_calib: GSL fits of profile parameters to measured copy, GEMM and attention times. */
#include "calib.h"
#include <gsl/gsl_fit.h>
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
        p[k] = (pt){sqlite3_column_double(q, 0), sqlite3_column_double(q, 1), 0, 0, 0};
        const char *js = (const char *)sqlite3_column_text(q, 2);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        if (o) {
            p[k].k = json_number_value(json_object_get(o, "K"));
            p[k].n = json_number_value(json_object_get(o, "N"));
            json_decref(o);
        }
        if (p[k].t > 0 && p[k].x > 0) k++;
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
    snprintf(dst, HW_SRC_MAX, "[calib] %.30s fitted to %.50s on %.50s (%.10s): %d points, RMS error %.1f %% fit, %.1f %% held out (%d)",
             what, src, r->device, r->date, f->n_fit, 100 * f->fit_rms, 100 * f->hold_rms, f->n_hold);
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

static kv_status fit_gpu(kv_db *db, const char *dev, hw_profile *o, hw_calib_report *rep, const char *src) {
    pt *p;
    int n;
    kv_status st = load(db, dev, "gemm_time", &p, &n);
    if (st) return st;
    if (n >= 4) {
        /* launch overhead: what the smallest GEMMs (memory-bound: they stream their weights once) take
         * beyond moving their bytes; the median, since a minimum would pick the most negative noise */
        double r0[64];
        int k0 = 0;
        for (int i = 0; i < n && p[i].x == p[0].x && k0 < 64; i++) {
            double bytes = 2 * (p[i].x * p[i].k + p[i].k * p[i].n + p[i].x * p[i].n);
            r0[k0++] = p[i].t - bytes / (o->gpu.hbm_bw.value * o->gpu.hbm_eff.value);
        }
        gsl_sort(r0, 1, (size_t)k0);
        double launch = fmax(0, gsl_stats_median_from_sorted_data(r0, 1, (size_t)k0));
        /* efficiency at each M: the median over shapes of achieved / peak, then monotone */
        hw_table t = {.n = 0};
        for (int i = 0; i < n && t.n < HW_TABLE_MAX;) {
            double r[64];
            int k = 0, j = i;
            for (; j < n && p[j].x == p[i].x; j++)
                if (!p[j].hold && k < 64) r[k++] = 2 * p[j].x * p[j].k * p[j].n / (o->gpu.peak_flops.value * fmax(p[j].t - launch, 1e-9));
            if (k) {
                gsl_sort(r, 1, (size_t)k);
                t.x[t.n] = p[i].x;
                t.y[t.n] = fmin(1, fmax(1e-4, gsl_stats_median_from_sorted_data(r, 1, (size_t)k)));
                t.n++;
            }
            i = j;
        }
        isotonic(t.y, t.n);
        if (t.n) {
            o->gpu.gemm_eff = t;
            o->gpu.launch.value = launch;
            o->gpu.memory_floor = 1;
        }
        double *pred = malloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++) pred[i] = hw_gemm_time(o, p[i].x, p[i].k, p[i].n, 2);
        hw_calib_fit *f = &rep->fits[rep->nfits++];
        f->group = "gemm";
        score(f, p, n, pred);
        provenance(o->gpu.gemm_eff.source, "GEMM efficiency against M", src, rep, f);
        provenance(o->gpu.launch.source, "kernel launch overhead", src, rep, f);
        free(pred);
    }
    free(p);
    if ((st = load(db, dev, "attn_time", &p, &n))) return st;
    if (n >= 2) {
        double r[256];
        int k = 0;
        for (int i = 0; i < n && k < 256; i++)
            if (!p[i].hold && p[i].t > o->gpu.launch.value) r[k++] = p[i].x / ((p[i].t - o->gpu.launch.value) * o->gpu.hbm_bw.value);
        if (k) {
            gsl_sort(r, 1, (size_t)k);
            o->gpu.attn_eff.value = fmin(1, fmax(1e-3, gsl_stats_median_from_sorted_data(r, 1, (size_t)k)));
        }
        double *pred = malloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++) pred[i] = p[i].x / (o->gpu.hbm_bw.value * o->gpu.attn_eff.value) + o->gpu.launch.value;
        hw_calib_fit *f = &rep->fits[rep->nfits++];
        f->group = "attention";
        score(f, p, n, pred);
        provenance(o->gpu.attn_eff.source, "attention bandwidth", src, rep, f);
        free(pred);
    }
    free(p);
    return KV_OK;
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
