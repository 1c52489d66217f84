/* exp_compare: simulated against measured engine runs. */
#ifndef EXP_COMPARE_H
#define EXP_COMPARE_H

#include <stdio.h>
#include "../core/db.h"
#include "../core/plan.h"
#include "exp.h"

typedef struct {
    int n;
    double mape, median, p90, max, bias; /* of (simulated - measured) / measured */
} exp_cmp_stat;

typedef struct {
    int runs, joined, missing;
    exp_cmp_stat op[KV_OP_COUNT];
    exp_cmp_stat step;
} exp_cmp;

/* sel: "all" or a comma-separated list of engine run ids. Writes the re-simulated runs (keys
 * compare/ID/PROFILE) with their errors into db, figures into dir (if not NULL), tables to out. */
kv_status exp_compare(kv_db *db, const char *sel, const hw_profile *p, const char *dir, FILE *out, exp_cmp *res);

#endif
