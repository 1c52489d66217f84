/* kvpr sim: simulate one decode plan and report it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../sim/sim.h"
#include "cli.h"

static const char *sim_help =
    "usage: kvpr sim --model M --hw H --batch B --prompt P --gen G [options]\n"
    "  --mode latency|throughput   row-by-row with weights on the GPU, or FlexGen's zig-zag (default latency)\n"
    "  --policy P                  gpu, offload, kvpr, recompute, cpu-attn (default kvpr)\n"
    "  --split L                   kvpr split; default: the paper's runtime rule (l* of prompt+gen, capped at prompt)\n"
    "  --gbs N --nb N              throughput mode: GPU batch and micro-batches (--batch is gbs)\n"
    "  --prefetch D                buffers in flight (default 2: double buffering; 1: none)\n"
    "  --keep-act                  also store new tokens' activations, so they can be recomputed\n"
    "  --wkv-first                 throughput: load W_K, W_V before the rest of the layer\n"
    "  --pageable                  host buffers are pageable\n"
    "  --paper-model               the paper's cost model: no prefetch, no overheads, T = t_act + max(t_rec, t_kv)\n"
    "  --layers N                  simulate only the first N layers\n"
    "  --trace FILE                write a Chrome trace (open in Perfetto or chrome://tracing)\n"
    "  --db FILE                   results database (default results.db); --no-db to skip\n"
    "  --json                      one JSON object instead of the summary\n";

static void summary(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *pl) {
    printf("%s on %s: %s mode, policy %s", m->name, p->name, kv_mode_name(pl->mode), kv_policy_name(pl->policy));
    if (pl->policy == KV_POL_KVPR || pl->policy == KV_POL_RECOMPUTE) printf(", split l = %d", r->split0);
    if (r->split_last != r->split0) printf(" .. %d", r->split_last);
    printf("%s\n", pl->paper_model ? " (paper model)" : "");
    printf("  workload     %d x %d sequences, prompt %d, gen %d (%d decode steps)\n", pl->batch, pl->nb, pl->prompt,
           pl->gen, r->nsteps);
    double mn = 1e300, mx = 0;
    for (int i = 0; i < r->nsteps; i++) mn = r->step_s[i] < mn ? r->step_s[i] : mn, mx = r->step_s[i] > mx ? r->step_s[i] : mx;
    printf("  decode       %.4f s total, %.2f ms per step (%.2f .. %.2f), %.1f tokens/s\n", r->decode_s,
           1e3 * r->decode_s / r->nsteps, 1e3 * mn, 1e3 * mx, r->throughput);
    printf("  utilisation  gpu %.1f %%, h2d %.1f %%, d2h %.1f %%, cpu %.1f %%\n", 100 * r->util[KV_RES_GPU],
           100 * r->util[KV_RES_H2D], 100 * r->util[KV_RES_D2H], 100 * r->util[KV_RES_CPU]);
    double T = r->decode_s;
    double other = r->op_s[KV_OP_QKV] + r->op_s[KV_OP_ATTN] + r->op_s[KV_OP_FFN];
    printf("  breakdown    kv transfer %.1f %%, act transfer %.1f %%, weights %.1f %%, recompute %.1f %%, other gpu %.1f %%, "
           "gpu idle %.1f %% (shares of decode time)\n",
           100 * r->op_s[KV_OP_KV_H2D] / T, 100 * r->op_s[KV_OP_ACT_H2D] / T,
           100 * (r->op_s[KV_OP_W_H2D] + r->op_s[KV_OP_WKV_H2D]) / T, 100 * r->op_s[KV_OP_RECOMPUTE] / T, 100 * other / T,
           100 * r->gpu_idle_s / T);
    printf("  critical     ");
    for (int i = 0; i < KV_OP_COUNT; i++)
        if (r->crit_s[i] > 0) printf("%s %.1f %%  ", kv_op_name((kv_op)i), 100 * r->crit_s[i] / T);
    printf("\n  memory       gpu peak %.2f GiB of %.0f, cpu %.2f GiB\n", r->mem_peak / 1073741824.0,
           p->gpu.mem_bytes.value / 1073741824.0, r->cpu_mem / 1073741824.0);
}

int cmd_sim(int argc, char **argv) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = NULL, *trace = NULL, *dbpath = DB_DEFAULT_PATH;
    int js = 0;
    int rc = cli_parse_plan(argc, argv, &pl, &model, &hw, &trace, &dbpath, &js, sim_help);
    if (rc >= 0) return rc;
    kv_model m;
    hw_profile p;
    kv_status st;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    if (pl.policy == KV_POL_KVPR && pl.split < 0) pl.split = hw_paper_runtime_split(&p, &m, pl.prompt, pl.gen);
    sim_ctx *s = sim_new();
    if (!s) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    sim_result r;
    kv_db *db = NULL;
    if ((st = sim_run(s, &m, &p, &pl, &r))) goto fail;
    if (trace && (st = sim_write_trace(s, trace))) goto fail;
    if (dbpath) {
        if ((st = cli_db_open(dbpath, &db)) || (st = sim_write_db(s, db, &m, &p, &pl, &r, NULL, 1, NULL))) goto fail;
        db_close(db);
        db = NULL;
    }
    if (js) {
        char *j = sim_result_json(&r, &m, &p, &pl);
        printf("%s\n", j ? j : "{}");
        free(j);
    } else summary(&r, &m, &p, &pl);
    sim_free(s);
    return 0;
fail:
    db_close(db);
    sim_free(s);
    return cli_fail(st);
}
