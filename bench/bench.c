/* kvpr-bench: speed of the simulator core and of a full split sweep (make bench).
 * Timing lives here, never in tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "../hwmodel/cost.h"
#include "../sched/sched.h"
#include "../sim/sim.h"
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Core: a pipeline of copy -> compute -> write-back stages, like a decode run, without the plan
 * expansion: events per second of heap, resources and link coupling. */
static int bench_core(int n) {
    sim_des *d = sim_des_new();
    double best = 1e300;
    uint64_t ev = 0;
    for (int rep = 0; rep < 3; rep++) {
        sim_des_reset(d);
        sim_des_links(d, (sim_link){25e9, 0.5}, (sim_link){25e9, 0.9});
        int32_t prev = -1;
        for (int i = 0; i < n / 3; i++) {
            int32_t a = sim_des_task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, i, 0);
            int32_t g = sim_des_task(d, KV_OP_ATTN, KV_Q_COMPUTE, 0, i, 0);
            int32_t w = sim_des_task(d, KV_OP_KV_D2H, KV_Q_STORE, 0, i, 0);
            sim_des_get(d, a)->work = 1e6 + (i % 7) * 1e5;
            sim_des_get(d, g)->fixed_s = 30e-6 + (i % 5) * 1e-6;
            sim_des_get(d, w)->work = 2e5;
            sim_des_dep(d, a, g);
            sim_des_dep(d, g, w);
            if (prev >= 0) sim_des_dep(d, prev, a);
            prev = i >= 2 ? g - 6 : -1; /* double buffering: copy i waits for compute i-2 */
        }
        sim_des_stats st;
        double t0 = now();
        if (sim_des_run(d, &st)) {
            fprintf(stderr, "bench: %s\n", kv_errmsg());
            return 1;
        }
        double t = now() - t0;
        if (t < best) best = t, ev = st.events;
    }
    printf("core: %llu events in %.3f s: %.1f million events/s (one core)\n", (unsigned long long)ev, best,
           (double)ev / best / 1e6);
    sim_des_free(d);
    return 0;
}

/* The model, profile and plan of a benchmark configuration; 1 (said on stderr) if one is unknown. */
static int bench_setup(const char *model, const char *hw, kv_mode mode, int batch, int nb, int prompt, int gen, kv_model *m, hw_profile *p,
                       kv_plan *pl) {
    if (kv_model_find(model, m) || hw_profile_resolve(hw, p)) {
        fprintf(stderr, "bench: %s\n", kv_errmsg());
        return 1;
    }
    kv_plan_defaults(pl);
    pl->mode = mode, pl->batch = batch, pl->nb = nb, pl->prompt = prompt, pl->gen = gen;
    return 0;
}

