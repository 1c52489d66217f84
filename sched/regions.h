/* regions: which policy wins where. For one model on one machine, the search (sched/search.h) is
 * run on every cell of a grid of prompt lengths x total sequences in flight, and each cell keeps
 * the winner, what it reaches and how far ahead of the best other policy it is. The grid is what
 * the what-if asks for ("which policy wins as the context grows from 512 to 32 k"); the
 * figure is drawn by exp/searchplot.c. Deterministic: the search is, and cells run in order. */
#ifndef SCHED_REGIONS_H
#define SCHED_REGIONS_H

#include "search.h"

#define REGIONS_MAX 16 /* prompt lengths, and sequence counts, per grid */

typedef struct {
    int fits;                /* 0: no configuration fits the memory (or meets the latency bound) */
    kv_policy policy;        /* the winner (fits only) */
    int gbs, nb, split;      /* its configuration; split: KVPR's l (first step when per step), else 0 */
    const char *split_how;   /* "-", "fixed", "per-step" (static string) */
    kv_percent percent;
    double value;            /* the objective, as search_cand.value (tok/s, or s per token) */
    double generation_tok_s, decode_tok_s, token_s;
    int bound;               /* kv_resource busiest during decode */
    double bound_util;
    int has_runner;          /* another policy was simulated */
    kv_policy runner;        /* the best other policy */
    double runner_value;
    double lead;             /* how many times better the winner is than the runner-up (>= 1); 0 without one */
} regions_cell;

typedef struct {
    char model[64], hw[64];
    search_objective objective;
    int gen;
    int np, ns;
    int prompts[REGIONS_MAX], seqs[REGIONS_MAX];
    regions_cell *cells;     /* np x ns, cell (ip, is) at [ip * ns + is] */
    int searches, nofit;
    double wall_s;
} regions_grid;

/* The grid: prompts 512 .. 32 k (doubling), sequences 1, 4, 16, 64, 256. */
int regions_default_prompts(const int **out);
int regions_default_seqs(const int **out);

/* Runs the search on every cell. base gives everything but prompt and sequences (objective, gen,
 * latency bound, budgets, capacities); its top is ignored (the winner and the best of each policy
 * are kept). A cell where the search answers KV_ENOFIT does not fit; any other error stops the run
 * (with the cell named in the message). Lists must be 1 .. REGIONS_MAX long, positive. */
kv_status regions_run(const kv_model *m, const hw_profile *p, const search_opts *base, const int *prompts, int np, const int *seqs,
                      int ns, regions_grid *g);
void regions_free(regions_grid *g);
static inline const regions_cell *regions_at(const regions_grid *g, int ip, int is) { return &g->cells[ip * g->ns + is]; }

/* "512", "1k", "32k": a token count as the table and the figure label it. */
void regions_fmt_tokens(char *b, size_t n, int tokens);

#endif
