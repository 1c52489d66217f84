/* sched: choosing the split l. Each formulation is a type (name + cost model + solver) so that
 * a new one is a new type, not an edit of a switch.
 *   paper      the paper's model (method.md section 3), integer LP with GLPK, s = prompt + gen,
 *              l capped at the prompt; with the closed form as an independent check
 *   pipelined  the runtime's pipeline: next layer's transfers overlap this layer's compute; per-copy
 *              overheads, size efficiency, duplex write-back, GEMM efficiency; weights per layer and
 *              micro-batches in throughput mode; a small MIP (the recompute curve is not convex)
 *   dynamic    the pipelined model solved per decode step: a split per step as the context grows */
#ifndef SCHED_H
#define SCHED_H

#include "../core/plan.h"
#include "../hwmodel/profile.h"
#include "../hwmodel/topo.h"

typedef enum { SCHED_PAPER = 0, SCHED_PIPELINED, SCHED_DYNAMIC, SCHED_COUNT } sched_kind;

const char *sched_name(sched_kind k);
kv_status sched_parse(const char *s, sched_kind *out);

typedef struct {
    sched_kind kind;
    int split;            /* fixed split (dynamic: the first step's) */
    int nsteps;
    int *splits;          /* per decode step, nsteps entries (malloc'ed; sched_result_free) */
    int lmax;             /* largest split allowed (activations stored, memory limits) */
    double predicted_s;   /* decode time the formulation predicts for its choice */
    double offload_s;     /* ... and for l = 0 */
    double closed_form;   /* paper: real-valued l* = s p v_gpu / (2 h v_com + p v_gpu) */
    int kept_tokens;      /* activations kept on the CPU per sequence: tokens [0, kept_tokens) */
    double act_cpu_bytes; /* CPU memory those activations take (all sequences, all layers) */
    double solve_us;      /* wall time of the solver calls */
    int rows, cols, ints; /* size of the (last) LP/MIP */
} sched_result;

void sched_result_free(sched_result *r);

/* Chooses the split for plan's workload (mode, batch, nb, prompt, gen, prefetch, keep_act).
 * write_lp: if not NULL, the (first) LP is written there in CPLEX LP format. */
kv_status sched_plan(sched_kind k, const kv_model *m, const hw_profile *p, const kv_plan *pl, const char *write_lp,
                     sched_result *out);

/* KVPR's one split for n data-parallel replicas on host topology t: the scheduler k sees one
 * replica's fair share of every shared hop (hw_topo_effective). pl->split becomes the shared
 * host's split; *alone (if not NULL) the split one GPU alone on that host would get. */
kv_status sched_plan_shared(sched_kind k, const kv_model *m, const hw_profile *p, const hw_topo *t, int n, kv_plan *pl,
                            int *alone);

/* The formulation's own cost model at a fixed split (the brute-force oracle of the tests):
 * predicted decode time in seconds. */
double sched_model_time(sched_kind k, const kv_model *m, const hw_profile *p, const kv_plan *pl, int l);
/* Largest split the plan allows (activations stored; CPU and GPU memory), or -1 with a message
 * when even l = 0 does not fit. */
int sched_lmax(const kv_model *m, const hw_profile *p, const kv_plan *pl);

#endif
