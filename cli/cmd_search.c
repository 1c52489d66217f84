/* kvpr search: "how should I run this?" The search of sched/search.h as a command, its validation
 * against brute force, and FlexGen's published T4 policies against its choice. */
#include "cmd_search.h"
#include <getopt.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../exp/searchplot.h"
#include "../sched/regions.h"
#include "../sched/search.h"
#include "../sim/multi.h"
#include "../core/kv_str.h"
#include "cli.h"

#define GIB 1073741824.0

static const char *search_help =
    "usage: kvpr search --model M --hw H --prompt P --gen G [options]\n"
    "Chooses policy (gpu, offload, kvpr, recompute, cpu-attn), placement (--percent), GPU batch and micro-batches,\n"
    "prefetch depth and KVPR's split together; simulates the best predicted and ranks them.\n"
    "  --objective generation|decode|latency  generation throughput (default), decode throughput, or time per token\n"
    "  --max-token-latency MS     the mean time between a sequence's tokens must not exceed MS milliseconds\n"
    "  --sequences N              exactly N sequences in flight (gbs x nb = N); default: the search chooses\n"
    "  --top K                    report the best K (default 5)\n"
    "  --policies LIST            comma-separated subset of gpu,offload,kvpr,recompute,cpu-attn (default all)\n"
    "  --max-gbs N --max-nb N     bound the GPU batch and the micro-batches (default: memory bounds them)\n"
    "  --prefetch-max D           prefetch depths 1..D are tried (default 2)\n"
    "  --no-per-step              do not try a KVPR split per decode step\n"
    "  --compress kv|weights|both 4-bit group-wise compression of every candidate (as kvpr sim --compress)\n"
    "  --gpu-mem GIB --cpu-mem GIB  capacities (default: the profile's; with --gpus, --cpu-mem is each replica's)\n"
    "  --gpus N                   plan one of N data-parallel replicas sharing one host: the search sees each GPU's\n"
    "                             fair share of the switch uplinks, DRAM, cores and host memory, and its choice is\n"
    "                             simulated with all N replicas (per-GPU and aggregate decode tokens/s, bottleneck\n"
    "                             hop), next to the choice for one GPU alone; one KVPR split per run (no per-step)\n"
    "  --topology T               the host (hwmodel/topologies, `kvpr hw topologies`); --hw defaults to its GPU.\n"
    "                             Without it, --gpus N puts N GPUs on root ports of the profile's host\n"
    "  --sim-budget TASKS         simulated tasks at most (default 4e6, about two seconds)\n"
    "  --json                     one JSON object (policy, percent, gbs, nb, split, generation_tok_s, decode_tok_s, ...)\n"
    "  --validate                 regret against brute-force simulation over a built-in grid (no --model needed)\n"
    "  --flexgen                  FlexGen's published T4 policies simulated against the search's choice\n"
    "  --regions                  which policy wins where: the search on every cell of prompt x sequences, for each\n"
    "                             profile and model; one table per pair, one figure per profile (PLOTS/search-regions-HW)\n"
    "    --models M,M..           models (default OPT-6.7B,OPT-30B,Llama-3-8B)\n"
    "    --hw H,H..               profiles (default every shipped profile but paper-a100)\n"
    "    --prompts P,P..          prompt lengths (default 512,1024,2048,4096,8192,16384,32768)\n"
    "    --batches N,N..          total sequences in flight, gbs x nb (default 1,4,16,64,256)\n"
    "                             (--gen defaults to 32; --sim-budget defaults to 1e6 per search here)\n"
    "  --plots DIR                figures of --regions and --validate (default plots)\n";

static const char *res_name(int r) { return kv_res_name((kv_resource)r); }

static kv_status parse_policies(const char *s, unsigned *out) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return kv_errorf(KV_EINVAL, "--policies: list too long");
    strcpy(buf, s);
    *out = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        kv_policy p;
        kv_status st = kv_policy_parse(t, &p);
        if (st) return st;
        *out |= 1u << p;
    }
    return *out ? KV_OK : kv_errorf(KV_EINVAL, "--policies: empty list");
}

static void fmt_percent(char *b, size_t n, const kv_percent *c) {
    snprintf(b, n, "%g %g %.4g %.4g %g %g", c->wg, c->wc, c->cg, c->cc, c->hg, c->hc);
}

static void fmt_split(char *b, size_t n, const search_cand *c) {
    const kv_plan *pl = &c->plan;
    if (pl->policy == KV_POL_RECOMPUTE) snprintf(b, n, "all");
    else if (pl->policy != KV_POL_KVPR) snprintf(b, n, "-");
    else if (pl->split_steps) snprintf(b, n, "%d..%d", pl->split_steps[0], pl->split_steps[kv_plan_steps(pl) - 1]);
    else snprintf(b, n, "%d", pl->split);
}

static const char *unit(search_objective o) { return o == SEARCH_LATENCY ? "ms/tok" : "tok/s"; }
static double shown(search_objective o, double v) { return o == SEARCH_LATENCY ? 1e3 * v : v; }

static json_t *cand_json(const search_cand *c, int rank) {
    const kv_plan *pl = &c->plan;
    const kv_percent *q = &pl->percent;
    json_t *util = json_object();
    for (int i = 0; i < KV_RES_COUNT; i++) json_object_set_new(util, res_name(i), json_real(c->util[i]));
    json_t *o = json_pack("{s:i,s:s,s:s,s:[f,f,f,f,f,f],s:i,s:i,s:i,s:i,s:s,s:{s:f,s:f,s:f},s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:o,s:s}",
                          "rank", rank, "policy", kv_policy_name(pl->policy), "mode", kv_mode_name(pl->mode), "percent", q->wg,
                          q->wc, q->cg, q->cc, q->hg, q->hc, "gbs", pl->batch, "nb", pl->nb, "prefetch", pl->prefetch, "split",
                          pl->policy == KV_POL_KVPR ? pl->split : pl->policy == KV_POL_RECOMPUTE ? pl->prompt : 0, "split_how",
                          c->split_how, "predicted", "prefill_s", c->pred_prefill_s, "decode_s", c->pred_decode_s, "value",
                          c->pred_value, "prefill_s", c->prefill_s, "decode_s", c->decode_s, "generation_tok_s",
                          c->generation_tok_s, "decode_tok_s", c->decode_tok_s, "token_latency_s", c->token_s, "value", c->value,
                          "gpu_mem_peak_bytes", c->gpu_bytes, "cpu_mem_bytes", c->cpu_bytes, "utilisation", util, "bound",
                          res_name(c->bound));
    if (o && pl->split_steps) {
        json_t *a = json_array();
        for (int i = 0; i < kv_plan_steps(pl); i++) json_array_append_new(a, json_integer(pl->split_steps[i]));
        json_object_set_new(o, "split_steps", a);
    }
    return o;
}

