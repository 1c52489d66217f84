/* exp/servers: what if several GPUs share one host? For each topology, model and policy, N
 * data-parallel replicas (N from 'gpus', up to the topology's GPUs) simulated on one host by
 * sim_multi_run; KVPR's split chosen for the shared host (the scheduler sees one replica's share
 * of every shared hop) and, for comparison, the split one GPU alone would use. `kvpr run` stores
 * one run per configuration in results.db (exp_servers_store, also used by `kvpr sim --gpus`);
 * `kvpr report` reads them back: aggregate decode throughput against N, one panel per topology,
 * and a table naming the bottleneck hop. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/topo.h"
#include "../sim/multi.h"
#include "exp.h"

typedef struct {
    int topo, model, pol, gpus, fits, present;
    int split, alone_split;
    double agg, per_gpu, agg_alone; /* agg_alone: kvpr with the one-GPU split */
    char bottleneck[40];
    double share;
} srow;

/* The scheduler that chooses KVPR's split: the experiment's first, but one split per run (the
 * replicas share one plan), so dynamic falls back to pipelined. */
static sched_kind server_sched(const exp_spec *s) {
    sched_kind k = s->nscheds ? s->scheds[0] : SCHED_PIPELINED;
    return k == SCHED_DYNAMIC ? SCHED_PIPELINED : k;
}

static kv_status plan_of(const exp_spec *s, const kv_model *m, const hw_profile *p, const hw_topo *t, kv_policy pol, int n, kv_plan *pl,
                         int *alone) {
    exp_run r = {.pol = pol}; /* server sweeps have one mode, batch, prompt, gen and compression */
    exp_plan_fields(s, &r, pl);
    *alone = -1;
    if (pol != KV_POL_KVPR) return KV_OK;
    return sched_plan_shared(server_sched(s), m, p, t, n, pl, alone);
}

/* A run's key: an experiment's key (exp_run_key's layout) with the replicas added */
static void row_key(const exp_spec *s, const srow *r, char *key, size_t n) {
    kv_policy pol = (kv_policy)r->pol;
    snprintf(key, n, "exp/%s/%s/%s/%s/%d/%d/%d/%s/%s/gpus-%d", s->name, s->models[r->model], s->hws[r->topo], kv_mode_name(s->modes[0]),
             s->batch[0], s->prompt[0], s->gen[0], kv_policy_name(pol), pol == KV_POL_KVPR ? sched_name(server_sched(s)) : "-", r->gpus);
    size_t l = strlen(key);
    if (s->ncomps && s->comps[0] && l < n) snprintf(key + l, n - l, "/compress-%s", kv_compress_name(s->comps[0]));
}

/* The rows of the experiment, in its order (topology, model, policy, gpus); counts the GPU counts
 * a topology has (a box with fewer GPUs skips the rest). */
static srow *rows_of(const exp_spec *s, int *nout, kv_status *st) {
    int cap = s->nhws * s->nmodels * s->npols * s->ngpus, n = 0;
    srow *rows = calloc((size_t)(cap ? cap : 1), sizeof *rows);
    *st = rows ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    for (int ti = 0; ti < s->nhws && !*st; ti++) {
        hw_topo t;
        if ((*st = hw_topo_resolve(s->hws[ti], &t))) break;
        for (int mi = 0; mi < s->nmodels; mi++)
            for (int pi = 0; pi < s->npols; pi++)
                for (int gi = 0; gi < s->ngpus; gi++) {
                    if (s->gpus[gi] > t.ngpus) continue; /* the box has fewer GPUs */
                    srow *r = &rows[n++];
                    r->topo = ti, r->model = mi, r->pol = s->pols[pi], r->gpus = s->gpus[gi], r->alone_split = -1;
                }
    }
    if (*st) {
        free(rows);
        return NULL;
    }
    *nout = n;
    return rows;
}

static kv_status put(kv_db *db, int64_t id, const char *name, double v, const char *unit) { return db_run_metric(db, id, name, v, unit); }

