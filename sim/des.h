/* sim_des: the discrete-event core. Tasks occupy one resource each and carry dependencies;
 * each resource runs its tasks one at a time in program order (as a CUDA stream or a copy
 * engine does): a task starts when it is at the head of its resource, the resource is free,
 * and its dependencies are done. Copies on the two link directions slow each other down while
 * both run (flow-level: an in-flight copy is re-rated when the other direction starts or stops).
 * Time is integer femtoseconds in 128 bits: exact enough that the paper-model check holds to
 * 1e-9, and no overflow however long the generation. */
#ifndef SIM_DES_H
#define SIM_DES_H

#include <stdint.h>
#include "../core/kv_err.h"
#include "../core/plan.h"

typedef __int128 sim_time; /* femtoseconds */
#define SIM_FS_PER_S 1e15
#define SIM_FS_PER_PS 1000

typedef struct {
    uint8_t op, res;
    int32_t step, layer, mb;
    double bytes, flops;
    double fixed_s;   /* compute: duration; copy: per-copy overhead alpha */
    double work;      /* copy: bytes / size-efficiency, moved at the link's rate */
    double mem_alloc; /* bytes allocated on the GPU when the task starts */
    double mem_free;  /* bytes released when the task ends */
    int32_t deps_left, succ_off, nsucc;
    int32_t crit;     /* the task whose completion let this one start (-1: none) */
    sim_time start, end;
} sim_task;

typedef struct {
    double rate;      /* bytes/s alone */
    double duplex;    /* fraction of rate while the other direction copies */
} sim_link;

typedef struct sim_des sim_des;

sim_des *sim_des_new(void);
void sim_des_free(sim_des *d);
/* Forget all tasks, keep the memory: one context serves a whole sweep without allocating. */
void sim_des_reset(sim_des *d);
/* Adds a task at the end of its resource's program order; returns its index or -1 (out of memory). */
int32_t sim_des_task(sim_des *d, kv_op op, kv_resource res, int step, int layer, int mb);
sim_task *sim_des_get(sim_des *d, int32_t id);
int32_t sim_des_count(const sim_des *d);
kv_status sim_des_dep(sim_des *d, int32_t from, int32_t to);
/* Successors of a task (valid after sim_des_run). */
const int32_t *sim_des_succ(const sim_des *d, int32_t id, int32_t *n);
void sim_des_links(sim_des *d, sim_link h2d, sim_link d2h);
/* GPU memory: capacity and what is resident before the first task (weights, caches). */
void sim_des_memory(sim_des *d, double capacity, double resident);

typedef struct {
    sim_time makespan;
    uint64_t events;
    double mem_peak;
    sim_time busy[KV_RES_COUNT];
    int32_t last; /* task that ended last */
} sim_des_stats;

/* Runs to completion. KV_ENOFIT (with a message naming the task) when memory runs out;
 * KV_EINVAL if a dependency cycle leaves tasks unrun. */
kv_status sim_des_run(sim_des *d, sim_des_stats *st);

static inline sim_time sim_from_s(double s) { return (sim_time)(s * SIM_FS_PER_S + 0.5); }
static inline double sim_to_s(sim_time t) { return (double)t / SIM_FS_PER_S; }

#endif