static void print_row(int rank, const search_cand *c, search_objective obj) {
    char pc[128], sp[32], gb[32];
    fmt_percent(pc, sizeof pc, &c->plan.percent);
    fmt_split(sp, sizeof sp, c);
    snprintf(gb, sizeof gb, "%dx%d", c->plan.batch, c->plan.nb);
    char pred[16] = "-";
    if (c->pred_value > 0) snprintf(pred, sizeof pred, "%.2f", shown(obj, c->pred_value));
    printf("  %2d  %-9s  %-26s %-8s %d  %-9s %9s %9.2f %9.3f %9.3f %8.1f %7.2f %7.2f  %s %.0f %%\n", rank,
           kv_policy_name(c->plan.policy), pc, gb, c->plan.prefetch, sp, pred, shown(obj, c->value), c->prefill_s, c->decode_s,
           1e3 * c->token_s, c->gpu_bytes / GIB, c->cpu_bytes / GIB, res_name(c->bound), 100 * c->util[c->bound]);
}

static void print_header(search_objective obj) {
    printf("  %2s  %-9s  %-26s %-8s %s  %-9s %9s %9s %9s %9s %8s %7s %7s  %s\n", "#", "policy", "percent (WG WC CG CC HG HC)",
           "gbs x nb", "D", "split", "predicted", "simulated", "prefill s", "decode s", "ms/token", "GPU GiB", "CPU GiB",
           "bound by");
    printf("      (predicted and simulated: %s %s)\n", search_objective_name(obj), unit(obj));
}

/* Why the winner wins: what bounds it, and what the best of every other policy reaches. */
static void print_why(const search_result *r, const search_opts *o) {
    const search_cand *w = &r->c[0];
    printf("\nwinner: %s", kv_policy_name(w->plan.policy));
    printf(", bound by %s (busy %.0f %% of decode; h2d %.0f %%, d2h %.0f %%, gpu %.0f %%, cpu %.0f %%)\n", res_name(w->bound),
           100 * w->util[w->bound], 100 * w->util[KV_RES_H2D], 100 * w->util[KV_RES_D2H], 100 * w->util[KV_RES_GPU],
           100 * w->util[KV_RES_CPU]);
    for (int pol = 0; pol < KV_POL_COUNT; pol++) {
        if (pol == (int)w->plan.policy) continue;
        if (!r->has[pol]) {
            const char *why = !(o->policies == 0 || (o->policies >> pol & 1u)) ? "not searched (--policies)"
                              : r->feasible[pol] ? "not simulated (predicted behind the others; simulation budget)"
                              : o->max_token_s > 0 ? "nothing fits the memory within the latency bound"
                                                   : "nothing fits the memory";
            printf("  best %-9s  %s\n", kv_policy_name((kv_policy)pol), why);
            continue;
        }
        const search_cand *b = &r->best[pol];
        double rel = o->objective == SEARCH_LATENCY ? b->value / w->value : w->value / b->value;
        printf("  best %-9s  %9.2f %s at gbs %d x nb %d: the winner is %.2fx (%s bound, %.0f %% busy)\n",
               kv_policy_name((kv_policy)pol), shown(o->objective, b->value), unit(o->objective), b->plan.batch, b->plan.nb, rel,
               res_name(b->bound), 100 * b->util[b->bound]);
    }
}

typedef struct {
    const char *model, *hw;
    double gpu_gib, cpu_gib; /* 0: the profile's */
    int prompt, gen;
    search_objective obj;
    double max_tok_ms;
} vcase;

/* The validation grid: small enough that brute force over every policy, a 10 % placement
 * lattice, hidden states on either side, gbs 1..8 and nb 1..4 finishes in seconds per case;
 * memory is cut so that every case has to choose what to offload. */
