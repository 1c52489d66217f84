/* kvpr sim: simulate one decode plan and report it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../sched/sched.h"
#include "../sim/sim.h"
#include "cli.h"

int cmd_sim_gpus(int argc, char **argv, const char *help);

static const char *sim_help =
    "usage: kvpr sim --model M --hw H --batch B --prompt P --gen G [options]\n"
    "  --mode latency|throughput   row-by-row with weights on the GPU, or FlexGen's zig-zag (default latency)\n"
    "  --policy P                  gpu, offload, kvpr, recompute, cpu-attn (default kvpr)\n"
    "  --split L                   kvpr split; default: the scheduler's choice\n"
    "  --scheduler S               chooses the split when --split is not given: pipelined (default), paper\n"
    "                              (the authors' runtime rule), dynamic (a split per decode step)\n"
    "  --gbs N --nb N              throughput mode: GPU batch and micro-batches (--batch is gbs)\n"
    "  --prefetch D                buffers in flight (default 2: double buffering; 1: none)\n"
    "  --keep-act                  also store new tokens' activations, so they can be recomputed\n"
    "  --wkv-first                 throughput: load W_K, W_V before the rest of the layer\n"
    "  --pageable                  host buffers are pageable\n"
    "  --paper-model               the paper's cost model: no prefetch, no overheads, T = t_act + max(t_rec, t_kv)\n"
    "  --percent 'WG WC CG CC HG HC'  placement as FlexGen writes it: weights, KV cache, activations on GPU and\n"
    "                              CPU in percent (weights per tensor by the midpoint rule, cache by sequence,\n"
    "                              activations whole: HG is 0 or 100); default: the mode's layout\n"
    "  --preset NAME               a named layout: hf-offload, accelerate, zero-inference, flexgen, kvpr\n"
    "                              (options given with it override it); `kvpr sim --preset NAME --help` says more\n"
    "  --no-prefill                decode only (no prompt pass: no time to first token)\n"
    "  --compress kv|weights|both  4-bit group-wise compression (FlexGen's: groups of 64, min/max): the CPU's K/V\n"
    "                              cache and stored activations, the streamed weights, or both\n"
    "  --layers N                  simulate only the first N layers\n"
    "  --trace FILE                write a Chrome trace (open in Perfetto or chrome://tracing)\n"
    "  --trace-steps A:B           only decode steps A..B in the trace (-1 is the prompt pass; default all)\n"
    "  --db FILE                   results database (default results.db): the run and its metrics; --no-db to skip.\n"
    "                              Rerunning the same configuration replaces its earlier run (one run key)\n"
    "  --spans                     also store every span (large: for timelines and 'kvpr compare')\n"
    "  --gpus N                    N data-parallel replicas of the plan on one host, sharing its links, switch\n"
    "                              uplinks, DRAM and CPU cores (flow-level); per-GPU and aggregate throughput\n"
    "  --topology T                the host: a topology (hwmodel/topologies/T.json) naming its GPU\n"
    "                              profile (--hw then swaps the GPU); default: GPUs on their own root ports\n"
    "  --json                      one JSON object instead of the summary\n"
    "  --csv                       a header line and one row of the summary's numbers\n"
    "  -h, --help                  this text\n"
    "M is a built-in model (kvpr model list; case ignored) or a config.json; H is a profile name (kvpr hw list;\n"
    "case ignored), NAME@LINK (the profile on another host link, e.g. h100-sxm@gen3) or a profile .json.\n"
    "$KVPR_PROFILES: directories (':'-separated) searched for profiles before the built-in one.\n";

/* One header line and one row, for pandas or a spreadsheet. */
static void csv(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *pl) {
    printf("model,hardware,mode,policy,split,batch,nb,prompt,gen,prefill_s,decode_s,decode_tok_s,generation_tok_s,"
           "gpu_util,h2d_util,d2h_util,gpu_mem_gib,cpu_mem_gib\n");
    printf("%s,%s,%s,%s,%d,%d,%d,%d,%d,%.6g,%.6g,%.6g,%.6g,%.4f,%.4f,%.4f,%.4f,%.4f\n", m->name, p->name, kv_mode_name(pl->mode),
           kv_policy_name(pl->policy), pl->policy == KV_POL_KVPR || pl->policy == KV_POL_RECOMPUTE ? r->split0 : -1, pl->batch,
           pl->nb, pl->prompt, pl->gen, r->prefill_s, r->decode_s, r->throughput, r->generation_tok_s, r->util[KV_RES_GPU],
           r->util[KV_RES_H2D], r->util[KV_RES_D2H], r->mem_peak / 1073741824.0, r->cpu_mem / 1073741824.0);
}

