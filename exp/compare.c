/* exp compare: the simulator scored against measured engine runs. Each run is re-simulated with
 * its own plan on a profile; spans join on (step, layer, mb, op); errors per op kind and per decode
 * step are reported, stored, and drawn. */
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include "../sim/sim.h"
#include "compare.h"

typedef struct {
    int step, layer, mb, op;
    double dur, start;
} jspan;

static int cmp_js(const void *a, const void *b) {
    const jspan *x = a, *y = b;
    if (x->step != y->step) return x->step - y->step;
    if (x->layer != y->layer) return x->layer - y->layer;
    if (x->mb != y->mb) return x->mb - y->mb;
    return x->op - y->op;
}

static int op_index(const char *nm) {
    for (int k = 0; k < KV_OP_COUNT; k++)
        if (!strcmp(nm, kv_op_name((kv_op)k))) return k;
    return -1;
}

typedef struct {
    double *v;
    int n, cap;
} vec;

static void push(vec *a, double x) {
    if (a->n == a->cap) {
        int nc = a->cap ? 2 * a->cap : 256;
        double *q = realloc(a->v, sizeof(double) * (size_t)nc);
        if (!q) return;
        a->v = q, a->cap = nc;
    }
    a->v[a->n++] = x;
}

static void stats(vec *a, exp_cmp_stat *s) {
    memset(s, 0, sizeof *s);
    s->n = a->n;
    if (!a->n) return;
    double *x = malloc(sizeof(double) * (size_t)a->n);
    for (int i = 0; i < a->n; i++) x[i] = fabs(a->v[i]);
    gsl_sort(x, 1, (size_t)a->n);
    s->mape = gsl_stats_mean(x, 1, (size_t)a->n);
    s->median = gsl_stats_median_from_sorted_data(x, 1, (size_t)a->n);
    s->p90 = gsl_stats_quantile_from_sorted_data(x, 1, (size_t)a->n, 0.9);
    s->max = x[a->n - 1];
    s->bias = gsl_stats_mean(a->v, 1, (size_t)a->n);
    free(x);
}

/* the scatter's data were written while joining; the script goes with them */
static kv_status fig_scatter(exp_fig *F) {
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(F, fmt, 800, 700);
        fprintf(F->gp, "set title 'predicted against measured op durations'\nset logscale xy\nset xlabel 'measured (ms)'\nset ylabel 'simulated (ms)'\n"
                       "set grid\nset key top left noenhanced\nset size ratio -1\nplot for [k=0:%d] ", KV_OP_COUNT - 1);
        exp_gp_str(F->gp, F->dat_path);
        char ops[512] = "";
        for (int k = 0; k < KV_OP_COUNT; k++) /* the legend: every kind of op, in order */
            snprintf(ops + strlen(ops), sizeof ops - strlen(ops), "%s%s", k ? " " : "", kv_op_name((kv_op)k));
        fprintf(F->gp, " using ($5==k?$6*1e3:1/0):($7*1e3) with points pt 7 ps 0.6 title word(");
        exp_gp_str(F->gp, ops);
        fprintf(F->gp, ", k+1), x with lines lc 'black' title 'exact'\n");
    }
    return exp_fig_close(F);
}

static kv_status fig_timeline(const char *dir, const jspan *meas, int nm, const jspan *sim, int ns, int step, const int *res_of_op) {
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, "compare-timeline", 1);
    if (st) return st;
    for (int which = 0; which < 2; which++) {
        const jspan *a = which ? sim : meas;
        int n = which ? ns : nm;
        /* the step starts where the previous one ended (its last span's end, as the step times are
         * measured), not at its own first span: a prefetched copy of this step starts earlier,
         * during the previous step, by different amounts in the two timelines */
        double t0 = -HUGE_VAL, first = HUGE_VAL;
        for (int i = 0; i < n; i++) {
            if (a[i].step == step - 1) t0 = fmax(t0, a[i].start + a[i].dur);
            if (a[i].step == step) first = fmin(first, a[i].start);
        }
        if (!(t0 > -HUGE_VAL)) t0 = first;
        for (int i = 0; i < n; i++) {
            if (a[i].step != step) continue;
            double y = (which ? 0 : 5) + res_of_op[a[i].op];
            fprintf(F.dat, "%.6f %.2f %.6f %.6f %.2f %.2f %d\n", (a[i].start - t0) * 1e3, y, (a[i].start - t0) * 1e3,
                    (a[i].start + a[i].dur - t0) * 1e3, y - 0.4, y + 0.4, a[i].op);
        }
    }
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 1100, 420);
        fprintf(F.gp, "set title 'decode step %d: measured (top) and simulated (bottom), from the end of step %d'\nset xlabel 'time in the step (ms)'\n"
                      "set ytics ('sim h2d' 0, 'sim d2h' 1, 'sim gpu' 2, 'measured h2d' 5, 'measured d2h' 6, 'measured gpu' 7)\n"
                      "set yrange [-1:8]\nset style fill solid 1.0 noborder\nset key outside right noenhanced\nset grid xtics\nplot ",
                step, step - 1);
        for (int k = 0; k < KV_OP_COUNT; k++) {
            fprintf(F.gp, "%s", k ? ", " : "");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " using 1:($7==%d?$2:1/0):3:4:5:6 with boxxyerror lc rgb '%s' title '%s'", k, exp_op_color(k), kv_op_name((kv_op)k));
        }
        fprintf(F.gp, "\n");
    }
    return exp_fig_close(&F);
}

