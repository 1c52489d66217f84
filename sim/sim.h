/* sim: runs a plan on a model of the machine: times the op graph of sched/graph.h (the same graph
 * the engine executes) with the hardware model, runs the discrete-event core, and reports time to
 * first token, decode latency and throughput, utilisation, the time breakdown and the critical
 * path; exports a Chrome trace and a run in results.db. Costs come from the calibrated hardware
 * model, or from the paper's formula (--paper-model: a cost type, not another graph). */
#ifndef SIM_H
#define SIM_H

#include "../core/db.h"
#include "../core/plan.h"
#include "../hwmodel/profile.h"
#include "des.h"

#include "../sched/graph.h"

typedef struct {
    double prefill_s;         /* the prompt pass: time to the first token of every sequence (0: no prefill) */
    double decode_s;          /* total decode time, from the first token to the end */
    double throughput;        /* decode_tok_s (kept for existing queries) */
    double decode_tok_s;      /* sequences * (gen - 1) / decode_s */
    double generation_tok_s;  /* sequences * gen / (prefill_s + decode_s), FlexGen's generation throughput */
    double prefill_op_s[KV_OP_COUNT]; /* busy time per op kind in the prompt pass */
    kv_layout layout;         /* placement and memory of the run */
    int nsteps;
    double *step_s;           /* per decode step latency (owned by the sim context) */
    double util[KV_RES_COUNT];
    double op_s[KV_OP_COUNT]; /* busy time per op kind */
    double gpu_idle_s;
    double crit_s[KV_OP_COUNT]; /* time on the critical path per op kind */
    double crit_wait_s;         /* critical-path time spent waiting on nothing (should be 0) */
    double mem_peak;            /* GPU bytes: the layout's buffers */
    double cpu_mem;             /* CPU bytes: KV, stored activations, weights, hidden states */
    uint64_t events;
    int32_t tasks;
    int split0, split_last;     /* split used at the first and last decode step */
} sim_result;

typedef struct sim_ctx sim_ctx;

sim_ctx *sim_new(void);
void sim_free(sim_ctx *s);
/* Streaming (sweeps, long runs): runs generate their op graph as the simulation advances and keep only the
 * tasks in flight (sim/des.h), so memory follows the window, not the run; results are the same
 * to the bit. The timeline is then not kept: no sim_last_des tasks, traces or spans (leave it off
 * for those). window 0: the default (a few decode steps' tasks). */
enum { SIM_STREAM_OFF = 0, SIM_STREAM_LARGE = 1, SIM_STREAM_ALWAYS = 2 };
/* mode LARGE streams only runs of more than about SIM_STREAM_MIN_TASKS tasks (a short run's
 * whole graph fits in cache, and streaming costs it a few percent); ALWAYS streams every run. */
#define SIM_STREAM_MIN_TASKS 262144
void sim_stream(sim_ctx *s, int mode, int32_t window);
/* Streamed runs that found a task too late and ran again with the whole graph (should be 0). */
uint64_t sim_stream_reruns(const sim_ctx *s);
/* Runs one plan; the context keeps the timeline until the next run (unless streaming). A run that
 * keeps its whole graph also keeps it for the next: the same plan at another split strictly
 * between 0 and the prompt (or the same split) then re-costs the split-dependent ops instead of
 * building the graph again, with the same result to the bit. */
kv_status sim_run(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *plan, sim_result *out);
/* Adds the plan's timed tasks to d (for the replica d is adding to: sim/multi.c); *first_token is
 * the prompt pass's last task (-1 without one). */
kv_status sim_build(sim_des *d, const kv_model *m, const hw_profile *p, const kv_plan *pl, const kv_layout *ly, int32_t *first_token);
/* The tasks of the last run (for tests and exporters); the caller may change them, so the kept
 * graph is forgotten. */
sim_des *sim_last_des(sim_ctx *s);
/* The same tasks, read only (the kept graph stays). */
const sim_des *sim_graph_des(const sim_ctx *s);
/* Runs that re-costed a kept graph instead of building one. */
uint64_t sim_graph_reuses(const sim_ctx *s);
/* Chrome trace (Perfetto, chrome://tracing) of the last run's steps step0..step1 (-1: the prompt
 * pass), written whole or not at all; title names the run. */
kv_status sim_write_trace(sim_ctx *s, const char *path, const char *title, int step0, int step1);
/* Writes the last run with its metrics (and all its spans if `spans`) as one transaction. */
kv_status sim_write_db(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *plan,
                       const sim_result *r, const char *run_key, int spans, int64_t *run_id);
/* The same with the scheduler that chose the split (runs.scheduler; NULL: from an experiment's run key). */
kv_status sim_write_db_sched(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *plan,
                       const sim_result *r, const char *run_key, int spans, int64_t *run_id,
                             const char *sched);
/* A lower bound on the plan's decode_s (sim_run's), from its op graph without a run: each queue's
 * work that must follow the first token, done one op at a time, and each link direction's at its
 * full rate. Costs a tenth of a run or less. */
kv_status sim_decode_bound(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *pl, double *lb);
/* The bound of every split l = 0..lmax (lb[l]), from three graphs instead of lmax + 1: the splits
 * strictly between 0 and the prompt have the same ops, and only the split-dependent ones are
 * re-costed (equal to sim_decode_bound's up to rounding, far inside its margin). */
kv_status sim_decode_bounds(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax, double *lb);
/* The fastest split l in 0..lmax (its decode_s; the smallest l among equals), exactly as a run of
 * every split would find it, by branch and bound: splits are run in order of their bound, and the
 * search stops once the next bound exceeds the best time. ts[l] is the decode time of the splits
 * that ran (NAN for the others), lb[l] every split's bound; *nsim counts runs. */
kv_status sim_best_split(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax, double *ts, double *lb,
                         int *best_l, double *best_s, int *nsim);
char *sim_result_json(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *plan);

#endif
