/* kvpr validate: how far is each scheduler's split from the best split the simulator finds?
 * For every configuration of a grid, the best fixed split l = 0..lmax by simulation (exactly as
 * simulating every split: splits are bounded out only when a lower bound proves them slower),
 * then each scheduler's choice; regret = T_sim(choice) / min_l T_sim(l) - 1. */
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../core/kv_io.h"
#include "../core/kv_str.h"
#include "../sched/sched.h"
#include "../exp/exp.h"
#include "../sim/sim.h"
#include "../core/datadir.h"
#include "../core/par.h"
#include "cli.h"
#include "cmd_search.h"

#define MAXV 16

typedef struct {
    char models[MAXV][128], hws[MAXV][128];
    int nm, nh, batch[MAXV], nbt, prompt[MAXV], np, gen[MAXV], ng, nbm;
    kv_mode mode[2];
    int nmode;
    sched_kind sk[SCHED_COUNT];
    int ns;
} grid;

typedef struct {
    char cfg[256];
    int sched, split, best_l;
    double t, best, regret;
} row;

static kv_status jstrs(json_t *o, const char *f, const char *key, char dst[][128], int *n) {
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > MAXV)
        return kv_errorf(KV_EPARSE, "%s: '%s' must be an array of 1 to %d strings", f, key, MAXV);
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        const char *s = json_string_value(json_array_get(a, (size_t)i));
        if (!s) return kv_errorf(KV_EPARSE, "%s: '%s[%d]' must be a string", f, key, i);
        if (kv_str_copy(dst[i], 128, s)) return kv_errorf(KV_EINVAL, "%s: '%s[%d]' is longer than 127 bytes", f, key, i);
    }
    return KV_OK;
}

static kv_status jints(json_t *o, const char *f, const char *key, int *dst, int *n, int lo, int hi) {
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > MAXV)
        return kv_errorf(KV_EPARSE, "%s: '%s' must be an array of 1 to %d integers", f, key, MAXV);
    *n = (int)json_array_size(a);
    for (int i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
            return kv_errorf(KV_EINVAL, "%s: '%s[%d]' must be an integer in [%d, %d]", f, key, i, lo, hi);
        dst[i] = (int)json_integer_value(v);
    }
    return KV_OK;
}

static kv_status load_grid(const char *f, grid *g) {
    char *text;
    size_t len;
    kv_status rs = kv_io_read_all(f, 1 << 24, &text, &len); /* a regular file only: a FIFO would block */
    if (rs) return rs;
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!o) return kv_errorf(KV_EPARSE, "%s:%d:%d: %s", f, je.line, je.column, je.text);
    memset(g, 0, sizeof *g);
    kv_status st = KV_OK;
    static const char *const keys[] = {"about", "models", "hardware", "batch", "prompt", "gen", "mode", "nb", "schedulers", NULL};
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int ok = 0;
        for (const char *const *a = keys; *a; a++) ok |= !strcmp(*a, k);
        if (!ok) {
            st = kv_errorf(KV_EPARSE, "%s: unknown key '%s'", f, k);
            goto done;
        }
    }
    char tmp[MAXV][128];
    int n;
    if ((st = jstrs(o, f, "models", g->models, &g->nm)) || (st = jstrs(o, f, "hardware", g->hws, &g->nh)) ||
        (st = jints(o, f, "batch", g->batch, &g->nbt, 1, 1 << 16)) || (st = jints(o, f, "prompt", g->prompt, &g->np, 1, 1 << 16)) ||
        (st = jints(o, f, "gen", g->gen, &g->ng, 2, 1 << 16)) || (st = jstrs(o, f, "mode", tmp, &n)))
        goto done;
    if (n > 2) {
        st = kv_errorf(KV_EPARSE, "%s: 'mode' has at most 2 entries", f);
        goto done;
    }
    g->nmode = n;
    for (int i = 0; i < n; i++)
        if ((st = kv_mode_parse(tmp[i], &g->mode[i]))) goto ctx;
    if ((st = jstrs(o, f, "schedulers", tmp, &n))) goto done;
    if (n > SCHED_COUNT) {
        st = kv_errorf(KV_EPARSE, "%s: too many schedulers", f);
        goto done;
    }
    g->ns = n;
    for (int i = 0; i < n; i++)
        if ((st = sched_parse(tmp[i], &g->sk[i]))) goto ctx;
    json_t *nb = json_object_get(o, "nb");
    /* range-checked before the conversion to int: 4294967297 must not become 1 */
    json_int_t nbv = nb ? (json_is_integer(nb) ? json_integer_value(nb) : 0) : 8;
    if (nbv < 1 || nbv > 64) st = kv_errorf(KV_EINVAL, "%s: 'nb' must be an integer in [1, 64]", f);
    else g->nbm = (int)nbv;
    goto done;