/* --measured: "all", or run ids separated by commas; each a positive integer. */
static kv_status measured_sql(const char *sel, char *sql, size_t n) {
    if (!sel || !strcmp(sel, "all")) {
        snprintf(sql, n, "SELECT id, model, plan FROM runs WHERE kind = 'engine' ORDER BY id");
        return KV_OK;
    }
    size_t o = (size_t)snprintf(sql, n, "SELECT id, model, plan FROM runs WHERE kind = 'engine' AND id IN (");
    const char *c = sel;
    int k = 0;
    for (;;) {
        char *e;
        errno = 0;
        long long id = (*c >= '0' && *c <= '9') ? strtoll(c, &e, 10) : 0;
        if (id <= 0 || errno || (*e && *e != ',')) break;
        if (o + 32 >= n) return kv_errorf(KV_EINVAL, "--measured: too many run ids");
        o += (size_t)snprintf(sql + o, n - o, "%s%lld", k++ ? "," : "", id);
        if (!*e) {
            snprintf(sql + o, n - o, ") ORDER BY id");
            return KV_OK;
        }
        c = e + 1;
    }
    return kv_errorf(KV_EINVAL, "--measured takes 'all' or run ids like 3,4,7, got '%s'", sel);
}

kv_status exp_compare(kv_db *db, const char *sel, const hw_profile *p, const char *dir, FILE *out, exp_cmp *res) {
    memset(res, 0, sizeof *res);
    char sql[4096];
    kv_status st = measured_sql(sel, sql, sizeof sql);
    if (st) return st;
    if (dir && (st = exp_plot_dir(dir))) return st;
    sqlite3_stmt *q = NULL, *qs = NULL;
    if (sqlite3_prepare_v2(db_handle(db), sql, -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db_handle(db), "SELECT step, layer, mb, op, start_ps, end_ps FROM spans WHERE run_id = ?", -1, &qs, NULL) != SQLITE_OK) {
        st = kv_errorf(KV_EDB, "compare: %s", sqlite3_errmsg(db_handle(db)));
        sqlite3_finalize(q);
        sqlite3_finalize(qs);
        return st;
    }
    vec op_err[KV_OP_COUNT], step_err = {0};
    memset(op_err, 0, sizeof op_err);
    sim_ctx *sx = sim_new();
    st = sx ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    exp_fig scatter;
    FILE *sc = NULL;
    if (!st && dir && !(st = exp_fig_open(&scatter, dir, "compare-scatter", 1))) sc = scatter.dat;
    int drawn = 0;
    while (!st && sqlite3_step(q) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        const char *mname = (const char *)sqlite3_column_text(q, 1), *pj = (const char *)sqlite3_column_text(q, 2);
        kv_model m;
        kv_plan pl;
        if ((st = kv_model_resolve(mname, &m))) {
            st = kv_errctx(st, "engine run %lld: ", (long long)id);
            break;
        }
        if ((st = kv_plan_from_json(pj ? pj : "{}", &pl))) break;
        sim_result sr;
        st = sim_run(sx, &m, p, &pl, &sr);
        if (st) {
            free(pl.split_steps);
            st = kv_errctx(st, "re-simulating engine run %lld: ", (long long)id);
            break;
        }
        /* measured spans */
        int nm = 0, cap = 1024;
        jspan *ms = malloc(sizeof(jspan) * (size_t)cap);
        sqlite3_reset(qs);
        sqlite3_bind_int64(qs, 1, id);
        while (ms && sqlite3_step(qs) == SQLITE_ROW) {
            if (nm == cap) {
                jspan *r = realloc(ms, sizeof(jspan) * (size_t)(cap *= 2));
                if (!r) break;
                ms = r;
            }
            int op = op_index((const char *)sqlite3_column_text(qs, 3));
            if (op < 0) continue;
            double a = (double)sqlite3_column_int64(qs, 4) * 1e-12, b = (double)sqlite3_column_int64(qs, 5) * 1e-12;
            ms[nm++] = (jspan){sqlite3_column_int(qs, 0), sqlite3_column_int(qs, 1), sqlite3_column_int(qs, 2), op, b - a, a};
        }
        sim_des *d = sim_last_des(sx);
        int ns = sim_des_count(d);
        jspan *ss = malloc(sizeof(jspan) * (size_t)(ns ? ns : 1));
        int res_of_op[KV_OP_COUNT] = {0};
        for (int i = 0; ss && i < ns; i++) {
            sim_task *t = sim_des_get(d, i);
            ss[i] = (jspan){t->step, t->layer, t->mb, t->op, sim_to_s(t->end - t->start), sim_to_s(t->start)};
            res_of_op[t->op] = t->res == KV_RES_H2D ? 0 : t->res == KV_RES_D2H ? 1 : 2;
        }
        if (!ms || !ss) {
            free(ms), free(ss), free(pl.split_steps);
            st = kv_errorf(KV_ENOMEM, "out of memory");
            break;
        }
        qsort(ms, (size_t)nm, sizeof *ms, cmp_js);
        qsort(ss, (size_t)ns, sizeof *ss, cmp_js);
        int i = 0, j = 0;
        while (i < nm && j < ns) {
            int c = cmp_js(&ms[i], &ss[j]);
            if (c < 0) i++, res->missing++;
            else if (c > 0) j++, res->missing++;
            else {
                if (ms[i].dur > 0) {
                    push(&op_err[ms[i].op], (ss[j].dur - ms[i].dur) / ms[i].dur);
                    if (sc) fprintf(sc, "%d %d %d %d %d %.9g %.9g\n", ms[i].step, ms[i].layer, ms[i].mb, 0, ms[i].op, ms[i].dur, ss[j].dur);
                }
                res->joined++, i++, j++;
            }
        }
        res->missing += (nm - i) + (ns - j);
        /* decode steps: measured step time from the spans' ends */
        int T = kv_plan_steps(&pl);
        double *end = calloc((size_t)T, sizeof *end);
        /* decode starts at the first token: the prompt pass's last LM head (0 without a prompt pass) */
        double first = 0;
        for (int k = 0; k < nm; k++)
            if (ms[k].step < 0 && ms[k].op == KV_OP_HEAD) first = fmax(first, ms[k].start + ms[k].dur);
        for (int t = 0; end && t < T; t++) end[t] = first;
        for (int k = 0; end && k < nm; k++)
            if (ms[k].step >= 0 && ms[k].step < T) end[ms[k].step] = fmax(end[ms[k].step], ms[k].start + ms[k].dur);
        double se = 0;
        int sn = 0;
        for (int t = 0; end && t < T; t++) {
            double mt = end[t] - (t ? end[t - 1] : first);
            if (mt > 0) {
                double e = (sr.step_s[t] - mt) / mt;
                push(&step_err, e);
                se += fabs(e), sn++;
            }
        }
        if (!drawn && dir) st = fig_timeline(dir, ms, nm, ss, ns, T / 2, res_of_op), drawn = 1;
        free(end);
        /* the re-simulated run lands in the database, with its error against the measurement */
        char key[160];
        snprintf(key, sizeof key, "compare/%lld/%.100s", (long long)id, p->name);
        int64_t sid;
        if (!st && !(st = sim_write_db(sx, db, &m, p, &pl, &sr, key, 1, &sid))) {
            st = db_metric_add(db, sid, "measured_run", (double)id, "");
            if (!st && sn) st = db_metric_add(db, sid, "step_mape", se / sn, "");
        }
        res->runs++;
        free(ms), free(ss), free(pl.split_steps);
    }
    sqlite3_finalize(q);
    sqlite3_finalize(qs);
    sim_free(sx);
    for (int k = 0; k < KV_OP_COUNT; k++) stats(&op_err[k], &res->op[k]), free(op_err[k].v);
    stats(&step_err, &res->step);
    free(step_err.v);
    if (!st && !res->runs) st = kv_errorf(KV_ENOTFOUND, "no engine runs to compare (run 'kvpr-engine run' on a GPU, or give --from traces/...)");
    if (sc) {
        if (st) exp_fig_abort(&scatter);
        else st = fig_scatter(&scatter);
    }
    if (st) return st;
    if (out) {
        fprintf(out, "%d engine runs re-simulated on %s; %d spans joined on (step, layer, mb, op), %d unmatched\n", res->runs, p->name,
                res->joined, res->missing);
        fprintf(out, "%-12s %7s %9s %9s %9s %9s %9s\n", "error of", "n", "MAPE", "median", "p90", "max", "bias");
        for (int k = 0; k < KV_OP_COUNT; k++) {
            const exp_cmp_stat *s = &res->op[k];
            if (s->n)
                fprintf(out, "%-12s %7d %8.2f%% %8.2f%% %8.2f%% %8.2f%% %+8.2f%%\n", kv_op_name((kv_op)k), s->n, 100 * s->mape, 100 * s->median,
                        100 * s->p90, 100 * s->max, 100 * s->bias);
        }
        const exp_cmp_stat *s = &res->step;
        fprintf(out, "%-12s %7d %8.2f%% %8.2f%% %8.2f%% %8.2f%% %+8.2f%%\n", "decode step", s->n, 100 * s->mape, 100 * s->median, 100 * s->p90,
                100 * s->max, 100 * s->bias);
        if (dir) fprintf(out, "figures: %s/compare-scatter.{png,svg}, %s/compare-timeline.{png,svg}\n", dir, dir);
    }
    return KV_OK;
}