kv_status exp_servers_store(kv_db *db, const char *run_key, const char *sched, const kv_model *m, const hw_profile *p, const hw_topo *t,
                            const kv_plan *pl, const sim_multi_result *r, int alone_split, double agg_alone, const char *nofit) {
    char *pj = kv_plan_json(pl);
    json_t *plan = pj ? json_loads(pj, 0, NULL) : NULL;
    free(pj);
    if (!plan) return kv_errorf(KV_ENOMEM, "out of memory");
    int n = nofit ? 0 : r->n;
    /* what the runs of one host share: the topology, its GPU profile and the replicas */
    json_object_set_new(plan, "topology", json_string(t->name));
    json_object_set_new(plan, "profile", json_string(p->name));
    json_object_set_new(plan, "gpus", json_integer(n));
    if (nofit) json_object_set_new(plan, "nofit", json_string(nofit));
    json_t *wl = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i}", "mode", kv_mode_name(pl->mode), "batch", pl->batch, "nb", pl->nb, "prompt",
                           pl->prompt, "gen", pl->gen, "gpus", n);
    char *ps = json_dumps(plan, JSON_COMPACT | JSON_SORT_KEYS), *ws = wl ? json_dumps(wl, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(plan), json_decref(wl);
    kv_status st = ps && ws ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    db_run_info in = {.kind = "sim", .model = m->name, .hardware = t->name, .workload = ws, .plan = ps, .run_key = run_key, .scheduler = sched};
    int64_t id = 0;
    if (!st) st = db_run_begin(db, &in, &id);
    free(ps), free(ws);
    if (st) return st;
    st = put(db, id, "fits", nofit ? 0 : 1, "");
    if (!st && !nofit) {
        char nm[96];
        st = put(db, id, "gpus", r->n, "");
        if (!st) st = put(db, id, "aggregate_tok_s", r->aggregate_tok_s, "tok/s");
        if (!st) st = put(db, id, "per_gpu_tok_s", r->aggregate_tok_s / r->n, "tok/s");
        for (int g = 0; g < r->n && !st; g++) {
            snprintf(nm, sizeof nm, "gpu%d_tok_s", g);
            st = put(db, id, nm, r->rep_tok_s[g], "tok/s");
        }
        /* the names the single-GPU tables read: decode time of the slowest replica, its split */
        if (!st) st = put(db, id, "decode_s", r->decode_s, "s");
        if (!st) st = put(db, id, "prefill_s", r->prefill_s, "s");
        if (!st) st = put(db, id, "util_gpu", r->gpu_util, "");
        if (!st && pl->policy == KV_POL_KVPR) st = put(db, id, "split_first", r->split, "");
        if (!st && pl->policy == KV_POL_KVPR && alone_split >= 0) st = put(db, id, "alone_split", alone_split, "");
        if (!st && pl->policy == KV_POL_KVPR && agg_alone > 0) st = put(db, id, "aggregate_tok_s_alone_split", agg_alone, "tok/s");
        /* the bottleneck's name is the metric's name (metrics hold numbers): "bottleneck:NAME" = its share */
        snprintf(nm, sizeof nm, "bottleneck:%s", sim_multi_bottleneck(r));
        if (!st) st = put(db, id, nm, r->bottleneck_share, "share");
        double total = r->prefill_s + r->decode_s;
        for (int h = 0; h < r->nhop && !st; h++) {
            if (r->hop[h].busy_s <= 0) continue;
            snprintf(nm, sizeof nm, "hop_saturated:%s", r->hop[h].name);
            st = put(db, id, nm, total > 0 ? r->hop[h].sat_s / total : 0, "share");
            snprintf(nm, sizeof nm, "hop_bytes:%s", r->hop[h].name);
            if (!st) st = put(db, id, nm, r->hop[h].bytes, "B");
        }
    }
    if (!st) st = db_run_commit(db);
    if (st) db_run_abort(db);
    return st;
}

kv_status exp_servers_execute(const exp_spec *s, const char *dbpath, int *ran, int *nofit) {
    int n, ms;
    kv_status st = db_timeout_from_env(30000, &ms);
    srow *rows = st ? NULL : rows_of(s, &n, &st);
    if (st) return kv_errctx(st, "%s: ", s->path);
    kv_db *db = NULL;
    sim_ctx *sx = sim_new();
    if (!sx) st = kv_errorf(KV_ENOMEM, "out of memory");
    if (!st) st = db_open(dbpath, ms, &db);
    *ran = *nofit = 0;
    hw_topo t;
    hw_profile p;
    kv_model m;
    int cur_t = -1, cur_m = -1;
    for (int i = 0; i < n && !st; i++) {
        srow *r = &rows[i];
        if (r->topo != cur_t && ((st = hw_topo_resolve(s->hws[r->topo], &t)) || (st = hw_profile_resolve(t.profile, &p)))) break;
        if ((r->topo != cur_t || r->model != cur_m) && (st = kv_model_resolve(s->models[r->model], &m))) break;
        cur_t = r->topo, cur_m = r->model;
        kv_plan pl;
        sim_multi_result res, alone;
        char key[700];
        row_key(s, r, key, sizeof key);
        const char *sched = r->pol == KV_POL_KVPR ? sched_name(server_sched(s)) : NULL;
        if ((st = plan_of(s, &m, &p, &t, (kv_policy)r->pol, r->gpus, &pl, &r->alone_split))) break;
        st = sim_multi_run(sx, &m, &p, &t, r->gpus, &pl, &res);
        if (st == KV_ENOFIT) { /* a run that does not fit is a result, not an error: recorded as such */
            char why[600];
            snprintf(why, sizeof why, "%s", kv_errmsg());
            kv_errclear();
            memset(&res, 0, sizeof res);
            st = exp_servers_store(db, key, sched, &m, &p, &t, &pl, &res, -1, 0, why);
            *nofit += 1;
            continue;
        }
        if (st) break;
        double agg_alone = res.aggregate_tok_s;
        if (r->pol == KV_POL_KVPR && r->alone_split != res.split) {
            kv_plan pa = pl;
            pa.split = r->alone_split;
            if ((st = sim_multi_run(sx, &m, &p, &t, r->gpus, &pa, &alone))) break;
            agg_alone = alone.aggregate_tok_s;
        }
        if (!(st = exp_servers_store(db, key, sched, &m, &p, &t, &pl, &res, r->alone_split, agg_alone, NULL))) *ran += 1;
    }
    sim_free(sx);
    db_close(db);
    free(rows);
    return st ? kv_errctx(st, "%s: ", s->path) : KV_OK;
}