ctx:
    kv_errctx(st, "%s: ", f);
done:
    json_decref(o);
    return st;
}

static int cmp_row(const void *a, const void *b) {
    double x = ((const row *)a)->regret, y = ((const row *)b)->regret;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* One configuration of the grid, as the nested loops below visit it. */
static kv_status grid_config(const grid *g, int idx, kv_model *m, hw_profile *p, kv_plan *pl) {
    int f = idx % g->nmode, e = idx / g->nmode % g->ng, d = idx / g->nmode / g->ng % g->np;
    int c = idx / g->nmode / g->ng / g->np % g->nbt, b = idx / g->nmode / g->ng / g->np / g->nbt % g->nh;
    int a = idx / g->nmode / g->ng / g->np / g->nbt / g->nh;
    kv_status st;
    if ((st = kv_model_resolve(g->models[a], m)) || (st = hw_profile_resolve(g->hws[b], p))) return st;
    kv_plan_defaults(pl);
    pl->mode = g->mode[f], pl->batch = g->batch[c], pl->prompt = g->prompt[d], pl->gen = g->gen[e];
    pl->nb = pl->mode == KV_MODE_THROUGHPUT ? g->nbm : 1;
    return KV_OK;
}

/* The best split of every configuration (nearly all of validate's time), found by worker
 * processes into shared memory: each takes the next configuration (a shared counter) and finds
 * its best split exactly as a run of every split would, by branch and bound on the simulator's
 * lower bound (sim_best_split: the splits whose bound exceeds the best time found are not run).
 * A configuration's answer is the same whichever process computes it, so the results do not
 * depend on jobs. */
typedef struct {
    int lmax;       /* -1: does not fit */
    size_t off;     /* first of its lmax + 1 times in the shared array (NAN: not run) */
    int best_l, nsim;
    double best;
    int failed;     /* a simulation failed: err says why */
    char err[240];
} sweep_slot;

typedef struct {
    const grid *g;
    sweep_slot *sl;
    double *ts;
} sweep_ctx;

typedef struct {
    sim_ctx *sx;
    double *lb;
    int lbcap;
} sweep_local;

static void sweep_fini(void *local) {
    sweep_local *w = local;
    if (!w) return;
    sim_free(w->sx);
    free(w->lb);
    free(w);
}

/* One configuration's best split (a worker's piece); its failure is recorded in its slot. */
static int sweep_one(void *ctx, long i, void **local) {
    sweep_ctx *c = ctx;
    sweep_slot *sl = &c->sl[i];
    sweep_local *w = *local;
    if (!w) {
        if (!(w = calloc(1, sizeof *w)) || !(w->sx = sim_new())) {
            free(w);
            return 1;
        }
        sim_stream(w->sx, SIM_STREAM_LARGE, 0); /* only results are read: the graph streams */
        *local = w;
    }
    if (sl->lmax < 0) return 0;
    kv_model m;
    hw_profile p;
    kv_plan pl;
    kv_status st = grid_config(c->g, (int)i, &m, &p, &pl);
    if (!st && sl->lmax + 1 > w->lbcap) {
        double *q = realloc(w->lb, sizeof *q * ((size_t)sl->lmax + 1));
        if (!q) return 1;
        w->lb = q, w->lbcap = sl->lmax + 1;
    }
    if (!st) st = sim_best_split(w->sx, &m, &p, &pl, sl->lmax, c->ts + sl->off, w->lb, &sl->best_l, &sl->best, &sl->nsim);
    if (st) {
        sl->failed = 1;
        snprintf(sl->err, sizeof sl->err, "%s", kv_errmsg());
    }
    return 0;
}

/* A figure of decode time against every split: the splits the search did not run are run now. */
static kv_status fill_sweep(sim_ctx *sx, const grid *g, int idx, double *ts, int lmax) {
    kv_model m;
    hw_profile p;
    kv_plan pl;
    kv_status st = grid_config(g, idx, &m, &p, &pl);
    sim_result r;
    for (int l = 0; !st && l <= lmax; l++)
        if (ts[l] != ts[l]) {
            pl.split = l;
            if (!(st = sim_run(sx, &m, &p, &pl, &r))) ts[l] = r.decode_s;
        }
    return st;
}

int cmd_validate(int argc, char **argv) {
    /* --search: the search's regret against brute-force simulation (kvpr search --validate) */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--search")) return cmd_search(argc, argv);
    char gridbuf[4200];
    snprintf(gridbuf, sizeof gridbuf, "%s/experiments/validate-grid.json", kv_datadir());
    const char *gridf = gridbuf, *dbpath = DB_DEFAULT_PATH, *plots = "plots";
    int quiet = 0, jobs = (int)sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kvpr validate [--grid FILE] [--db FILE | --no-db] [--plots DIR] [--jobs N] [--quiet]\n"
                   "Finds the best split of every grid configuration by simulation and reports each scheduler's\n"
                   "regret T_sim(chosen) / min_l T_sim(l) - 1. The minimum is exact: a split is not simulated only\n"
                   "when its lower bound (every queue's and link's work after the first token) exceeds a time\n"
                   "already simulated. Configurations run in N worker processes (default: one per online CPU);\n"
                   "the results do not depend on N. Default grid: %s\n", gridf);
            return 0;
        }
        if (!strcmp(argv[i], "--no-db")) dbpath = NULL;
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--grid")) gridf = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--db")) dbpath = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--plots")) plots = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--jobs")) {
            kv_status js = cli_int("--jobs", argv[++i], 1, 64, &jobs);
            if (js) return cli_fail(js);
        } else return cli_usage("validate: unknown or incomplete option '%s'", argv[i]);
    }
    if (jobs < 1) jobs = 1;
    if (jobs > 64) jobs = 64;
    grid g;
    kv_status st = load_grid(gridf, &g);
    if (st) return cli_fail(st);
    kv_db *db = NULL;
    if ((st = exp_plot_dir(plots))) return cli_fail(st);
    if (dbpath && (st = cli_db_open(dbpath, &db))) return cli_fail(st);
    int cap = g.nm * g.nh * g.nbt * g.np * g.ng * g.nmode * g.ns, nr = 0, skipped = 0;
    row *rows = calloc((size_t)cap + 1, sizeof *rows);
    double worst_paper = -1;
    int worst_idx = -1;
    exp_mark worst_mark = {0};
    char worst_cfg[256] = "";
    long nsim = 0, nsplit = 0;
    sim_ctx *sx = sim_new();
    if (sx) sim_stream(sx, SIM_STREAM_LARGE, 0); /* only results are read: the graph streams */
    if (!rows || !sx) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    /* every configuration's split bound first (cheap), then all sweeps at once in the workers */
    int ncfg = cap / (g.ns ? g.ns : 1);
    sweep_slot *sl = calloc((size_t)ncfg + 1, sizeof *sl);
    if (!sl) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto fail;
    }
    size_t total = 0;
    for (int i = 0; i < ncfg; i++) {
        kv_model m;
        hw_profile p;
        kv_plan pl;
        if ((st = grid_config(&g, i, &m, &p, &pl))) goto fail_sl;
        sl[i].lmax = sched_lmax(&m, &p, &pl);
        if (sl[i].lmax < 0) {
            snprintf(sl[i].err, sizeof sl[i].err, "%s", kv_errmsg());
            continue;
        }
        sl[i].off = total;
        total += (size_t)sl[i].lmax + 1;
    }
    size_t shbytes = sizeof(double) * (total + 1) + sizeof(sweep_slot) * ((size_t)ncfg + 1);
    void *sh = kv_par_map(shbytes);
    if (!sh) {
        st = kv_errorf(KV_ENOMEM, "validate: cannot map %zu bytes for the sweeps", shbytes);
        goto fail_sl;
    }
    sweep_slot *shsl = (sweep_slot *)sh;
    double *all = (double *)(shsl + ncfg + 1);
    memcpy(shsl, sl, sizeof *sl * (size_t)ncfg);
    sweep_ctx sc = {&g, shsl, all};
    if ((st = kv_par_for(ncfg, jobs, sweep_one, sweep_fini, &sc))) goto fail_sh;
    for (int i = 0; i < ncfg; i++)
        if (shsl[i].failed) {
            st = kv_errorf(KV_EINVAL, "%s", shsl[i].err);
            goto fail_sh;
        }
    for (int idx = 0; idx < ncfg; idx++) {
                            kv_model m;
                            hw_profile p;
                            kv_plan pl;
                            if ((st = grid_config(&g, idx, &m, &p, &pl))) goto fail_sh;
                            char cfg[256]; /* names are at most 63 bytes: never cut, so run keys stay apart */
                            snprintf(cfg, sizeof cfg, "%s %s b%dx%d p%d g%d %s", m.name, p.name, pl.batch, pl.nb, pl.prompt,
                                     pl.gen, kv_mode_name(pl.mode));
                            int lmax = shsl[idx].lmax;
                            if (lmax < 0) {
                                if (!quiet) printf("skip   %-58s %s\n", cfg, shsl[idx].err);
                                skipped++;
                                continue;
                            }
                            double best = shsl[idx].best;
                            int bl = shsl[idx].best_l;
                            nsim += shsl[idx].nsim, nsplit += lmax + 1;
                            sim_result r;
                            double *ts = all + shsl[idx].off;
                            exp_mark chosen[SCHED_COUNT];
                            for (int k = 0; k < g.ns; k++) {
                                sched_result sr;
                                if ((st = sched_plan(g.sk[k], &m, &p, &pl, NULL, &sr))) goto fail_sh;
                                pl.split = sr.split;
                                pl.split_steps = sr.splits;
                                st = sim_run(sx, &m, &p, &pl, &r);
                                pl.split_steps = NULL;
                                row *w = &rows[nr++];
                                snprintf(w->cfg, sizeof w->cfg, "%s", cfg);
                                w->sched = g.sk[k], w->split = sr.split, w->t = st ? 0 : r.decode_s, w->best = best, w->best_l = bl;
                                w->regret = w->t / best - 1;
                                chosen[k] = (exp_mark){sched_name(g.sk[k]), sr.split, w->t};
                                if (sr.splits) w->split = sr.splits[sr.nsteps - 1];
                                sched_result_free(&sr);
                                if (st) goto fail_sh;
                                if (db) {
                                    char key[320], plan[128];
                                    snprintf(key, sizeof key, "validate/%s/%s", cfg, sched_name(g.sk[k]));
                                    snprintf(plan, sizeof plan, "{\"scheduler\":\"%s\",\"split\":%d}", sched_name(g.sk[k]), w->split);
                                    db_run_info in = {.kind = "sim", .model = m.name, .hardware = p.name, .workload = cfg,
                                                      .plan = plan, .run_key = key};
                                    int64_t id;
                                    if ((st = db_run_begin(db, &in, &id)) || (st = db_run_metric(db, id, "decode_s", w->t, "s")) ||
                                        (st = db_run_metric(db, id, "best_decode_s", best, "s")) ||
                                        (st = db_run_metric(db, id, "best_split", bl, "tokens")) ||
                                        (st = db_run_metric(db, id, "split", w->split, "tokens")) ||
                                        (st = db_run_metric(db, id, "regret", w->regret, "")) || (st = db_run_commit(db)))
                                        goto fail_sh;
                                }
                                if (!quiet)
                                    printf("%-9s %-58s l=%-5d best l=%-5d regret %6.2f %%\n", sched_name(g.sk[k]), cfg, w->split, bl,
                                           100 * w->regret);
                                if (g.sk[k] == SCHED_PAPER && w->regret > worst_paper) {
                                    worst_paper = w->regret, worst_idx = idx, worst_mark = chosen[k];
                                    snprintf(worst_cfg, sizeof worst_cfg, "%s", cfg);
                                }
                            }
                            if (nr == g.ns && ((st = fill_sweep(sx, &g, idx, ts, lmax)) ||
                                               (st = exp_plot_sweep(plots, "validate-first", cfg, ts, lmax + 1, chosen, g.ns))))
                                goto fail_sh;
                        }
    if (worst_idx >= 0 && ((st = fill_sweep(sx, &g, worst_idx, all + shsl[worst_idx].off, shsl[worst_idx].lmax)) ||
                           (st = exp_plot_sweep(plots, "validate-worst-paper", worst_cfg, all + shsl[worst_idx].off,
                                                shsl[worst_idx].lmax + 1, &worst_mark, 1))))
        goto fail_sh;
    printf("\nregret = T_sim(chosen split) / min over every split of T_sim - 1, over %d configurations (%d skipped: do not fit)\n",
           nr / (g.ns ? g.ns : 1), skipped);
    if (!quiet)
        printf("(the best split of each configuration by branch and bound: %ld of %ld splits simulated, the others bounded out)\n", nsim,
               nsplit);
    printf("%-10s %9s %9s %9s %9s\n", "scheduler", "median", "p90", "max", "mean");
    double *x = malloc(sizeof(double) * (size_t)(nr + 1));
    for (int k = 0; k < g.ns; k++) {
        int n = 0;
        for (int i = 0; i < nr; i++)
            if (rows[i].sched == (int)g.sk[k]) x[n++] = rows[i].regret;
        if (!n) continue;
        gsl_sort(x, 1, (size_t)n);
        printf("%-10s %8.2f%% %8.2f%% %8.2f%% %8.2f%%\n", sched_name(g.sk[k]), 100 * gsl_stats_median_from_sorted_data(x, 1, (size_t)n),
               100 * gsl_stats_quantile_from_sorted_data(x, 1, (size_t)n, 0.9), 100 * x[n - 1], 100 * gsl_stats_mean(x, 1, (size_t)n));
    }
    free(x);
    qsort(rows, (size_t)nr, sizeof *rows, cmp_row);
    printf("\nworst cases:\n");
    for (int i = 0; i < nr && i < 6; i++)
        printf("  %-9s %-58s l=%-5d best l=%-5d regret %6.2f %%\n", sched_name((sched_kind)rows[i].sched), rows[i].cfg,
               rows[i].split, rows[i].best_l, 100 * rows[i].regret);
    printf("\nfigures: %s/validate-first.{png,svg}, %s/validate-worst-paper.{png,svg}\n", plots, plots);
    kv_par_unmap(sh, shbytes);
    free(sl);
    free(rows);
    sim_free(sx);
    db_close(db);
    return 0;
fail_sh:
    kv_par_unmap(sh, shbytes);
fail_sl:
    free(sl);
fail:
    free(rows);
    sim_free(sx);
    db_close(db);
    return cli_fail(st);
}
