/* sim_multi: N data-parallel replicas, each running the same plan on its own GPU, on one simulated
 * host (hwmodel/topo.h). All replicas' tasks run in one discrete-event run: copies cross their
 * GPU's link, their switch uplink, the inter-socket link when their buffers are on the far socket
 * and that socket's DRAM; CPU attention uses its socket's cores and DRAM; every hop is shared max-min
 * fairly (sim/des.h). Reports per-GPU and aggregate decode throughput and which hop bounds it. */
#ifndef SIM_MULTI_H
#define SIM_MULTI_H

#include "../hwmodel/topo.h"
#include "sim.h"

typedef struct {
    char name[40];
    double cap;      /* bytes/s (GPU links: work units at the plateau, i.e. bytes/s for large copies) */
    double busy_s;   /* decode+prefill time with at least one flow on it */
    double sat_s;    /* time its capacity bound some flow */
    double bytes;    /* carried */
} sim_hop_report;

typedef struct {
    int n;                               /* replicas */
    double prefill_s;                    /* slowest replica's time to its first token */
    double decode_s;                     /* slowest replica's decode time */
    double rep_decode_s[HW_TOPO_MAX_GPUS];
    double rep_tok_s[HW_TOPO_MAX_GPUS];  /* per GPU: sequences x (gen - 1) / its decode time */
    double aggregate_tok_s;              /* the sum over GPUs */
    double gpu_util;                     /* mean GPU busy share of decode time */
    int nhop;
    sim_hop_report hop[SIM_MAX_HOPS];
    int bottleneck;                      /* hop saturated longest; -1: the GPUs computed longer than any hop was
                                          * saturated. A share well below 1 means the replicas wait on their
                                          * own chain of dependent ops, of which this is the largest part */
    double bottleneck_share;             /* the larger of the two shares of the run */
    uint64_t events;
    int32_t tasks;
    int split;                           /* the plan's split at the first decode step */
} sim_multi_result;

/* Runs n replicas of plan pl (profile p on every GPU) on topology t (n <= t->ngpus). */
kv_status sim_multi_run(sim_ctx *s, const kv_model *m, const hw_profile *p, const hw_topo *t, int n, const kv_plan *pl,
                        sim_multi_result *out);
/* One JSON object (malloc'ed): aggregate_tok_s, per_gpu_tok_s, bottleneck, hops. */
char *sim_multi_json(const sim_multi_result *r, const kv_model *m, const hw_topo *t, const kv_plan *pl);
/* The bottleneck's name: a hop or "gpu compute". */
const char *sim_multi_bottleneck(const sim_multi_result *r);

#endif