static const vcase VCASES[] = {
    {"OPT-1.3B", "t4", 2.0, 32, 128, 8, SEARCH_GENERATION, 0},
    {"OPT-1.3B", "t4", 2.0, 32, 128, 8, SEARCH_DECODE, 0},
    {"OPT-1.3B", "a100-40gb-pcie4", 3.0, 16, 1024, 8, SEARCH_DECODE, 0},
    {"OPT-2.7B", "l4", 5.5, 24, 512, 6, SEARCH_DECODE, 0},
    {"OPT-125M", "rtx4090", 0.3, 8, 256, 8, SEARCH_GENERATION, 0},
    {"OPT-125M", "h100-pcie", 0.25, 4, 512, 8, SEARCH_DECODE, 0},
    {"OPT-1.3B", "t4", 3.0, 16, 512, 6, SEARCH_LATENCY, 0},
    {"OPT-2.7B", "v100", 4.0, 32, 256, 8, SEARCH_GENERATION, 0},
    {"OPT-1.3B", "rtx3090", 2.5, 32, 256, 8, SEARCH_DECODE, 40},
    {"OPT-125M", "a100-40gb-pcie4", 0.3, 8, 512, 6, SEARCH_GENERATION, 10},
    {"Llama-3-8B", "h100-pcie", 16, 64, 256, 6, SEARCH_GENERATION, 0},
    {"LLaMA-2-7B", "a100-40gb-pcie4", 14, 64, 1024, 6, SEARCH_DECODE, 0},
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_validate(int js, const char *plots) {
    int n = (int)(sizeof VCASES / sizeof VCASES[0]);
    kv_status pst = exp_plot_dir(plots); /* a --plots that cannot exist is bad input: say so before the runs */
    if (pst) return cli_fail(pst);
    double *reg = malloc(sizeof(double) * (size_t)n);
    searchplot_vcase *vc = calloc((size_t)n, sizeof *vc);
    json_t *arr = json_array();
    if (!reg || !arr || !vc) {
        free(reg);
        free(vc);
        json_decref(arr);
        return cli_fail(kv_errorf(KV_ENOMEM, "out of memory"));
    }
    if (!js)
        printf("%-11s %-16s %8s %4s %3s %-10s %6s | %-28s %9s | %-28s %9s %7s | %8s %5s\n", "model", "hw", "GPU/CPU", "p", "g",
               "objective", "bound", "search's choice", "value", "brute force best", "value", "sims", "regret", "s");
    for (int i = 0; i < n; i++) {
        const vcase *v = &VCASES[i];
        kv_model m;
        hw_profile p;
        kv_status st;
        if ((st = kv_model_resolve(v->model, &m)) || (st = hw_profile_resolve(v->hw, &p))) {
            free(reg);
            free(vc);
            json_decref(arr);
            return cli_fail(st);
        }
        search_opts o;
        search_opts_defaults(&o);
        o.prompt = v->prompt, o.gen = v->gen, o.objective = v->obj, o.max_token_s = v->max_tok_ms / 1e3;
        o.max_gbs = 8, o.max_nb = 4, o.top = 1;
        o.gpu_bytes = v->gpu_gib * GIB, o.cpu_bytes = v->cpu_gib * GIB;
        search_regret rg;
        if ((st = search_regret_of(&m, &p, &o, &rg))) {
            free(reg);
            free(vc);
            json_decref(arr);
            return cli_fail(kv_errctx(st, "validate %s on %s: ", v->model, v->hw));
        }
        reg[i] = rg.regret;
        snprintf(vc[i].label, sizeof vc[i].label, "%d %s %s %s%s", i + 1, v->model, v->hw, search_objective_name(v->obj),
                 v->max_tok_ms > 0 ? " bound" : "");
        vc[i].objective = v->obj, vc[i].search_value = rg.search_value, vc[i].brute_value = rg.brute_value;
        vc[i].regret = rg.regret;
        char a[192], b[192], pa[128], pb[128];
        fmt_percent(pa, sizeof pa, &rg.chosen.plan.percent);
        fmt_percent(pb, sizeof pb, &rg.best.plan.percent);
        snprintf(a, sizeof a, "%s %dx%d %s", kv_policy_name(rg.chosen.plan.policy), rg.chosen.plan.batch, rg.chosen.plan.nb, pa);
        snprintf(b, sizeof b, "%s %dx%d %s", kv_policy_name(rg.best.plan.policy), rg.best.plan.batch, rg.best.plan.nb, pb);
        char bound[16] = "-";
        if (v->max_tok_ms > 0) snprintf(bound, sizeof bound, "%gms", v->max_tok_ms);
        char mem[32];
        snprintf(mem, sizeof mem, "%g/%g", v->gpu_gib, v->cpu_gib);
        if (!js)
            printf("%-11s %-16s %8s %4d %3d %-10s %6s | %-28.28s %9.2f | %-28.28s %9.2f %7d | %7.2f%% %5.1f\n", v->model, v->hw, mem,
                   v->prompt, v->gen, search_objective_name(v->obj), bound, a, shown(v->obj, rg.search_value), b,
                   shown(v->obj, rg.brute_value), rg.brute_sims, 100 * rg.regret, rg.search_s + rg.brute_s);
        else
            json_array_append_new(arr, json_pack("{s:s,s:s,s:f,s:f,s:i,s:i,s:s,s:f,s:o,s:o,s:f,s:f,s:f,s:i}", "model", v->model,
                                                 "hw", v->hw, "gpu_gib", v->gpu_gib, "cpu_gib", v->cpu_gib, "prompt", v->prompt,
                                                 "gen", v->gen, "objective", search_objective_name(v->obj),
                                                 "max_token_latency_ms", v->max_tok_ms, "search", cand_json(&rg.chosen, 1),
                                                 "brute_force", cand_json(&rg.best, 1), "search_value", rg.search_value,
                                                 "brute_value", rg.brute_value, "regret", rg.regret, "brute_sims", rg.brute_sims));
        search_regret_free(&rg);
    }
    qsort(reg, (size_t)n, sizeof *reg, cmp_d);
    double med = gsl_stats_median_from_sorted_data(reg, 1, (size_t)n), mx = reg[n - 1];
    pst = searchplot_validate(plots, vc, n);
    free(vc);
    if (pst) {
        free(reg);
        json_decref(arr);
        return cli_fail(pst);
    }
    if (js) {
        json_t *o = json_pack("{s:o,s:f,s:f,s:i}", "cases", arr, "median_regret", med, "max_regret", mx, "n", n);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(o);
    } else {
        json_decref(arr);
        printf("\nregret = 1 - search / brute force (throughput), search / brute force - 1 (latency); < 0: the search\n"
               "found a configuration off the brute force's 10 %% lattice. %d cases: median %.2f %%, max %.2f %% (targets 1 %% / 5 %%)\n"
               "figures: %s/search-validate-regret.{png,svg}, %s/search-validate-values.{png,svg}\n",
               n, 100 * med, 100 * mx, plots, plots);
    }
    free(reg);
    return 0;
}

/* FlexGen's published T4 policies, simulated, against the search on the same machine (T4, 200 GiB
 * of CPU memory as FlexGen's cost model assumes; the profile's 16 GiB GPU). */
static int run_flexgen(int js) {
    const search_flexgen_case *fc;
    int nfc = search_flexgen_cases(&fc);
    static const char *const models[] = {"OPT-6.7B", "OPT-13B", "OPT-30B", "OPT-66B"};
    static const int prompts[] = {512, 1024};
    hw_profile p;
    kv_status st = hw_profile_resolve("t4", &p);
    if (st) return cli_fail(st);
    json_t *arr = json_array();
    if (!js)
        printf("%-9s %5s | %-32s %8s | %-38s %8s %7s | %-15s %-15s | %s\n", "model", "p", "FlexGen's policy (bench_suite.py)",
               "tok/s", "search's choice", "tok/s", "ours/FG", "best kvpr", "best offload", "what bounds them");
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++)
        for (size_t pi = 0; pi < 2; pi++) {
            kv_model m;
            if ((st = kv_model_resolve(models[mi], &m))) goto fail;
            search_opts o;
            search_opts_defaults(&o);
            o.prompt = prompts[pi], o.gen = 32, o.top = 1, o.cpu_bytes = 200 * GIB;
            const search_flexgen_case *f = NULL;
            for (int i = 0; i < nfc; i++)
                if (!strcmp(fc[i].model, models[mi]) && fc[i].prompt == prompts[pi]) f = &fc[i];
            search_cand fg;
            int have_fg = 0, fits = 0;
            memset(&fg, 0, sizeof fg);
            if (f) {
                kv_plan pl;
                search_flexgen_plan(f, &pl);
                if ((st = search_simulate(&m, &p, &o, &pl, &fg, &fits))) goto fail;
                have_fg = fits;
            }
            search_result r;
            if ((st = search_run(&m, &p, &o, &r))) goto fail;
            const search_cand *w = &r.c[0];
            char fgs[192] = "no published policy", ours[256], pc[128], why[160];
            if (f) {
                char q[128];
                snprintf(q, sizeof q, "%g %g %g %g %g %g", f->percent[0], f->percent[1], f->percent[2], f->percent[3], f->percent[4],
                         f->percent[5]);
                snprintf(fgs, sizeof fgs, "%s %dx%d %s%s", fits ? "" : "(no fit) ", f->gbs, f->nb, q, f->cpu_attn ? " cpu" : "");
            }
            fmt_percent(pc, sizeof pc, &w->plan.percent);
            snprintf(ours, sizeof ours, "%s %dx%d %s", kv_policy_name(w->plan.policy), w->plan.batch, w->plan.nb, pc);
            /* why: what bounds FlexGen's run, and what bounds ours */
            if (have_fg)
                snprintf(why, sizeof why, "FlexGen %s-bound (%.0f %%), ours %s-bound (%.0f %%)", res_name(fg.bound),
                         100 * fg.util[fg.bound], res_name(w->bound), 100 * w->util[w->bound]);
            else snprintf(why, sizeof why, "ours %s-bound (%.0f %%)", res_name(w->bound), 100 * w->util[w->bound]);
            if (!js) {
                char fv[16] = "-", ratio[16] = "-", bk[2][32];
                double ref = have_fg ? fg.generation_tok_s : w->generation_tok_s;
                if (have_fg) {
                    snprintf(fv, sizeof fv, "%.2f", fg.generation_tok_s);
                    snprintf(ratio, sizeof ratio, "%.2fx", w->generation_tok_s / fg.generation_tok_s);
                }
                /* GPU attention after streaming the cache, with and without recomputation, against
                 * FlexGen's policy (or, without one, against the winner) */
                const kv_policy gp[2] = {KV_POL_KVPR, KV_POL_OFFLOAD};
                for (int k = 0; k < 2; k++) {
                    if (r.has[gp[k]])
                        snprintf(bk[k], sizeof bk[k], "%.2f (%.2fx)", r.best[gp[k]].generation_tok_s,
                                 r.best[gp[k]].generation_tok_s / ref);
                    else snprintf(bk[k], sizeof bk[k], "-");
                }
                printf("%-9s %5d | %-32.32s %8s | %-38.38s %8.2f %7s | %-15s %-15s | %s\n", models[mi], prompts[pi], fgs, fv, ours,
                       w->generation_tok_s, ratio, bk[0], bk[1], why);
            } else {
                json_t *row = json_pack("{s:s,s:i,s:i,s:o}", "model", models[mi], "prompt", prompts[pi], "gen", 32, "search",
                                        cand_json(w, 1));
                if (f) {
                    json_object_set_new(row, "flexgen_source", json_string(f->source));
                    json_object_set_new(row, "flexgen", have_fg ? cand_json(&fg, 0) : json_null());
                }
                json_array_append_new(arr, row);
            }
            search_cand_free(&fg);
            search_result_free(&r);
        }
    if (js) {
        json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
    } else
        printf("\nT4 profile (16 GiB GPU), 200 GiB CPU, gen 32; FlexGen's policies from FMInference/FlexLLMGen "
               "benchmark/flexgen/bench_suite.py\n(--overlap False runs as prefetch 1, --cpu as cpu-attn); both simulated in "
               "our model; objective generation throughput.\nbest kvpr / best offload: the search's best with attention on the "
               "GPU after streaming the cache (x FlexGen's policy, or x the winner where FlexGen published none).\n");
    json_decref(arr);
    return 0;
fail:
    json_decref(arr);
    return cli_fail(st);
}

