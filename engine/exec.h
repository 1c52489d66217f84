/* eng_exec: runs plans on a backend: a layer stack of the model's real shapes with random fp16
 * weights, the prompt pass (or, with no_prefill, a cache filled as a prefill would fill it: K/V
 * computed from stored activations with the same weights, so recomputation is checkable), then
 * the decode steps, executing the op graph the simulator times (sched/graph.h) with an event pair
 * around every op. Spans join the simulator's on (step, layer, mb, op); step -1 is the prompt.
 * A session sets the host side up once for several plans that differ only in policy and split
 * (pinning and filling tens of GB costs more than the runs), and every plan starts from the same
 * data, so their outputs compare. */
#ifndef ENG_EXEC_H
#define ENG_EXEC_H

#include "../core/db.h"
#include "../core/plan.h"
#include "backend.h"

/* An executed op's keys, in execution order (equal to the builder's graph: tested). */
typedef struct {
    int op, queue, step, layer, mb;
} eng_op_key;

typedef struct {
    int nspans;
    kv_span *spans;     /* op and resource names are static strings */
    eng_op_key *ops;    /* [nspans] */
    double prefill_s;   /* first op start to the prompt pass's last LM head (0 without prefill) */
    double decode_s;    /* from there to the last op's end */
    char device[256];
    int nhidden;
    float *hidden;      /* final hidden state of every sequence, [nb*B][h] */
    float *attn;        /* attention output of the last layer of the last step, micro-batch 0, [B][nh*d] */
    double dev_bytes, host_bytes; /* what the plan allocated */
    double setup_s;     /* the session's set-up (eng_run only: a session's is eng_session_setup_s) */
    double warm_s;      /* the untimed warm-up step (host clock) */
} eng_result;

/* Bytes of device and of (pinned) host memory the plan needs; checked before anything is allocated,
 * with the host backend's device buffers counted as host memory, against MemAvailable and cgroup
 * limits (engine/sysmem.h). */
void eng_plan_bytes(const kv_model *m, const kv_plan *pl, double *dev, double *host);

typedef struct eng_session eng_session;
/* Set-up for plans that share model, mode, batch, nb, prompt, gen, layers, prefetch, keep_act,
 * pageable, no_prefill and placement (the gpu policy may join any): checks every plan and its
 * memory, opens the backend, pins and fills the host side. */
kv_status eng_session_open(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *plans, int nplans, uint64_t seed,
                           eng_session **out);
/* Runs one plan with the session's shapes (policy and split free): device buffers, one untimed
 * warm-up decode step, the timed graph (prompt pass and decode steps), the outputs. */
kv_status eng_session_run(eng_session *s, const kv_plan *pl, eng_result *r);
void eng_session_close(eng_session *s);
const char *eng_session_device(const eng_session *s);
double eng_session_setup_s(const eng_session *s);
/* One plan: open, run, close. */
kv_status eng_run(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *pl, uint64_t seed, eng_result *r);
void eng_result_free(eng_result *r);
/* One engine run into the database: spans and metrics, one transaction. */
kv_status eng_write_db(kv_db *db, const eng_result *r, const kv_model *m, const char *hw_label, const kv_plan *pl,
                       const char *run_key);

#endif