/* A split sweep (every split of one configuration, one context), streamed or not. */
static int bench_sweep(const char *model, const char *hw, kv_mode mode, int batch, int nb, int prompt, int gen, int stream) {
    kv_model m;
    hw_profile p;
    kv_plan pl;
    if (bench_setup(model, hw, mode, batch, nb, prompt, gen, &m, &p, &pl)) return 1;
    sim_ctx *s = sim_new();
    sim_stream(s, stream, 0);
    sim_result r;
    double t0 = now(), best = 1e300;
    int bl = 0, runs = 0;
    uint64_t ev = 0, ops = 0;
    uint64_t *ffrun = malloc(sizeof *ffrun * (size_t)(prompt + 1));
    if (!ffrun) return 1;
    for (int l = 0; l <= prompt; l++) {
        pl.split = l;
        if (sim_run(s, &m, &p, &pl, &r)) {
            fprintf(stderr, "bench: %s\n", kv_errmsg());
            free(ffrun);
            return 1;
        }
        runs++;
        ev += r.events;
        ops += (uint64_t)r.tasks;
        if (r.decode_s < best) best = r.decode_s, bl = l;
        /* decode layers replayed rather than simulated (near the split where link and GPU balance
         * the state drifts and never repeats exactly: those runs are simulated event by event) */
        ffrun[l] = sim_des_ff_periods(sim_graph_des(s));
    }
    double t = now() - t0;
    uint64_t ff = 0, ffmax = 0;
    int lfew = 0, under = 0;
    for (int l = 0; l <= prompt; l++) {
        ff += ffrun[l];
        if (ffrun[l] > ffmax) ffmax = ffrun[l];
        if (ffrun[l] < ffrun[lfew]) lfew = l;
    }
    for (int l = 0; l <= prompt; l++) under += 4 * ffrun[l] < 3 * ffmax;
    printf("sweep%s: %s %s b%d%s%.0d p%d g%d %s, l = 0..%d: %.2f s for %d runs (%.2f ms per run, %.0f ns per op of the runs, "
           "graph building or re-costing included, %.1f M events/s); best l = %d (%.4f s decode); graph re-costed in %llu runs; "
           "streamed runs run again whole: %llu\n",
           stream == SIM_STREAM_ALWAYS ? " (streamed)" : stream ? " (default: streamed if large)" : " (whole graph)", model, hw, batch, mode == KV_MODE_THROUGHPUT ? " x" : "",
           mode == KV_MODE_THROUGHPUT ? nb : 0, prompt, gen, kv_mode_name(mode), prompt, t, runs, 1e3 * t / runs, 1e9 * t / (double)ops,
           (double)ev / t / 1e6, bl, best, (unsigned long long)sim_graph_reuses(s), (unsigned long long)sim_stream_reruns(s));
    printf("  layers fast-forwarded per run: mean %.1f, most %llu, fewest %llu (l = %d); %d runs under three quarters of the most\n",
           (double)ff / runs, (unsigned long long)ffmax, (unsigned long long)ffrun[lfew], lfew, under);
    free(ffrun);
    sim_free(s);
    return 0;
}

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* One long run, its split the scheduler's closed form; time per op and the process's peak memory
 * (run it alone: the peak is the process's whole life). */
static int bench_long(const char *model, const char *hw, kv_mode mode, int batch, int nb, int prompt, int gen, int stream) {
    kv_model m;
    hw_profile p;
    kv_plan pl;
    if (bench_setup(model, hw, mode, batch, nb, prompt, gen, &m, &p, &pl)) return 1;
    sched_result sr;
    if (sched_plan(SCHED_PIPELINED, &m, &p, &pl, NULL, &sr)) {
        fprintf(stderr, "bench: %s\n", kv_errmsg());
        return 1;
    }
    pl.split = sr.split;
    sched_result_free(&sr);
    sim_ctx *s = sim_new();
    sim_stream(s, stream, 0);
    sim_result r;
    long rss0 = peak_rss_kb();
    double t0 = now();
    if (sim_run(s, &m, &p, &pl, &r)) {
        fprintf(stderr, "bench: %s\n", kv_errmsg());
        return 1;
    }
    double t = now() - t0;
    printf("long%s: %s %s b%d x%d p%d g%d %s, l = %d: %d ops in %.2f s (%.0f ns per op), peak memory %.0f MB (%.0f MB before), "
           "decode %.3f s; layers fast-forwarded: %llu (replays with their nodes in bulk: %llu); run again whole: %llu\n",
           stream == SIM_STREAM_ALWAYS ? " (streamed)" : stream ? " (default: streamed if large)" : " (whole graph)", model, hw, batch, nb, prompt, gen, kv_mode_name(mode), pl.split, r.tasks, t,
           1e9 * t / r.tasks, peak_rss_kb() / 1024.0, rss0 / 1024.0, r.decode_s, (unsigned long long)sim_des_ff_periods(sim_graph_des(s)),
           (unsigned long long)sim_des_ff_bulk(sim_graph_des(s), NULL), (unsigned long long)sim_stream_reruns(s));
    sim_free(s);
    return 0;
}

/* Solve time per plan over a spread of workloads (the solver's own calls, not set-up). */
static int bench_solve(void) {
    const char *models[] = {"OPT-6.7B", "OPT-13B", "OPT-30B", "LLaMA-2-7B", "Llama-3-8B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "h100-sxm", "l4", "rtx4090"};
    int batches[] = {8, 32, 64}, prompts[] = {128, 512, 1024};
    double xs[SCHED_COUNT][256];
    int n[SCHED_COUNT] = {0};
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 3; d++) {
                    kv_model m;
                    hw_profile p;
                    if (kv_model_find(models[a], &m) || hw_profile_resolve(hws[b], &p)) return 1;
                    kv_plan pl;
                    kv_plan_defaults(&pl);
                    pl.batch = batches[c], pl.prompt = prompts[d], pl.gen = 32;
                    pl.mode = (a + b + c + d) % 2 ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
                    pl.nb = pl.mode == KV_MODE_THROUGHPUT ? 8 : 1;
                    for (int k = 0; k < SCHED_COUNT; k++) {
                        sched_result r;
                        if (sched_plan((sched_kind)k, &m, &p, &pl, NULL, &r)) continue;
                        /* dynamic solves one MIP per step: report per plan, as the others */
                        if (n[k] < 256) xs[k][n[k]++] = r.solve_us;
                        sched_result_free(&r);
                    }
                }
    for (int k = 0; k < SCHED_COUNT; k++) {
        gsl_sort(xs[k], 1, (size_t)n[k]);
        printf("solve: %-9s median %.0f us, p90 %.0f us per plan over %d plans (GLPK)\n", sched_name((sched_kind)k),
               gsl_stats_median_from_sorted_data(xs[k], 1, (size_t)n[k]),
               gsl_stats_quantile_from_sorted_data(xs[k], 1, (size_t)n[k], 0.9), n[k]);
    }
    return 0;
}

/* kvpr-bench [core N | sweep | long [whole] | latency | solve]: all of them without an argument. "long"
 * is the memory target, an OPT-175B throughput run of 22 M ops: alone in its process so
 * that the peak memory is its own. */
int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    int all = !strcmp(what, "all");
    if (all || !strcmp(what, "core"))
        if (bench_core(argc > 2 ? atoi(argv[2]) : 3000000)) return 1;
    if (all || !strcmp(what, "sweep")) {
        if (bench_sweep("OPT-6.7B", "a100-40gb-pcie4", KV_MODE_LATENCY, 64, 1, 1024, 32, SIM_STREAM_OFF) ||
            bench_sweep("OPT-6.7B", "a100-40gb-pcie4", KV_MODE_LATENCY, 64, 1, 1024, 32, SIM_STREAM_ALWAYS) ||
            bench_sweep("OPT-13B", "l4", KV_MODE_THROUGHPUT, 16, 8, 512, 16, SIM_STREAM_OFF) ||
            bench_sweep("OPT-13B", "l4", KV_MODE_THROUGHPUT, 16, 8, 512, 16, SIM_STREAM_ALWAYS))
            return 1;
    }
    if (all || !strcmp(what, "long")) {
        int whole = argc > 2 && !strcmp(argv[2], "whole");
        int gen = argc > 3 ? atoi(argv[3]) : 1024;
        if (bench_long("OPT-175B", "a100-80gb", KV_MODE_THROUGHPUT, 1, 32, 256, gen, whole ? SIM_STREAM_OFF : SIM_STREAM_ALWAYS)) return 1;
    }
    if (all || !strcmp(what, "latency")) {
        if (bench_long("OPT-6.7B", "a100-40gb-pcie4", KV_MODE_LATENCY, 64, 1, 1024, 2048, SIM_STREAM_LARGE)) return 1;
        if (bench_long("OPT-6.7B", "a100-40gb-pcie4", KV_MODE_LATENCY, 64, 1, 1024, 2048, SIM_STREAM_OFF)) return 1;
    }
    if (all || !strcmp(what, "solve"))
        if (bench_solve()) return 1;
    return 0;
}
