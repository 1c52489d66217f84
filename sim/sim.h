/* sim: runs a decode plan on a model of the machine: expands the plan into tasks (policies x
 * modes), runs the discrete-event core, and reports latency, throughput, utilisation, the time
 * breakdown and the critical path; exports a Chrome trace and a run in results.db. */
#ifndef SIM_H
#define SIM_H

#include "../core/db.h"
#include "../core/plan.h"
#include "../hwmodel/profile.h"
#include "des.h"

typedef struct {
    double decode_s;          /* total decode time */
    double throughput;        /* prompts * (gen - 1) / decode_s, tokens/s */
    int nsteps;
    double *step_s;           /* per decode step latency (owned by the sim context) */
    double util[KV_RES_COUNT];
    double op_s[KV_OP_COUNT]; /* busy time per op kind */
    double gpu_idle_s;
    double crit_s[KV_OP_COUNT]; /* time on the critical path per op kind */
    double crit_wait_s;         /* critical-path time spent waiting on nothing (should be 0) */
    double mem_peak;            /* GPU bytes */
    double cpu_mem;             /* CPU bytes for KV, stored activations (and weights) */
    uint64_t events;
    int32_t tasks;
    int split0, split_last;     /* split used at the first and last decode step */
} sim_result;

typedef struct sim_ctx sim_ctx;

sim_ctx *sim_new(void);
void sim_free(sim_ctx *s);
/* Runs one plan; the context keeps the timeline until the next run. */
kv_status sim_run(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *plan, sim_result *out);
/* The tasks of the last run (for tests and exporters). */
sim_des *sim_last_des(sim_ctx *s);
kv_status sim_write_trace(sim_ctx *s, const char *path);
/* Writes the last run with its metrics (and all its spans if `spans`) as one transaction. */
kv_status sim_write_db(sim_ctx *s, kv_db *db, const kv_model *m, const hw_profile *p, const kv_plan *plan,
                       const sim_result *r, const char *run_key, int spans, int64_t *run_id);
char *sim_result_json(const sim_result *r, const kv_model *m, const hw_profile *p, const kv_plan *plan);

#endif
