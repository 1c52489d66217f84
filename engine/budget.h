/* eng_budget: predicted wall time of kvpr-engine commands on a profile (engine/budget.c). */
#ifndef ENG_BUDGET_H
#define ENG_BUDGET_H

#include "../core/plan.h"
#include "../hwmodel/profile.h"

/* The fixed costs the predictions assume. */
typedef struct {
    double start_s;   /* process start, CUDA context and cuBLAS handle, module load */
    double pin_bps;   /* pinning large host buffers (cudaHostAlloc) */
    double copy_bps;  /* the set-up's threaded replication of one filled cache into the others */
    double db_span_s; /* one span row written to the results database */
} eng_budget_rates;
extern const eng_budget_rates eng_budget;

/* One `kvpr-engine run` process over plans sharing a set-up: its set-up and its whole time. */
kv_status eng_budget_run(const kv_model *m, const kv_plan *plans, int n, const hw_profile *p, double *setup_s, double *total_s);

#endif
