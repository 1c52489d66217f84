/* kvpr-bench: speed of the simulator core and of a full split sweep (make bench).
 * Timing lives here, never in tests. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "../hwmodel/cost.h"
#include "../sim/sim.h"

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
            int32_t a = sim_des_task(d, KV_OP_KV_H2D, KV_RES_H2D, 0, i, 0);
            int32_t g = sim_des_task(d, KV_OP_ATTN, KV_RES_GPU, 0, i, 0);
            int32_t w = sim_des_task(d, KV_OP_KV_D2H, KV_RES_D2H, 0, i, 0);
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

static int bench_sweep(void) {
    kv_model m;
    hw_profile p;
    if (kv_model_find("OPT-6.7B", &m) || hw_profile_resolve("a100-40gb-pcie4", &p)) {
        fprintf(stderr, "bench: %s\n", kv_errmsg());
        return 1;
    }
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 64, pl.prompt = 1024, pl.gen = 32;
    sim_ctx *s = sim_new();
    sim_result r;
    double t0 = now(), best = 1e300;
    int bl = 0;
    uint64_t ev = 0;
    for (int l = 0; l <= 1024; l++) {
        pl.split = l;
        if (sim_run(s, &m, &p, &pl, &r)) {
            fprintf(stderr, "bench: %s\n", kv_errmsg());
            return 1;
        }
        ev += r.events;
        if (r.decode_s < best) best = r.decode_s, bl = l;
    }
    double t = now() - t0;
    printf("sweep: OPT-6.7B a100-40gb-pcie4 b64 p1024 g32 latency, l = 0..1024: %.2f s for 1025 runs "
           "(%.2f ms per run, %.1f M events/s with plan expansion); best l = %d (%.3f s decode)\n",
           t, 1e3 * t / 1025, (double)ev / t / 1e6, bl, best);
    sim_free(s);
    return 0;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3000000;
    return bench_core(n) || bench_sweep();
}
