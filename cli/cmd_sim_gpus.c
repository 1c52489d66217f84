/* kvpr sim --gpus N [--topology T]: N data-parallel replicas of one plan on one simulated host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../exp/exp.h"
#include "../hwmodel/topo.h"
#include "../sched/sched.h"
#include "../sim/multi.h"
#include "cli.h"

int cmd_sim_gpus(int argc, char **argv, const char *help);

static int parse_gpus(const char *s, int *n) {
    char *e;
    long v = strtol(s, &e, 10);
    if (*s == '\0' || *e || v < 1 || v > HW_TOPO_MAX_GPUS) return -1;
    *n = (int)v;
    return 0;
}

static void summary(const sim_multi_result *r, const kv_model *m, const hw_profile *p, const hw_topo *t, const kv_plan *pl,
                    int alone_split, int planned) {
    printf("%s on %s (%s) x %d GPUs: %s mode, policy %s", m->name, t->name, p->name, r->n, kv_mode_name(pl->mode),
           kv_policy_name(pl->policy));
    if (pl->policy == KV_POL_KVPR || pl->policy == KV_POL_RECOMPUTE) printf(", split l = %d", r->split);
    if (planned) printf(" (chosen for the shared host; %d for one GPU alone)", alone_split);
    printf("\n  workload     %d x %d sequences per GPU, prompt %d, gen %d\n", pl->batch, pl->nb, pl->prompt, pl->gen);
    printf("  per GPU      ");
    for (int i = 0; i < r->n; i++) printf("%.1f ", r->rep_tok_s[i]);
    printf("tokens/s decode\n  aggregate    %.1f tokens/s decode (slowest GPU decodes in %.4f s), gpu busy %.1f %%\n", r->aggregate_tok_s,
           r->decode_s, 100 * r->gpu_util);
    if (r->bottleneck >= 0)
        printf("  bottleneck   %s: saturated %.1f %% of the run", sim_multi_bottleneck(r), 100 * r->bottleneck_share);
    else
        printf("  bottleneck   gpu compute (no hop is saturated longer than the GPUs compute, %.1f %%)", 100 * r->gpu_util);
    /* well below 1: the replicas mostly wait on their own chain of dependent ops, this the largest part */
    printf("%s\n", r->bottleneck_share < 0.5 ? "; latency-bound (the chain of dependent ops sets the pace)" : "");
    double total = r->prefill_s + r->decode_s;
    printf("  hops         %-22s %10s %8s %8s %10s\n", "", "GB/s", "busy %", "sat %", "GB moved");
    for (int h = 0; h < r->nhop; h++) {
        const sim_hop_report *x = &r->hop[h];
        if (x->busy_s <= 0) continue;
        printf("               %-22s %10.1f %8.1f %8.1f %10.2f\n", x->name, x->cap / 1e9, 100 * x->busy_s / total, 100 * x->sat_s / total,
               x->bytes / 1e9);
    }
}

int cmd_sim_gpus(int argc, char **argv, const char *help) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = NULL, *trace = NULL, *dbpath = DB_DEFAULT_PATH, *topo = NULL;
    int js = 0, n = 1, has_hw = 0;
    sched_kind sk = SCHED_PIPELINED;
    char **av = malloc(sizeof(char *) * (size_t)(argc + 3));
    int ac = 0;
    if (!av) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--gpus") || !strcmp(a, "--topology") || !strcmp(a, "--scheduler")) {
            if (i + 1 >= argc) {
                free(av);
                return cli_usage("%s needs a value", a);
            }
            const char *v = argv[++i];
            kv_status e = KV_OK;
            if (a[2] == 'g' && parse_gpus(v, &n)) {
                free(av);
                return cli_usage("--gpus wants a whole number from 1 to %d, not '%s'", HW_TOPO_MAX_GPUS, v);
            }
            if (a[2] == 't') topo = v;
            if (a[2] == 's' && (e = sched_parse(v, &sk))) {
                free(av);
                return cli_fail(e);
            }
            continue;
        }
        if (!strcmp(a, "--trace-steps") || !strcmp(a, "--spans") || !strcmp(a, "--csv")) {
            free(av);
            return cli_usage("%s is not available with --gpus/--topology (several replicas: see --json)", a);
        }
        has_hw |= !strcmp(a, "--hw") || !strncmp(a, "--hw=", 5);
        av[ac++] = argv[i];
    }
    hw_topo t;
    kv_status st;
    if (topo && (st = hw_topo_resolve(topo, &t))) {
        free(av);
        return cli_fail(st);
    }
    if (topo && !has_hw) av[ac++] = (char *)"--hw", av[ac++] = t.profile; /* the topology's GPU unless --hw swaps it */
    av[ac] = NULL;
    int rc = cli_parse_plan(ac, av, &pl, &model, &hw, &trace, &dbpath, &js, help);
    free(av);
    if (rc >= 0) return rc;
    if (trace) return cli_usage("--trace is not available with --gpus/--topology");
    if (pl.split_steps) return cli_usage("a split per step is not available with --gpus/--topology");
    kv_model m;
    hw_profile p;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    if (!topo) hw_topo_default(&p, n, &t);
    if (n > t.ngpus) return cli_usage("topology %s has %d GPUs: --gpus must be 1 to %d", t.name, t.ngpus, t.ngpus);
    /* topology-aware split: the scheduler sees one replica's fair share of every shared hop */
    int planned = 0, alone = -1;
    if (pl.policy == KV_POL_KVPR && pl.split < 0) {
        if ((st = sched_plan_shared(sk, &m, &p, &t, n, &pl, &alone))) return cli_fail(st);
        planned = 1;
    }
    sim_ctx *s = sim_new();
    if (!s) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    sim_multi_result r;
    st = sim_multi_run(s, &m, &p, &t, n, &pl, &r);
    sim_free(s);
    if (st) return cli_fail(st);
    if (dbpath) {
        /* an ad-hoc run is keyed by its configuration, as kvpr sim's: an identical rerun replaces it */
        char *pj = kv_plan_json(&pl);
        size_t kn = pj ? strlen(pj) + strlen(m.name) + strlen(t.name) + strlen(p.name) + 48 : 0;
        char *key = pj ? malloc(kn) : NULL;
        if (key) snprintf(key, kn, "sim-gpus %s %s %s %d %s", m.name, t.name, p.name, n, pj);
        free(pj);
        if (!key) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
        kv_db *db = NULL;
        if (!(st = cli_db_open(dbpath, &db)))
            st = exp_servers_store(db, key, planned ? sched_name(sk) : pl.policy == KV_POL_KVPR ? "fixed" : NULL, &m, &p, &t, &pl, &r,
                                   alone, 0, NULL);
        db_close(db);
        free(key);
        if (st) return cli_fail(st);
    }
    cli_warn_context(&m, pl.prompt + pl.gen);
    if (js) {
        char *j = sim_multi_json(&r, &m, &t, &pl);
        printf("%s\n", j ? j : "{}");
        free(j);
    } else
        summary(&r, &m, &p, &t, &pl, alone, planned);
    return 0;
}