/* The rows as results.db holds them (read-only); *missing counts those not run yet. */
static kv_status load_rows(const exp_spec *s, const char *dbpath, srow **out, int *nout, int *missing) {
    int n, ms;
    kv_status st = db_timeout_from_env(30000, &ms);
    srow *rows = st ? NULL : rows_of(s, &n, &st);
    if (st) return kv_errctx(st, "%s: ", s->path);
    kv_db *db = NULL;
    if ((st = db_open_ro(dbpath, ms, &db))) {
        free(rows);
        return st;
    }
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db_handle(db), "SELECT m.name, m.value FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.run_key = ?", -1, &q,
                           NULL) != SQLITE_OK)
        st = kv_errorf(KV_EDB, "report: %s", sqlite3_errmsg(db_handle(db)));
    *missing = 0;
    for (int i = 0; i < n && !st; i++) {
        srow *r = &rows[i];
        char key[700];
        row_key(s, r, key, sizeof key);
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
        int rc;
        r->alone_split = -1;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            const char *nm = (const char *)sqlite3_column_text(q, 0);
            double v = sqlite3_column_double(q, 1);
            r->present = 1;
            if (!nm) continue;
            if (!strcmp(nm, "fits")) r->fits = v > 0;
            else if (!strcmp(nm, "aggregate_tok_s")) r->agg = v;
            else if (!strcmp(nm, "per_gpu_tok_s")) r->per_gpu = v;
            else if (!strcmp(nm, "split_first")) r->split = (int)v;
            else if (!strcmp(nm, "alone_split")) r->alone_split = (int)v;
            else if (!strcmp(nm, "aggregate_tok_s_alone_split")) r->agg_alone = v;
            else if (!strncmp(nm, "bottleneck:", 11)) {
                snprintf(r->bottleneck, sizeof r->bottleneck, "%s", nm + 11);
                r->share = v;
            }
        }
        if (rc != SQLITE_DONE) st = kv_errorf(KV_EDB, "report: reading runs: %s", sqlite3_errmsg(db_handle(db)));
        if (r->fits && r->agg_alone <= 0) r->agg_alone = r->agg;
        *missing += !r->present;
    }
    sqlite3_finalize(q);
    db_close(db);
    if (st) {
        free(rows);
        return st;
    }
    *out = rows, *nout = n;
    return KV_OK;
}