/* ---- --regions: which policy wins where -------------------------------------------------- */

#define LIST_MAX 32

/* Splits "a,b,c" into at most max names (copied into buf); KV_EINVAL on an empty name. */
static kv_status split_names(const char *opt, const char *s, char *buf, size_t bn, const char **out, int max, int *n) {
    if (strlen(s) >= bn) return kv_errorf(KV_EINVAL, "%s: list too long", opt);
    strcpy(buf, s);
    *n = 0;
    for (char *t = buf, *e;; t = e + 1) {
        e = strchr(t, ',');
        if (e) *e = 0;
        if (!*t) return kv_errorf(KV_EINVAL, "%s: empty name in the list", opt);
        if (*n == max) return kv_errorf(KV_EINVAL, "%s: at most %d names", opt, max);
        out[(*n)++] = t;
        if (!e) break;
    }
    return KV_OK;
}

static kv_status split_ints(const char *opt, const char *s, int *out, int max, int *n) {
    char buf[512];
    const char *t[REGIONS_MAX];
    kv_status st = split_names(opt, s, buf, sizeof buf, t, max, n);
    for (int i = 0; !st && i < *n; i++) st = cli_int(opt, t[i], 1, 1 << 24, &out[i]);
    return st;
}

typedef struct {
    const char *models[LIST_MAX], *hws[LIST_MAX];
    int nm, nh;
    int prompts[REGIONS_MAX], seqs[REGIONS_MAX];
    int np, ns;
} rsel;

static void print_grid(const regions_grid *g, const hw_profile *p) {
    printf("%s on %s (GPU %.0f GiB, CPU %.0f GiB), gen %d, objective %s: winner (its lead over the best other policy)\n", g->model,
           g->hw, p->gpu.mem_bytes.value / GIB, p->cpu.mem_bytes.value / GIB, g->gen, search_objective_name(g->objective));
    printf("  %6s \\ prompt", "seqs");
    for (int ip = 0; ip < g->np; ip++) {
        char b[16];
        regions_fmt_tokens(b, sizeof b, g->prompts[ip]);
        printf(" %14s", b);
    }
    printf("\n");
    for (int is = 0; is < g->ns; is++) {
        printf("  %15d", g->seqs[is]);
        for (int ip = 0; ip < g->np; ip++) {
            const regions_cell *c = regions_at(g, ip, is);
            char b[32];
            if (!c->fits) snprintf(b, sizeof b, "-");
            else if (c->has_runner) snprintf(b, sizeof b, "%s %.2fx", kv_policy_name(c->policy), c->lead);
            else snprintf(b, sizeof b, "%s", kv_policy_name(c->policy));
            printf(" %14s", b);
        }
        printf("\n");
    }
}

static json_t *grid_json(const regions_grid *g) {
    json_t *cells = json_array();
    for (int ip = 0; ip < g->np; ip++)
        for (int is = 0; is < g->ns; is++) {
            const regions_cell *c = regions_at(g, ip, is);
            json_t *o = json_pack("{s:i,s:i,s:b}", "prompt", g->prompts[ip], "sequences", g->seqs[is], "fits", c->fits);
            if (c->fits) {
                const kv_percent *q = &c->percent;
                json_object_update_new(
                    o, json_pack("{s:s,s:[f,f,f,f,f,f],s:i,s:i,s:i,s:s,s:f,s:f,s:f,s:f,s:s,s:f}", "policy", kv_policy_name(c->policy),
                                 "percent", q->wg, q->wc, q->cg, q->cc, q->hg, q->hc, "gbs", c->gbs, "nb", c->nb, "split", c->split,
                                 "split_how", c->split_how, "value", c->value, "generation_tok_s", c->generation_tok_s,
                                 "decode_tok_s", c->decode_tok_s, "token_latency_s", c->token_s, "bound", res_name(c->bound),
                                 "bound_util", c->bound_util));
                if (c->has_runner)
                    json_object_update_new(o, json_pack("{s:s,s:f,s:f}", "runner_up", kv_policy_name(c->runner), "runner_up_value",
                                                        c->runner_value, "lead", c->lead));
            }
            json_array_append_new(cells, o);
        }
    return json_pack("{s:s,s:s,s:s,s:i,s:o}", "model", g->model, "hw", g->hw, "objective", search_objective_name(g->objective),
                     "gen", g->gen, "cells", cells);
}

