/* sched_pipe: the cost models behind the schedulers, shared by the GLPK formulations and the
 * brute-force oracle, so that "same optimum" compares like with like. Times in microseconds
 * inside the LPs (coefficients near 1 keep the simplex well scaled). */
#ifndef SCHED_PIPE_H
#define SCHED_PIPE_H

#include "../core/plan.h"
#include "../hwmodel/profile.h"

#define PIPE_MAX_SEG 40
#define PIPE_MAX_BUCKETS 4

typedef struct {
    int nseg;
    int lo[PIPE_MAX_SEG], hi[PIPE_MAX_SEG];
    double c0[PIPE_MAX_SEG], c1[PIPE_MAX_SEG]; /* recompute us = c0 + c1 * l on the segment */
    int nb_;                                   /* buckets */
    double cnt[PIPE_MAX_BUCKETS];              /* decode steps in the bucket */
    double A[PIPE_MAX_BUCKETS];                /* link us per layer at l = 0, without the act copy's overhead */
    double G[PIPE_MAX_BUCKETS];                /* GPU us per layer besides recompute (qkv, attn, ffn) */
    double AF[PIPE_MAX_BUCKETS];               /* attn + ffn us (buffer recycling cycle) */
    double slope;                              /* link us per unit of l: act - kv per token */
    double actc;                               /* act us per token */
    double alpha;                              /* overhead of the act copy, us */
    double W;                                  /* weights us per layer (throughput), else 0 */
    int nbm;                                   /* micro-batches */
    int depth;                                 /* prefetch depth */
    int layers;
    int lmax;
    double eff_a, eff_k; /* copy efficiencies used (at l_ref) */
} pipe_model;

/* Builds the model for steps [t0, t1) with act/kv copy efficiency evaluated at split l_ref. */
void pipe_build(pipe_model *pm, const kv_model *m, const hw_profile *p, const kv_plan *pl, int t0, int t1, int lmax,
                int l_ref);
/* The model's decode time (us) at split l: the brute-force oracle. */
double pipe_eval(const pipe_model *pm, int l);
/* Solves the MIP with GLPK; returns the split and the optimal objective (us). */
kv_status pipe_solve(const pipe_model *pm, const char *write_lp, int *l, double *obj, int *rows, int *cols, int *ints);

/* The paper's integer LP: minimise T s.t. T >= (a + r) l, T >= a l + k (s - l), 0 <= l <= lcap.
 * With --compress kv (paper_build_comp): a and k are the packed bytes' times, r adds the
 * activations' dequantisation (it precedes the recompute on the GPU), and the streamed K/V's
 * dequantisation, dkv per token, follows both: T = a l + max(r l, k (s - l)) + dkv (s - l). */
typedef struct {
    double a, k, r; /* us per token: activation, K/V, recompute (+ dequant_act) */
    double dkv;     /* us per streamed token: dequant_kv (0 in fp16) */
    int s, lcap;
} paper_model;
void paper_build(paper_model *pm, const kv_model *m, const hw_profile *p, int batch, int s, int lcap);
void paper_build_comp(paper_model *pm, const kv_model *m, const hw_profile *p, int batch, int s, int lcap, int compress);
/* The real-valued optimum of paper_eval: l* = k s / (k + r) (dkv moves no crossing), or lcap when
 * the objective still falls past the crossing (a + r < dkv). */
double paper_lstar(const paper_model *pm);
double paper_eval(const paper_model *pm, int l);
kv_status paper_solve(const paper_model *pm, const char *write_lp, int *l, double *obj);

#endif