static kv_status figure(const exp_spec *s, const char *dir, const srow *rows, int n) {
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, s->name, 1);
    if (st) return st;
    /* one data block per (topology, policy): gpus aggregate_tok_s */
    int blocks = 0;
    for (int ti = 0; ti < s->nhws; ti++)
        for (int pi = 0; pi < s->npols; pi++) {
            fprintf(F.dat, "%s# %s %s: gpus aggregate_tok_s\n", blocks ? "\n\n" : "", s->hws[ti], kv_policy_name(s->pols[pi]));
            for (int i = 0; i < n; i++)
                if (rows[i].topo == ti && rows[i].pol == (int)s->pols[pi] && rows[i].model == 0 && rows[i].fits)
                    fprintf(F.dat, "%d %.9g\n", rows[i].gpus, rows[i].agg);
            blocks++;
        }
    int cols = s->nhws < 2 ? 1 : 2, lines = (s->nhws + cols - 1) / cols;
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 560 * cols, 420 * lines + 40);
        fprintf(F.gp, "set multiplot layout %d,%d title ", lines, cols);
        exp_gp_str(F.gp, s->title[0] ? s->title : s->name);
        fprintf(F.gp, " noenhanced\nset grid\nset key top left noenhanced\nset xlabel 'GPUs (data-parallel replicas)'\n"
                      "set ylabel 'aggregate decode tokens/s'\nset logscale x 2\nset xrange [0.8:*]\nset yrange [0:*]\n");
        for (int ti = 0; ti < s->nhws; ti++) {
            fprintf(F.gp, "set title ");
            exp_gp_str(F.gp, s->hws[ti]);
            fprintf(F.gp, " noenhanced\nplot ");
            for (int pi = 0; pi < s->npols; pi++) {
                fprintf(F.gp, "%s", pi ? ", " : "");
                exp_gp_str(F.gp, F.dat_path);
                fprintf(F.gp, " index %d with linespoints lw 2 pt 7 title '%s'", ti * s->npols + pi, kv_policy_name(s->pols[pi]));
            }
            fprintf(F.gp, "\n");
        }
        fprintf(F.gp, "unset multiplot\n");
    }
    return exp_fig_close(&F);
}

kv_status exp_servers_report(const exp_spec *s, const char *dbpath, const char *dir, int csv, FILE *o) {
    srow *rows;
    int n, missing;
    kv_status st = load_rows(s, dbpath, &rows, &n, &missing);
    if (st) return st;
    if (csv) fprintf(o, "topology,model,policy,gpus,split,aggregate_tok_s,per_gpu_tok_s,bottleneck,bottleneck_share,alone_split,aggregate_tok_s_alone_split\n");
    else {
        fprintf(o, "%s: %s\n", s->name, s->title);
        fprintf(o, "  %s mode, batch %d x %d per GPU, prompt %d, gen %d; one replica per GPU, all on one host\n", kv_mode_name(s->modes[0]),
                s->batch[0], s->modes[0] == KV_MODE_THROUGHPUT ? s->nb : 1, s->prompt[0], s->gen[0]);
        if (missing) fprintf(o, "  (%d of %d runs are not in %s yet: kvpr run %s)\n", missing, n, dbpath, s->name);
        fprintf(o, "\n");
        fprintf(o, "  %-13s %-11s %-9s %4s %6s %10s %9s  %-22s %6s  %s\n", "topology", "model", "policy", "gpus", "split", "agg tok/s",
                "per GPU", "bottleneck", "share", "kvpr with the 1-GPU split");
    }
    for (int i = 0; i < n; i++) {
        const srow *r = &rows[i];
        const char *pol = kv_policy_name((kv_policy)r->pol);
        if (csv) {
            fprintf(o, "%s,%s,%s,%d,", s->hws[r->topo], s->models[r->model], pol, r->gpus);
            if (!r->present) fprintf(o, ",,,not run,,,\n");
            else if (!r->fits) fprintf(o, ",,,does not fit,,,\n");
            else if (r->pol != KV_POL_KVPR) fprintf(o, ",%.6g,%.6g,%s,%.4f,,\n", r->agg, r->per_gpu, r->bottleneck, r->share);
            else fprintf(o, "%d,%.6g,%.6g,%s,%.4f,%d,%.6g\n", r->split, r->agg, r->per_gpu, r->bottleneck, r->share, r->alone_split, r->agg_alone);
            continue;
        }
        fprintf(o, "  %-13s %-11s %-9s %4d ", s->hws[r->topo], s->models[r->model], pol, r->gpus);
        if (!r->present) {
            fprintf(o, "not run\n");
            continue;
        }
        if (!r->fits) {
            fprintf(o, "does not fit (host memory)\n");
            continue;
        }
        if (r->pol == KV_POL_KVPR) fprintf(o, "%6d ", r->split);
        else fprintf(o, "%6s ", "-");
        fprintf(o, "%10.1f %9.1f  %-22s %5.1f%%", r->agg, r->per_gpu, r->bottleneck, 100 * r->share);
        if (r->pol == KV_POL_KVPR && r->alone_split >= 0) {
            fprintf(o, "  l = %d", r->alone_split);
            if (r->alone_split != r->split) fprintf(o, ": %.1f tok/s (%+.1f %%)", r->agg_alone, 100 * (r->agg_alone / r->agg - 1));
            else fprintf(o, ": the same split");
        }
        fprintf(o, "\n");
    }
    if (!csv && dir) st = figure(s, dir, rows, n);
    if (!st && !csv && dir) fprintf(o, "\n  figure: %s/%s.png (.svg)\n", dir, s->name);
    free(rows);
    return st;
}