static int run_regions(int js, const rsel *sel, const search_opts *base, const char *plots) {
    kv_status st = exp_plot_dir(plots);
    if (st) return cli_fail(st);
    /* resolve everything first: a misspelt name fails in a second, not after minutes of searching */
    kv_model *ms = calloc((size_t)sel->nm, sizeof *ms);
    hw_profile *ps = calloc((size_t)sel->nh, sizeof *ps);
    regions_grid *g = calloc((size_t)sel->nm, sizeof *g);
    json_t *arr = json_array();
    int wins[KV_POL_COUNT] = {0}, nofit = 0, searches = 0, rc = 0;
    double wall = 0;
    if (!ms || !ps || !g || !arr) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < sel->nm && !st; i++) st = kv_model_resolve(sel->models[i], &ms[i]);
    for (int i = 0; i < sel->nh && !st; i++) st = hw_profile_resolve(sel->hws[i], &ps[i]);
    for (int h = 0; h < sel->nh && !st; h++) {
        int ng = 0;
        for (int i = 0; i < sel->nm && !st; i++) {
            if ((st = regions_run(&ms[i], &ps[h], base, sel->prompts, sel->np, sel->seqs, sel->ns, &g[i]))) break;
            ng++;
            searches += g[i].searches, nofit += g[i].nofit, wall += g[i].wall_s;
            for (int c = 0; c < g[i].np * g[i].ns; c++)
                if (g[i].cells[c].fits) wins[g[i].cells[c].policy]++;
            if (js) json_array_append_new(arr, grid_json(&g[i]));
            else {
                print_grid(&g[i], &ps[h]);
                printf("\n");
                fflush(stdout); /* a long run shows its progress */
            }
        }
        if (!st) {
            /* the figure's name comes from the profile's name, which a user's file sets: a name
             * that is not a plain file name gets the profile's position instead */
            char name[96], title[256];
            snprintf(name, sizeof name, "search-regions-%s", ps[h].name);
            if (!kv_str_is_name(name, EXP_NAME_MAX + 16)) snprintf(name, sizeof name, "search-regions-hw%d", h + 1);
            snprintf(title, sizeof title, "which policy wins on %s: %s, gen %d (label: winner, its lead over the best other policy)",
                     ps[h].name, search_objective_name(base->objective), base->gen);
            st = searchplot_regions(plots, name, title, g, ng);
            if (!st && !js) printf("figure: %s/%s.{png,svg}\n\n", plots, name);
        }
        for (int i = 0; i < ng; i++) regions_free(&g[i]);
    }
    if (st) goto out;
    if (js) {
        json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
    } else {
        printf("wins over %d cells (%d models x %d profiles x %d prompts x %d sequence counts):", searches, sel->nm, sel->nh,
               sel->np, sel->ns);
        for (int pol = 0; pol < KV_POL_COUNT; pol++) printf(" %s %d,", kv_policy_name((kv_policy)pol), wins[pol]);
        printf(" does not fit %d; %.1f s of search\n", nofit, wall);
    }
out:
    if (st) rc = cli_fail(st);
    json_decref(arr);
    free(ms);
    free(ps);
    free(g);
    return rc;
}

/* ---- several GPUs on one host (--gpus, --topology) --------------------------------------------- */

#define SEARCH_GPUS_RERANK 8

/* The plan of candidate c run by n replicas together on t: sim_multi_run shares every hop flow by
 * flow, where the search saw a fair share. KV_ENOFIT (cleared, *fits = 0) when the replicas' host
 * buffers do not fit the host. */
static kv_status replicas_of(const kv_model *m, const hw_profile *p, const hw_topo *t, int n, const search_cand *c,
                             sim_multi_result *r, int *fits) {
    sim_ctx *s = sim_new();
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    kv_status st = sim_multi_run(s, m, p, t, n, &c->plan, r);
    sim_free(s);
    *fits = st == KV_OK;
    if (st == KV_ENOFIT) kv_errclear(), st = KV_OK;
    return st;
}

static json_t *replicas_json(const sim_multi_result *r, const kv_model *m, const hw_topo *t, const search_cand *c, int fits) {
    if (!fits) return json_null();
    char *s = sim_multi_json(r, m, t, &c->plan);
    json_t *o = s ? json_loads(s, 0, NULL) : NULL;
    free(s);
    return o ? o : json_null();
}

static void print_replicas(const char *what, const search_cand *c, const sim_multi_result *r, int fits) {
    char sp[32];
    fmt_split(sp, sizeof sp, c);
    printf("  %-14s %s, gbs %d x nb %d, split %s: ", what, kv_policy_name(c->plan.policy), c->plan.batch, c->plan.nb, sp);
    if (!fits) {
        printf("does not fit the host's memory with every replica\n");
        return;
    }
    printf("aggregate %.1f tok/s decode, bottleneck %s (%.0f %%)\n", r->aggregate_tok_s, sim_multi_bottleneck(r),
           100 * r->bottleneck_share);
    printf("  %-14s per GPU", "");
    for (int i = 0; i < r->n; i++) printf(" %.1f", r->rep_tok_s[i]);
    printf(" tok/s\n");
}

/* The objective of a replicas' run, larger is better: the search's objective over the host (the
 * slowest replica sets prefill and decode times). */
static double rep_value(const sim_multi_result *r, const kv_plan *pl, search_objective o) {
    if (o == SEARCH_DECODE) return r->aggregate_tok_s;
    if (o == SEARCH_LATENCY) return r->decode_s > 0 ? -r->decode_s / (pl->gen - 1) : -1e300;
    double t = r->prefill_s + r->decode_s;
    return t > 0 ? (double)r->n * pl->batch * pl->nb * pl->gen / t : 0;
}

/* kvpr search --gpus N [--topology T]: the search for one of N replicas (search_opts.topo/gpus: a
 * fair share of every shared hop), then its best candidates simulated with all N replicas
 * together and the best of them kept, its KVPR split scanned the same way: the fair share is an
 * approximation (on DGX A100 it stops a few per cent short of the split the shared run wants).
 * The choice for one GPU alone on the same host, run by the same N replicas, shows what sharing
 * the host changed and what it is worth. */