static void summary(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *pl, const char *sched) {
    printf("%s on %s: %s mode, policy %s", m->name, p->name, kv_mode_name(pl->mode), kv_policy_name(pl->policy));
    if (pl->policy == KV_POL_KVPR || pl->policy == KV_POL_RECOMPUTE) printf(", split l = %d", r->split0);
    if (r->split_last != r->split0) printf(" .. %d", r->split_last);
    if (sched && (pl->policy == KV_POL_KVPR)) printf(" (chosen by %s)", sched);
    printf("%s\n", pl->paper_model ? " (paper model)" : "");
    const kv_layout *ly = &r->layout;
    kv_percent pc = kv_plan_percent(pl);
    if (pl->preset) printf("  preset       %s: %s\n", kv_preset_name(pl->preset), kv_preset_about(pl->preset));
    if (pl->compress)
        printf("  compression  4-bit, groups of 64 (%s): K/V %.0f -> %.0f bytes per token and layer, activation %.0f -> %.0f, streamed "
               "weights %.1f -> %.1f MiB per layer\n", kv_compress_name(pl->compress), (double)kv_model_kv_bytes_token_layer(m), ly->kv_st,
               (double)kv_model_act_bytes_token(m), ly->act_st, ly->w_cpu / 1048576.0, ly->w_cpu_st / 1048576.0);
    printf("  workload     %d x %d sequences, prompt %d, gen %d (%d decode steps)\n", pl->batch, pl->nb, pl->prompt,
           pl->gen, r->nsteps);
    printf("  placement    --percent %g %g %g %g %g %g: weights %.1f %% on the GPU (%.0f of %.0f MiB per layer), KV cache of %d of %d "
           "sequences on the GPU, activations on the %s\n",
           pc.wg, pc.wc, pc.cg, pc.cc, pc.hg, pc.hc, 100 * ly->w_gpu / ly->w_layer, ly->w_gpu / 1048576.0, ly->w_layer / 1048576.0,
           ly->b_gpu, ly->B, ly->hidden_cpu ? "CPU" : "GPU");
    if (r->prefill_s > 0) {
        printf("  prefill      %.4f s to the first token:", r->prefill_s);
        double tot = 0;
        for (int i = 0; i < KV_OP_COUNT; i++) tot += r->prefill_op_s[i];
        for (int i = 0; i < KV_OP_COUNT; i++)
            if (r->prefill_op_s[i] >= 5e-4 * tot) printf(" %s %.1f %%", kv_op_name((kv_op)i), 100 * r->prefill_op_s[i] / tot);
        printf(" (shares of busy time)\n");
    }
    double mn = 1e300, mx = 0;
    for (int i = 0; i < r->nsteps; i++) mn = r->step_s[i] < mn ? r->step_s[i] : mn, mx = r->step_s[i] > mx ? r->step_s[i] : mx;
    printf("  decode       %.4f s total, %.2f ms per step (%.2f .. %.2f), %.1f tokens/s\n", r->decode_s,
           1e3 * r->decode_s / r->nsteps, 1e3 * mn, 1e3 * mx, r->throughput);
    if (r->prefill_s > 0)
        printf("  generation   %.4f s, %.1f tokens/s (gen x sequences / (prefill + decode))\n", r->prefill_s + r->decode_s,
               r->generation_tok_s);
    printf("  utilisation  gpu %.1f %%, h2d %.1f %%, d2h %.1f %%, cpu %.1f %%\n", 100 * r->util[KV_RES_GPU],
           100 * r->util[KV_RES_H2D], 100 * r->util[KV_RES_D2H], 100 * r->util[KV_RES_CPU]);
    double T = r->decode_s;
    double other = r->op_s[KV_OP_QKV] + r->op_s[KV_OP_ATTN] + r->op_s[KV_OP_FFN] + r->op_s[KV_OP_HEAD];
    printf("  breakdown    kv transfer %.1f %%, act transfer %.1f %%, weights %.1f %%, recompute %.1f %%, other gpu %.1f %%, "
           "gpu idle %.1f %% (shares of decode time)\n",
           100 * r->op_s[KV_OP_KV_H2D] / T, 100 * r->op_s[KV_OP_ACT_H2D] / T,
           100 * (r->op_s[KV_OP_W_H2D] + r->op_s[KV_OP_WKV_H2D]) / T, 100 * r->op_s[KV_OP_RECOMPUTE] / T, 100 * other / T,
           100 * r->gpu_idle_s / T);
    printf("  critical     ");
    for (int i = 0; i < KV_OP_COUNT; i++)
        if (r->crit_s[i] >= 5e-4 * T) printf("%s %.1f %%  ", kv_op_name((kv_op)i), 100 * r->crit_s[i] / T); /* what rounds to at least 0.1 % */
    printf("\n  memory       gpu %.2f GiB of %.0f, cpu %.2f GiB\n", r->mem_peak / 1073741824.0,
           p->gpu.mem_bytes.value / 1073741824.0, r->cpu_mem / 1073741824.0);
}

