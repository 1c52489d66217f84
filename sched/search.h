/* search: "how should I run this?" Chooses the policy, the placement (FlexGen's --percent), the GPU
 * batch and micro-batches, the prefetch depth and KVPR's split together, for one model on one
 * machine and one workload, subject to GPU and CPU memory.
 *
 * Three stages:
 *   1. enumerate what is not linear (policy, KVPR's split as a share of the prompt, where hidden
 *      states live, prefetch depth, gbs and nb as FlexGen's cost model enumerates them);
 *   2. for each such choice, a small MIP in GLPK over what the pipelined model is linear in: which
 *      of the layer's weight layouts (the midpoint rule makes weights placement a choice among a
 *      dozen tensor sets) and how many sequences of each micro-batch keep their KV cache on the CPU,
 *      under both memory capacities and the per-token latency bound;
 *   3. simulate the best predicted candidates (sim_run, after the layout's memory check), re-choose
 *      KVPR's split with the pipelined scheduler (fixed, and per decode step), rank by the simulated
 *      objective with ties broken by a fixed order of the configuration.
 * The run time is bounded: the MIPs are tiny, and the simulations stop at a budget of simulated
 * tasks (deterministic, unlike a wall-clock budget). */
#ifndef SCHED_SEARCH_H
#define SCHED_SEARCH_H

#include "../core/model.h"
#include "../core/plan.h"
#include "../hwmodel/profile.h"
#include "../hwmodel/topo.h"

typedef enum {
    SEARCH_GENERATION = 0, /* FlexGen's generation throughput: sequences x gen / (prefill + decode) */
    SEARCH_DECODE,         /* decode throughput: sequences x (gen - 1) / decode */
    SEARCH_LATENCY,        /* time per token: decode / (gen - 1), lower is better */
    SEARCH_OBJ_COUNT
} search_objective;

const char *search_objective_name(search_objective o);
kv_status search_objective_parse(const char *s, search_objective *out);

typedef struct {
    int prompt, gen;
    search_objective objective;
    double max_token_s;  /* > 0: the mean time per decode step (time between tokens) must not exceed it */
    int sequences;       /* > 0: exactly this many sequences in flight (gbs x nb = sequences); 0: free */
    int top;             /* candidates reported (>= 1) */
    unsigned policies;   /* bit (1 << kv_policy) per policy searched; 0: all */
    int max_gbs, max_nb; /* 0: only memory bounds them */
    int prefetch_max;    /* prefetch depths 1 .. prefetch_max are searched (default 2) */
    int per_step;        /* also try a KVPR split per decode step (the dynamic scheduler) */
    int compress;        /* KV_COMP_* of every candidate (4-bit K/V and activations, streamed weights) */
    double sim_tasks;    /* budget of simulated tasks for stage 3 (0: the default) */
    double gpu_bytes, cpu_bytes; /* capacities; 0: the profile's */
    const hw_topo *topo; /* with gpus > 0: plan one of `gpus` replicas sharing this host (its fair share of each hop) */
    int gpus;
} search_opts;

void search_opts_defaults(search_opts *o);

typedef struct {
    kv_plan plan;           /* complete: sim_run(plan) reproduces it; plan.split_steps is owned */
    const char *split_how;  /* "-" (no split), "fixed", "per-step" */
    double pred_prefill_s, pred_decode_s; /* the search's linear model (0 where not predicted) */
    double pred_value;
    /* simulated */
    double prefill_s, decode_s, decode_tok_s, generation_tok_s, token_s;
    double util[4];         /* busy fraction of decode time: h2d, d2h, gpu, cpu (kv_resource order) */
    double gpu_bytes, cpu_bytes;
    double value;           /* the objective: tokens/s, or seconds per token for SEARCH_LATENCY */
    int bound;              /* kv_resource with the highest busy fraction */
} search_cand;

typedef struct {
    search_cand *c;
    int n;                  /* ranked, best first, at most top */
    search_cand best[KV_POL_COUNT]; /* the best simulated candidate of each policy (has[pol]) */
    int has[KV_POL_COUNT];
    int feasible[KV_POL_COUNT];     /* distinct configurations of each policy the MIPs found feasible */
    int outer, mips, infeasible, simulated, pruned, over_bound;
    int rows, cols, ints;   /* size of the largest MIP */
    double tasks;           /* tasks simulated */
    double solve_s, sim_s;  /* wall time in GLPK and in the simulator */
} search_result;

/* Runs the search. KV_ENOFIT (with a message) when nothing fits or meets the latency bound. */
kv_status search_run(const kv_model *m, const hw_profile *p, const search_opts *o, search_result *r);
void search_result_free(search_result *r);
void search_cand_free(search_cand *c);
kv_status search_cand_copy(search_cand *dst, const search_cand *src);

/* Stage 2 of one outer choice, checked: the MIP's optimum of the linear model (seconds of the
 * objective) and the same model's optimum by enumerating every weights layout and y; both +inf
 * when nothing fits. KV_ESOLVER if the MIP's answer breaks a constraint. For tests. */
kv_status search_mip_check(const kv_model *m, const hw_profile *p, const search_opts *o, kv_policy pol, int split, int gbs,
                           int nb, int hg, int prefetch, double *mip, double *brute);

/* Simulates one plan and fills the candidate's simulated fields (the plan is copied; split_steps
 * duplicated). *fits = 0 (and KV_OK) when the layout does not fit the capacities. */
kv_status search_simulate(const kv_model *m, const hw_profile *p, const search_opts *o, const kv_plan *pl,
                          search_cand *c, int *fits);

/* Ranking: < 0 when a ranks before b. A total order: the objective (rounded to 7 significant
 * digits, so that equal runs tie), then less GPU memory, less CPU memory, then policy, gbs, nb,
 * placement, prefetch and split. */
int search_cmp(const search_cand *a, const search_cand *b, search_objective obj);
void search_rank(search_cand *c, int n, search_objective obj);

/* Brute force: every policy, placements on a 10 % lattice (weights and KV cache; hidden states on
 * the GPU or the CPU), gbs as FlexGen enumerates it and every nb up to the limits (both must be
 * set, or sequences), prefetch 2, KVPR's split by the pipelined scheduler; all simulated. */
kv_status search_brute(const kv_model *m, const hw_profile *p, const search_opts *o, search_cand *best, int *nsim);

typedef struct {
    double regret;           /* 1 - search / brute for throughput; search / brute - 1 for latency (< 0: search won) */
    double search_value, brute_value;
    int brute_sims;
    double search_s, brute_s; /* wall time */
    search_cand chosen, best;
} search_regret;

/* The search's choice against the brute force's best on the same limits. */
kv_status search_regret_of(const kv_model *m, const hw_profile *p, const search_opts *o, search_regret *out);
void search_regret_free(search_regret *r);

/* FlexGen's published single-GPU benchmark policies (T4 16 GB, 208 GB DRAM; FMInference/FlexLLMGen,
 * benchmark/flexgen/bench_suite.py, suites 6b7_1x1 and 30b_1x1). */
typedef struct {
    const char *model;
    int prompt, gen;
    double percent[6];
    int gbs, nb;
    int cpu_attn;    /* --cpu (cpu_cache_compute) */
    const char *source;
} search_flexgen_case;
int search_flexgen_cases(const search_flexgen_case **out);
/* The case's plan in our vocabulary. */
void search_flexgen_plan(const search_flexgen_case *fc, kv_plan *pl);

#endif