static int run_gpus(const char *model, const char *hw, const char *topo, int n, search_opts *o, int js) {
    kv_status st;
    hw_topo t;
    if (topo && (st = hw_topo_resolve(topo, &t))) return cli_fail(st);
    if (topo && !hw) hw = t.profile; /* the topology's GPU unless --hw swaps it */
    if (!model || !hw || !o->prompt || !o->gen)
        return cli_usage("--model, --hw (or --topology), --prompt and --gen are required (see --help)");
    if (o->objective == SEARCH_LATENCY && o->max_token_s > 0)
        return cli_usage("--max-token-latency bounds a throughput objective (generation or decode), not latency itself");
    kv_model m;
    hw_profile p;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    if (!topo) hw_topo_default(&p, n, &t);
    if (n > t.ngpus) return cli_usage("topology %s has %d GPUs: --gpus must be 1 to %d", t.name, t.ngpus, t.ngpus);
    if (o->gpu_bytes > 0) p.gpu.mem_bytes.value = o->gpu_bytes; /* the replicas' simulation checks the same GPU */
    /* the replicas run one plan with one split (sim_multi reports one); a split per step would be
     * chosen for one GPU's share and is not what the replicas simulate */
    o->per_step = 0;
    o->topo = &t, o->gpus = n;
    int top = o->top;
    if (o->top < SEARCH_GPUS_RERANK) o->top = SEARCH_GPUS_RERANK; /* candidates re-ranked with the replicas */
    search_result r, a;
    if ((st = search_run(&m, &p, o, &r))) return cli_fail(st);
    search_opts oa = *o;
    oa.gpus = 1; /* the same host with one GPU: its CPU, DRAM and uplinks to itself */
    oa.top = 1;
    int have_alone = 0;
    if (n > 1) {
        if ((st = search_run(&m, &p, &oa, &a)) && st != KV_ENOFIT) {
            search_result_free(&r);
            return cli_fail(st);
        }
        if (st) kv_errclear();
        have_alone = st == KV_OK;
    }
    /* the replicas' run of every candidate; then the winner's split */
    sim_multi_result mr, ma, x;
    int fr = 0, fa = 0, fx, pick = 0, split0 = -1;
    double bestv = -1e300;
    for (int i = 0; i < r.n && !st; i++) {
        if ((st = replicas_of(&m, &p, &t, n, &r.c[i], &x, &fx)) || !fx) continue;
        double v = rep_value(&x, &r.c[i].plan, o->objective);
        if (v > bestv) bestv = v, pick = i, mr = x, fr = 1;
    }
    search_cand w;
    int have_w = 0;
    if (!st) st = search_cand_copy(&w, &r.c[pick]);
    have_w = !st;
    if (!st && fr && w.plan.policy == KV_POL_KVPR) {
        search_cand c;
        int step = o->prompt / 64 > 1 ? o->prompt / 64 : 1;
        split0 = w.plan.split;
        if (!(st = search_cand_copy(&c, &w))) {
            for (int l = 0; l <= o->prompt && !st; l += step) {
                c.plan.split = l;
                if ((st = replicas_of(&m, &p, &t, n, &c, &x, &fx)) || !fx) continue;
                double v = rep_value(&x, &c.plan, o->objective);
                if (v > bestv) bestv = v, w.plan.split = l, mr = x;
            }
            search_cand_free(&c);
        }
    }
    if (!st && have_alone) st = replicas_of(&m, &p, &t, n, &a.c[0], &ma, &fa);
    if (st) {
        if (have_w) search_cand_free(&w);
        search_result_free(&r);
        if (have_alone) search_result_free(&a);
        return cli_fail(st);
    }
    int shown_n = r.n < top ? r.n : top;
    if (split0 >= 0 && split0 != w.plan.split) { /* its single-replica figures for the split kept (one GPU's share) */
        int fits = 0;
        search_cand c;
        if ((st = search_simulate(&m, &p, o, &w.plan, &c, &fits))) {
            search_cand_free(&w);
            search_result_free(&r);
            if (have_alone) search_result_free(&a);
            return cli_fail(st);
        }
        if (fits) {
            search_cand_free(&w);
            w = c;
            w.split_how = "replicas";
        } else search_cand_free(&c);
    }
    const search_cand *wa = have_alone ? &a.c[0] : &w;
    if (!have_alone) ma = mr, fa = fr;
    double gain = fr && fa && ma.aggregate_tok_s > 0 ? mr.aggregate_tok_s / ma.aggregate_tok_s - 1 : 0;
    if (js) {
        json_t *cands = json_array(), *best = json_object();
        for (int i = 0; i < shown_n; i++) json_array_append_new(cands, cand_json(&r.c[i], i + 1));
        for (int i = 0; i < KV_POL_COUNT; i++)
            if (r.has[i]) json_object_set_new(best, kv_policy_name((kv_policy)i), cand_json(&r.best[i], 0));
        json_t *out = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:s,s:f,s:i,s:o,s:o,s:o,s:i,s:o,s:{s:o,s:o},s:f}", "model", m.name, "hw",
                                p.name, "topology", t.name, "gpus", n, "prompt", o->prompt, "gen", o->gen, "objective",
                                search_objective_name(o->objective), "max_token_latency_s", o->max_token_s, "sequences", o->sequences,
                                "candidates", cands, "best_per_policy", best, "plan", cand_json(&w, 0), "plan_from_candidate",
                                pick + 1, "replicas", replicas_json(&mr, &m, &t, &w, fr),
                                "alone", "plan", cand_json(wa, 0), "replicas", replicas_json(&ma, &m, &t, wa, fa),
                                "aggregate_gain_over_alone", gain);
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(out);
    } else {
        printf("%s on %s (%s), one of %d data-parallel replicas sharing the host; prompt %d, gen %d: objective %s", m.name, t.name,
               p.name, n, o->prompt, o->gen, search_objective_name(o->objective));
        if (o->max_token_s > 0) printf(", at most %g ms per token", 1e3 * o->max_token_s);
        if (o->sequences) printf(", %d sequences per GPU", o->sequences);
        printf("\n  (each GPU's fair share of its switch uplink, socket DRAM, cores and host memory; per GPU)\n");
        print_header(o->objective);
        for (int i = 0; i < shown_n; i++) print_row(i + 1, &r.c[i], o->objective);
        print_why(&r, o);
        printf("\n%d replicas on %s, simulated together (every hop shared flow by flow):\n", n, t.name);
        if (!fr) printf("  no candidate fits the host's memory with every replica\n");
        else {
            printf("  the best of the search's first %d candidates run this way is #%d", r.n, pick + 1);
            if (split0 >= 0 && split0 != w.plan.split) printf(", its split moved from %d to %d", split0, w.plan.split);
            printf("\n");
        }
        print_replicas("this plan", &w, &mr, fr);
        if (have_alone) {
            print_replicas("one GPU's plan", wa, &ma, fa);
            if (fr && fa)
                printf("  the plan for the shared host is %+.1f %% in aggregate against the plan for one GPU alone\n", 100 * gain);
        }
        char pc[128];
        fmt_percent(pc, sizeof pc, &w.plan.percent);
        printf("run it: kvpr sim --model %s --gpus %d %s%s --hw %s --prompt %d --gen %d --policy %s --mode %s --gbs %d --nb %d "
               "--prefetch %d --percent '%s'",
               m.name, n, topo ? "--topology " : "", topo ? t.name : "", p.name, o->prompt, o->gen, kv_policy_name(w.plan.policy),
               kv_mode_name(w.plan.mode), w.plan.batch, w.plan.nb, w.plan.prefetch, pc);
        if (w.plan.policy == KV_POL_KVPR) printf(" --split %d", w.plan.split);
        if (w.plan.compress) printf(" --compress %s", kv_compress_name(w.plan.compress));
        printf("\n");
    }
    search_cand_free(&w);
    search_result_free(&r);
    if (have_alone) search_result_free(&a);
    return 0;
}