int cmd_sim(int argc, char **argv) {
    for (int i = 0; i < argc; i++) /* several GPUs on one host: cli/cmd_sim_gpus.c */
        if (!strcmp(argv[i], "--gpus") || !strcmp(argv[i], "--topology")) return cmd_sim_gpus(argc, argv, sim_help);
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = NULL, *trace = NULL, *dbpath = DB_DEFAULT_PATH;
    int js = 0, step0 = -1, step1 = 1 << 30, spans = 0, as_csv = 0;
    sched_kind sk = SCHED_PIPELINED;
    int sk_set = 0, steps_set = 0;
    /* --trace-steps is sim's own: take it out before the shared plan options */
    char **av = malloc(sizeof(char *) * (size_t)(argc + 1));
    int ac = 0;
    if (!av) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--spans") || !strcmp(argv[i], "--csv")) {
            *(argv[i][2] == 's' ? &spans : &as_csv) = 1;
            continue;
        }
        if (!strcmp(argv[i], "--scheduler")) {
            kv_status e = i + 1 < argc ? sched_parse(argv[i + 1], &sk) : kv_errorf(KV_EINVAL, "--scheduler needs a name");
            if (e) {
                free(av);
                return cli_fail(e);
            }
            i++;
            sk_set = 1;
            continue;
        }
        if (strcmp(argv[i], "--trace-steps")) {
            av[ac++] = argv[i];
            continue;
        }
        char tail;
        if (i + 1 >= argc || sscanf(argv[i + 1], "%d:%d%c", &step0, &step1, &tail) != 2 || step0 < -1 || step1 < step0) {
            free(av);
            return cli_usage("--trace-steps wants A:B with -1 <= A <= B (steps; -1 is the prompt pass)");
        }
        i++;
    }
    av[ac] = NULL;
    steps_set = step0 != -1 || step1 != 1 << 30;
    int rc = cli_parse_plan(ac, av, &pl, &model, &hw, &trace, &dbpath, &js, sim_help);
    free(av);
    if (rc >= 0) return rc;
    /* an option that would change nothing is an error: the user meant something by it */
    if (sk_set && (pl.split >= 0 || pl.policy != KV_POL_KVPR))
        return cli_usage("--scheduler is not used with %s (it chooses the kvpr split)", pl.split >= 0 ? "--split" : "this --policy");
    if (steps_set && !trace) return cli_usage("--trace-steps is not used without --trace");
    if (js && as_csv) return cli_usage("--json and --csv: choose one");
    if (spans && !dbpath) return cli_usage("--spans is not used with --no-db");
    kv_model m;
    hw_profile p;
    kv_status st;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    sched_result sr = {0};
    int chosen = 0, forced = pl.split >= 0;
    if (pl.policy == KV_POL_KVPR && pl.split < 0) {
        /* the split the scheduler chooses for this layout, as kvpr plan would */
        if ((st = sched_plan(sk, &m, &p, &pl, NULL, &sr))) return cli_fail(st);
        pl.split = sr.split;
        pl.split_steps = sk == SCHED_DYNAMIC ? sr.splits : NULL;
        chosen = 1;
    }
    sim_ctx *s = sim_new();
    if (!s) return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    sim_result r;
    kv_db *db = NULL;
    /* without a trace or spans nothing needs the timeline: stream the graph (memory follows the
     * tasks in flight). $KVPR_SIM_WINDOW: the streaming window in tasks, 0 for the whole graph
     * (the same results, to compare) */
    const char *wv = getenv("KVPR_SIM_WINDOW");
    long win = wv && *wv ? strtol(wv, NULL, 10) : -1;
    if (!trace && !spans && win != 0)
        sim_stream(s, win > 0 ? SIM_STREAM_ALWAYS : SIM_STREAM_LARGE, win > 0 && win < (1L << 30) ? (int32_t)win : 0);
    if ((st = sim_run(s, &m, &p, &pl, &r))) goto fail;
    cli_warn_context(&m, pl.prompt + pl.gen); /* after the run: an error stays one line */
    if (pl.policy == KV_POL_KVPR && forced && !js && !as_csv) {
        /* a forced split that loses to plain offloading is worth one line */
        kv_plan off = pl;
        off.policy = KV_POL_OFFLOAD, off.split = -1, off.split_steps = NULL;
        sim_ctx *s2 = sim_new();
        sim_result ro;
        if (s2 && !sim_run(s2, &m, &p, &off, &ro) && ro.decode_s < r.decode_s)
            fprintf(stderr, "kvpr: warning: split l = %d decodes in %.4f s, slower than offloading (%.4f s)\n", pl.split, r.decode_s,
                    ro.decode_s);
        sim_free(s2);
    }
    if (trace) {
        char title[256];
        snprintf(title, sizeof title, "%s on %s: %s, policy %s, split %d, batch %d x %d, prompt %d, gen %d", m.name, p.name,
                 kv_mode_name(pl.mode), kv_policy_name(pl.policy), r.split0, pl.batch, pl.nb, pl.prompt, pl.gen);
        if ((st = sim_write_trace(s, trace, title, step0, step1))) goto fail;
    }
    if (dbpath) {
        /* an ad-hoc run is keyed by its configuration: an identical rerun replaces it instead of piling up */
        char *pj = kv_plan_json(&pl);
        if (!pj) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            goto fail;
        }
        size_t kn = strlen(pj) + strlen(m.name) + strlen(p.name) + 32;
        char *key = malloc(kn);
        if (key) snprintf(key, kn, "sim %s %s %s", m.name, p.name, pj);
        free(pj);
        if (!key) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            goto fail;
        }
        if (!(st = cli_db_open(dbpath, &db)))
            st = sim_write_db_sched(s, db, &m, &p, &pl, &r, key, spans, NULL, chosen ? sched_name(sk) : pl.policy == KV_POL_KVPR ? "fixed" : NULL);
        free(key);
        if (st) goto fail;
        db_close(db);
        db = NULL;
    }
    if (as_csv) csv(&r, &m, &p, &pl);
    else if (js) {
        char *j = sim_result_json(&r, &m, &p, &pl);
        printf("%s\n", j ? j : "{}");
        free(j);
    } else summary(&r, &m, &p, &pl, chosen ? sched_name(sk) : NULL);
    sim_free(s);
    sched_result_free(&sr);
    return 0;
fail:
    sched_result_free(&sr);
    db_close(db);
    sim_free(s);
    return cli_fail(st);
}
