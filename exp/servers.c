/* exp/servers: what if several GPUs share one host? For each topology, model and policy, N
 * data-parallel replicas (N from 'gpus', up to the topology's GPUs) simulated on one host by
 * sim_multi_run; KVPR's split chosen for the shared host (the scheduler sees one replica's share
 * of every shared hop) and, for comparison, the split one GPU alone would use. Aggregate decode
 * throughput against N, one panel per topology, and a table naming the bottleneck hop. */
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/topo.h"
#include "../sim/multi.h"
#include "exp.h"

typedef struct {
    int topo, model, pol, gpus, fits;
    int split, alone_split;
    double agg, per_gpu, agg_alone; /* agg_alone: kvpr with the one-GPU split */
    char bottleneck[40];
    double share;
} srow;

static kv_status plan_of(const exp_spec *s, const kv_model *m, const hw_profile *p, const hw_topo *t, kv_policy pol, int n, kv_plan *pl,
                         int *alone) {
    kv_plan_defaults(pl);
    pl->mode = s->modes[0];
    pl->policy = pol;
    pl->batch = s->batch[0];
    pl->nb = pl->mode == KV_MODE_THROUGHPUT ? s->nb : 1;
    pl->prompt = s->prompt[0];
    pl->gen = s->gen[0];
    pl->prefetch = s->prefetch;
    pl->keep_act = s->keep_act;
    pl->compress = s->ncomps ? s->comps[0] : 0;
    *alone = -1;
    if (pol != KV_POL_KVPR) return KV_OK;
    sched_kind k = s->nscheds ? s->scheds[0] : SCHED_PIPELINED;
    if (k == SCHED_DYNAMIC) k = SCHED_PIPELINED; /* one split per run: replicas share one plan */
    for (int pass = 0; pass < 2; pass++) {
        hw_profile e;
        hw_topo_effective(t, p, pass ? n : 1, 0, &e);
        sched_result sr = {0};
        kv_status st = sched_plan(k, m, &e, pl, NULL, &sr);
        if (st) return st;
        if (pass) pl->split = sr.split;
        else *alone = sr.split;
        sched_result_free(&sr);
    }
    return KV_OK;
}

static kv_status run_all(const exp_spec *s, srow **out, int *nout) {
    int cap = s->nhws * s->nmodels * s->npols * s->ngpus, n = 0;
    srow *rows = calloc((size_t)(cap ? cap : 1), sizeof *rows);
    sim_ctx *sx = sim_new();
    kv_status st = rows && sx ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    for (int ti = 0; ti < s->nhws && !st; ti++) {
        hw_topo t;
        hw_profile p;
        if ((st = hw_topo_resolve(s->hws[ti], &t)) || (st = hw_profile_resolve(t.profile, &p))) break;
        for (int mi = 0; mi < s->nmodels && !st; mi++) {
            kv_model m;
            if ((st = kv_model_resolve(s->models[mi], &m))) break;
            for (int pi = 0; pi < s->npols && !st; pi++)
                for (int gi = 0; gi < s->ngpus && !st; gi++) {
                    int g = s->gpus[gi];
                    if (g > t.ngpus) continue; /* the box has fewer GPUs */
                    srow *r = &rows[n++];
                    r->topo = ti, r->model = mi, r->pol = s->pols[pi], r->gpus = g;
                    kv_plan pl;
                    sim_multi_result res;
                    if ((st = plan_of(s, &m, &p, &t, s->pols[pi], g, &pl, &r->alone_split))) break;
                    st = sim_multi_run(sx, &m, &p, &t, g, &pl, &res);
                    if (st == KV_ENOFIT) { /* a run that does not fit is a result, not an error */
                        kv_errclear();
                        st = KV_OK;
                        continue;
                    }
                    if (st) break;
                    r->fits = 1;
                    r->split = res.split;
                    r->agg = res.aggregate_tok_s;
                    r->per_gpu = res.aggregate_tok_s / g;
                    snprintf(r->bottleneck, sizeof r->bottleneck, "%s", sim_multi_bottleneck(&res));
                    r->share = res.bottleneck_share;
                    r->agg_alone = r->agg;
                    if (r->pol == KV_POL_KVPR && r->alone_split != r->split) {
                        pl.split = r->alone_split;
                        if ((st = sim_multi_run(sx, &m, &p, &t, g, &pl, &res))) break;
                        r->agg_alone = res.aggregate_tok_s;
                    }
                }
        }
    }
    sim_free(sx);
    if (st) {
        free(rows);
        return kv_errctx(st, "%s: ", s->path);
    }
    *out = rows, *nout = n;
    return KV_OK;
}

kv_status exp_servers_execute(const exp_spec *s, int *ran, int *nofit) {
    srow *rows;
    int n;
    kv_status st = run_all(s, &rows, &n);
    if (st) return st;
    *ran = *nofit = 0;
    for (int i = 0; i < n; i++) *(rows[i].fits ? ran : nofit) += 1;
    free(rows);
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

kv_status exp_servers_report(const exp_spec *s, const char *dir, int csv, FILE *o) {
    srow *rows;
    int n;
    kv_status st = run_all(s, &rows, &n);
    if (st) return st;
    if (csv) fprintf(o, "topology,model,policy,gpus,split,aggregate_tok_s,per_gpu_tok_s,bottleneck,bottleneck_share,alone_split,aggregate_tok_s_alone_split\n");
    else {
        fprintf(o, "%s: %s\n", s->name, s->title);
        fprintf(o, "  %s mode, batch %d x %d per GPU, prompt %d, gen %d; one replica per GPU, all on one host\n\n", kv_mode_name(s->modes[0]),
                s->batch[0], s->modes[0] == KV_MODE_THROUGHPUT ? s->nb : 1, s->prompt[0], s->gen[0]);
        fprintf(o, "  %-13s %-11s %-9s %4s %6s %10s %9s  %-22s %6s  %s\n", "topology", "model", "policy", "gpus", "split", "agg tok/s",
                "per GPU", "bottleneck", "share", "kvpr with the 1-GPU split");
    }
    for (int i = 0; i < n; i++) {
        const srow *r = &rows[i];
        const char *pol = kv_policy_name((kv_policy)r->pol);
        if (csv) {
            fprintf(o, "%s,%s,%s,%d,", s->hws[r->topo], s->models[r->model], pol, r->gpus);
            if (!r->fits) fprintf(o, ",,,does not fit,,,\n");
            else fprintf(o, "%d,%.6g,%.6g,%s,%.4f,%d,%.6g\n", r->split, r->agg, r->per_gpu, r->bottleneck, r->share, r->alone_split, r->agg_alone);
            continue;
        }
        fprintf(o, "  %-13s %-11s %-9s %4d ", s->hws[r->topo], s->models[r->model], pol, r->gpus);
        if (!r->fits) {
            fprintf(o, "does not fit (host memory)\n");
            continue;
        }
        if (r->pol == KV_POL_KVPR) fprintf(o, "%6d ", r->split);
        else fprintf(o, "%6s ", "-");
        fprintf(o, "%10.1f %9.1f  %-22s %5.1f%%", r->agg, r->per_gpu, r->bottleneck, 100 * r->share);
        if (r->pol == KV_POL_KVPR) {
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