int cmd_search(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},      {"hw", 1, 0, 'w'},          {"prompt", 1, 0, 'p'},      {"gen", 1, 0, 'g'},
        {"objective", 1, 0, 'o'},  {"max-token-latency", 1, 0, 'l'}, {"sequences", 1, 0, 's'}, {"top", 1, 0, 't'},
        {"policies", 1, 0, 'P'},   {"max-gbs", 1, 0, 'B'},     {"max-nb", 1, 0, 'N'},      {"prefetch-max", 1, 0, 'D'},
        {"no-per-step", 0, 0, 'S'}, {"gpu-mem", 1, 0, 'G'},    {"cpu-mem", 1, 0, 'C'},     {"sim-budget", 1, 0, 'b'},
        {"json", 0, 0, 'j'},       {"validate", 0, 0, 'V'},    {"flexgen", 0, 0, 'F'},     {"help", 0, 0, 'h'},
        {"search", 0, 0, 'Z'},     {"regions", 0, 0, 'R'},     {"models", 1, 0, 'M'},      {"prompts", 1, 0, 'Q'},
        {"batches", 1, 0, 'K'},    {"plots", 1, 0, 'O'},       {"compress", 1, 0, 'X'},    {"gpus", 1, 0, 'U'},
        {"topology", 1, 0, 'T'},   {0, 0, 0, 0}};
    const char *model = NULL, *hw = NULL, *models = NULL, *prompts = NULL, *batches = NULL, *plots = "plots", *topo = NULL;
    int gpus = 0;
    int js = 0, validate = 0, flexgen = 0, regions = 0, gen_given = 0, budget_given = 0, c;
    double ms = 0, gib;
    search_opts o;
    search_opts_defaults(&o);
    kv_status st;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'w': hw = optarg; break;
        case 'p': if ((st = cli_int("--prompt", optarg, 1, 1 << 24, &o.prompt))) return cli_fail(st); break;
        case 'g':
            if ((st = cli_int("--gen", optarg, 2, 1 << 24, &o.gen))) return cli_fail(st);
            gen_given = 1;
            break;
        case 'o': if ((st = search_objective_parse(optarg, &o.objective))) return cli_fail(st); break;
        case 'l':
            if ((st = cli_double("--max-token-latency", optarg, 1e-6, 1e9, &ms))) return cli_fail(st);
            o.max_token_s = ms / 1e3;
            break;
        case 's': if ((st = cli_int("--sequences", optarg, 1, 1 << 20, &o.sequences))) return cli_fail(st); break;
        case 't': if ((st = cli_int("--top", optarg, 1, 1000, &o.top))) return cli_fail(st); break;
        case 'P': if ((st = parse_policies(optarg, &o.policies))) return cli_fail(st); break;
        case 'B': if ((st = cli_int("--max-gbs", optarg, 1, 1 << 20, &o.max_gbs))) return cli_fail(st); break;
        case 'N': if ((st = cli_int("--max-nb", optarg, 1, 4096, &o.max_nb))) return cli_fail(st); break;
        case 'D': if ((st = cli_int("--prefetch-max", optarg, 1, 8, &o.prefetch_max))) return cli_fail(st); break;
        case 'S': o.per_step = 0; break;
        case 'G':
            if ((st = cli_double("--gpu-mem", optarg, 1e-3, 1e6, &gib))) return cli_fail(st);
            o.gpu_bytes = gib * GIB;
            break;
        case 'C':
            if ((st = cli_double("--cpu-mem", optarg, 1e-3, 1e7, &gib))) return cli_fail(st);
            o.cpu_bytes = gib * GIB;
            break;
        case 'b':
            if ((st = cli_double("--sim-budget", optarg, 1, 1e12, &o.sim_tasks))) return cli_fail(st);
            budget_given = 1;
            break;
        case 'R': regions = 1; break;
        case 'M': models = optarg; break;
        case 'Q': prompts = optarg; break;
        case 'K': batches = optarg; break;
        case 'O': plots = optarg; break;
        case 'X': if ((st = kv_compress_parse(optarg, &o.compress))) return cli_fail(st); break;
        case 'U': if ((st = cli_int("--gpus", optarg, 1, HW_TOPO_MAX_GPUS, &gpus))) return cli_fail(st); break;
        case 'T': topo = optarg; break;
        case 'j': js = 1; break;
        case 'V': validate = 1; break;
        case 'F': flexgen = 1; break;
        case 'h': fputs(search_help, stdout); return 0;
        case 'Z': break; /* `kvpr plan --search ...` and `kvpr validate --search` hand their arguments here */
        default: return cli_usage("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage("unexpected argument '%s'", argv[optind]);
    /* `kvpr validate --search` hands its arguments here with argv[0] = "validate" */
    if (argc > 0 && argv[0] && !strcmp(argv[0], "validate")) validate = 1;
    if (validate + flexgen + regions > 1) return cli_usage("--validate, --flexgen and --regions are separate runs: give one");
    if ((gpus || topo) && (validate || flexgen || regions))
        return cli_usage("--gpus and --topology plan one search: not with --validate, --flexgen or --regions");
    if (gpus || topo) return run_gpus(model, hw, topo, gpus ? gpus : 1, &o, js);
    if (!regions && (models || prompts || batches))
        return cli_usage("--models, --prompts and --batches belong to --regions (see --help)");
    if (regions) {
        if (o.sequences) return cli_usage("--regions sets the sequences of each cell: give --batches N,N.. instead of --sequences");
        if (o.prompt) return cli_usage("--regions sets the prompt of each cell: give --prompts P,P.. instead of --prompt");
        if (o.objective == SEARCH_LATENCY && o.max_token_s > 0)
            return cli_usage("--max-token-latency bounds a throughput objective (generation or decode), not latency itself");
        rsel sel;
        memset(&sel, 0, sizeof sel);
        static char mbuf[1024], hbuf[1024];
        const int *dp, *ds;
        sel.np = regions_default_prompts(&dp);
        sel.ns = regions_default_seqs(&ds);
        memcpy(sel.prompts, dp, sizeof(int) * (size_t)sel.np);
        memcpy(sel.seqs, ds, sizeof(int) * (size_t)sel.ns);
        if (!gen_given) o.gen = 32;
        /* a quarter of the single search's default budget: 1155 searches in a few minutes, and the
         * winner's policy is settled by the first simulation of each policy, which the budget never skips */
        if (!budget_given) o.sim_tasks = 1e6;
        if (model && models) return cli_usage("--model and --models: give one");
        if (!models) models = model ? model : "OPT-6.7B,OPT-30B,Llama-3-8B";
        if ((st = split_names("--models", models, mbuf, sizeof mbuf, sel.models, LIST_MAX, &sel.nm))) return cli_fail(st);
        static char names[LIST_MAX + 1][64];
        if (hw) {
            if ((st = split_names("--hw", hw, hbuf, sizeof hbuf, sel.hws, LIST_MAX, &sel.nh))) return cli_fail(st);
        } else {
            /* every shipped profile but the paper's idealised constants (not a machine) */
            int n = hw_profile_list(names, LIST_MAX + 1);
            for (int i = 0; i < n && sel.nh < LIST_MAX; i++)
                if (strcmp(names[i], "paper-a100")) sel.hws[sel.nh++] = names[i];
            if (!sel.nh) return cli_fail(kv_errorf(KV_ENOTFOUND, "--regions: no profile in %s", hw_profile_dir()));
        }
        if (prompts && (st = split_ints("--prompts", prompts, sel.prompts, REGIONS_MAX, &sel.np))) return cli_fail(st);
        if (batches && (st = split_ints("--batches", batches, sel.seqs, REGIONS_MAX, &sel.ns))) return cli_fail(st);
        return run_regions(js, &sel, &o, plots);
    }
    if (validate) return run_validate(js, plots);
    if (flexgen) return run_flexgen(js);
    if (!model || !hw || !o.prompt || !o.gen) return cli_usage("--model, --hw, --prompt and --gen are required (see --help)");
    if (o.objective == SEARCH_LATENCY && o.max_token_s > 0)
        return cli_usage("--max-token-latency bounds a throughput objective (generation or decode), not latency itself");
    kv_model m;
    hw_profile p;
    if ((st = kv_model_resolve(model, &m)) || (st = hw_profile_resolve(hw, &p))) return cli_fail(st);
    search_result r;
    if ((st = search_run(&m, &p, &o, &r))) return cli_fail(st);
    double gcap = o.gpu_bytes > 0 ? o.gpu_bytes : p.gpu.mem_bytes.value, ccap = o.cpu_bytes > 0 ? o.cpu_bytes : p.cpu.mem_bytes.value;
    if (js) {
        json_t *cands = json_array(), *best = json_object();
        for (int i = 0; i < r.n; i++) json_array_append_new(cands, cand_json(&r.c[i], i + 1));
        for (int i = 0; i < KV_POL_COUNT; i++)
            if (r.has[i]) json_object_set_new(best, kv_policy_name((kv_policy)i), cand_json(&r.best[i], 0));
        json_t *out = json_pack(
            "{s:s,s:s,s:i,s:i,s:s,s:f,s:i,s:f,s:f,s:o,s:o,s:{s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:{s:i,s:i,s:i},s:f,s:f}}", "model",
            m.name, "hw", p.name, "prompt", o.prompt, "gen", o.gen, "objective", search_objective_name(o.objective),
            "max_token_latency_s", o.max_token_s, "sequences", o.sequences, "gpu_mem_bytes", gcap, "cpu_mem_bytes", ccap,
            "candidates", cands, "best_per_policy", best, "search", "outer", r.outer, "mips", r.mips, "infeasible", r.infeasible,
            "simulated", r.simulated, "pruned", r.pruned, "over_bound", r.over_bound, "tasks", r.tasks, "lp", "rows", r.rows,
            "cols", r.cols, "integer", r.ints, "solve_s", r.solve_s, "sim_s", r.sim_s);
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(out);
    } else {
        printf("%s on %s (GPU %.1f GiB, CPU %.1f GiB), prompt %d, gen %d: objective %s", m.name, p.name, gcap / GIB, ccap / GIB,
               o.prompt, o.gen, search_objective_name(o.objective));
        if (o.max_token_s > 0) printf(", at most %g ms per token", 1e3 * o.max_token_s);
        if (o.sequences) printf(", %d sequences", o.sequences);
        printf("\n");
        print_header(o.objective);
        for (int i = 0; i < r.n; i++) print_row(i + 1, &r.c[i], o.objective);
        print_why(&r, &o);
        printf("\nsearch: %d outer choices, %d MIPs in GLPK (%d infeasible; largest %d rows x %d columns, %d integer) in %.2f s;\n"
               "        %d simulated (%d pruned by memory, %d over the latency bound) in %.2f s\n",
               r.outer, r.mips, r.infeasible, r.rows, r.cols, r.ints, r.solve_s, r.simulated, r.pruned, r.over_bound, r.sim_s);
        const search_cand *w = &r.c[0];
        char pc[128];
        fmt_percent(pc, sizeof pc, &w->plan.percent);
        printf("run it: kvpr sim --model %s --hw %s --prompt %d --gen %d --policy %s --mode %s --gbs %d --nb %d --prefetch %d "
               "--percent '%s'",
               m.name, p.name, o.prompt, o.gen, kv_policy_name(w->plan.policy), kv_mode_name(w->plan.mode), w->plan.batch,
               w->plan.nb, w->plan.prefetch, pc);
        if (w->plan.policy == KV_POL_KVPR) {
            if (w->plan.split_steps) printf(" --scheduler dynamic");
            else printf(" --split %d", w->plan.split);
        }
        if (w->plan.compress) printf(" --compress %s", kv_compress_name(w->plan.compress));
        printf("\n");
    }
    search_result_free(&r);
    return 0;
}
