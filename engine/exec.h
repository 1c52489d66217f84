/* eng_exec: runs a decode plan on a backend: a layer stack of the model's real shapes with random
 * fp16 weights, a KV cache and stored activations in pinned host memory filled as a prefill would
 * fill them (K/V computed from the stored activations with the same weights, so recomputation is
 * checkable), then the decode steps of the plan with an event around every op. The timeline uses
 * the simulator's op names, so measured and simulated runs join on (step, layer, mb, op). */
#ifndef ENG_EXEC_H
#define ENG_EXEC_H

#include "../core/db.h"
#include "../core/plan.h"
#include "backend.h"

typedef struct {
    int nspans;
    kv_span *spans;     /* op and resource names are static strings */
    double decode_s;    /* first op start to last op end */
    char device[256];
    int nhidden;
    float *hidden;      /* final hidden state of every sequence, [nb*B][h] */
    float *attn;        /* attention output of the last layer of the last step, micro-batch 0, [B][nh*d] */
    double dev_bytes, host_bytes; /* what the plan allocated */
} eng_result;

/* Bytes of device and of (pinned) host memory the plan needs; checked before anything is allocated. */
void eng_plan_bytes(const kv_model *m, const kv_plan *pl, double *dev, double *host);
kv_status eng_run(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *pl, uint64_t seed, eng_result *r);
void eng_result_free(eng_result *r);
/* One engine run into the database: spans and metrics, one transaction. */
kv_status eng_write_db(kv_db *db, const eng_result *r, const kv_model *m, const char *hw_label, const kv_plan *pl,
                       const char *run_key);

#endif
