/* sim_des: the discrete-event core. Tasks sit on queues (in-order streams, kv_queue) and carry
 * dependencies: a queue runs its tasks one at a time in program order, as a CUDA stream does; a
 * task starts when it heads its queue, the queue is idle and its dependencies are done. Queues that
 * copy draw on a link direction, shared flow-level: the copies in flight on one direction split its
 * bandwidth equally (max-min fair on a single constraint), and while the other direction copies
 * too, each gets the profile's duplex fraction of that. Whenever the set of copies in flight
 * changes, every in-flight copy of the touched directions is re-rated (remaining work updated
 * lazily, completion rescheduled: a queue's one pending completion replaced). A copy pays its
 * per-copy overhead first and counts as in flight from its start.
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

/* Successors kept in the task record itself: most tasks have no more, and a completion then
 * touches one record instead of a record and its scattered edges. */
#define SIM_SUCC_IN 4

typedef struct {
    /* ordered for size: 128 bytes (a streamed run's window is these records) */
    int32_t step, layer, mb;
    int32_t deps_left;
    double bytes, flops;
    double fixed_s;   /* compute: duration; copy: per-copy overhead alpha */
    double work;      /* copy: bytes / size-efficiency, moved at the link's rate */
    int32_t succ_in[SIM_SUCC_IN]; /* its first successors, in the order they were added ... */
    int32_t succ_head, succ_tail; /* ... and the rest in a list (edges) */
    int32_t crit;     /* the task whose completion let this one start (-1: none) */
    int32_t cpar, cnode; /* critical-path nodes: crit's, and its own once ended (streaming) */
    uint8_t op, queue, res; /* res: the queue's resource (kv_queue_res) */
    uint8_t rep;      /* replica (GPU) it belongs to: 0 without a host network */
    uint8_t fin;      /* has ended */
    uint8_t nsucc_in;
    uint8_t ndeps0;   /* dependencies given when it was added (met ones too; saturates at 255) */
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
/* Makes a finished whole-graph run (not streamed, one GPU) ready to run again: tasks, dependencies,
 * program order, the mark and declared regions stay; every task's dependency count becomes
 * deps[i] (as it was before the first run) and nothing has run. The caller may change the tasks'
 * costs in between (another split of the same plan) as long as tasks that were copies of each
 * other (equal costs) still are: the verified regions are kept. */
void sim_des_rewind(sim_des *d, const int32_t *deps);
/* Adds a task at the end of its queue's program order; returns its index or -1 (out of memory). */
int32_t sim_des_task(sim_des *d, kv_op op, kv_queue q, int step, int layer, int mb);
/* The same with its dependencies (earlier tasks) in one call; *out points at the new task. */
int32_t sim_des_add(sim_des *d, kv_op op, kv_queue q, int step, int layer, int mb, const int32_t *deps, int ndeps, sim_task **out);
/* n copies at once: task first + i (first, the return, is the count before) is a copy of task
 * first + i - n (kind, queue, step, micro-batch, bytes, FLOPs, costs) one layer higher, for i in
 * [0, n); those n tasks must be kept (not retired), else -1 and nothing is added (as on running out
 * of memory, when some may have been). Copy i's dependencies are the ndeps[0] ids at deps, both
 * advanced by i * stride bytes (an array of records). They must be its source's shifted by n, in
 * the same order: sim_des_periodic takes a run of such copies as periodic without checking it
 * (only the count is checked here; a copy with another count breaks the run). */
int32_t sim_des_add_copies(sim_des *d, int32_t n, const int32_t *deps, const uint8_t *ndeps, size_t stride);
/* Dependency edges from tasks at or above id are measured from now on (the longest lets
 * sim_des_periodic skip checking copies made by sim_des_add_copies; call it as a step begins). */
void sim_des_edge_floor(sim_des *d, int32_t id);
sim_task *sim_des_get(sim_des *d, int32_t id);
int32_t sim_des_count(const sim_des *d);
const sim_task *sim_des_task_at(const sim_des *d, int32_t id); /* read only; NULL if gone */
/* Every task in id order, task i at [i] (a whole graph: none has left); NULL once some have. */
const sim_task *sim_des_tasks(const sim_des *d);
kv_status sim_des_dep(sim_des *d, int32_t from, int32_t to);
/* Successors of a task (after a run that kept the whole graph); the array is valid until the
 * next call. */
const int32_t *sim_des_succ(sim_des *d, int32_t id, int32_t *n);

/* Streaming: the run advances while tasks are still being added, and a finished task leaves
 * memory once every task before it has finished too: memory follows the tasks in flight, not
 * the run. After sim_des_reset and the links, before the first task: sim_des_stream; after each
 * task (and its dependencies) sim_des_pump; at the end sim_des_run, which finishes the run.
 * Events run only for tasks `window` ids behind the newest one, so that a task's successors and
 * its queue's next task exist when it ends. Should a task come too late anyway (it would have
 * started earlier with the whole graph present), sim_des_overrun says so and the caller runs
 * again without streaming: a streamed run's timeline is always the whole graph's. Finished tasks
 * are handed to fn in id order, in stretches (then gone: sim_des_get answers NULL for them). Single GPU only
 * (no sim_des_net). */
typedef void (*sim_retire_fn)(void *ctx, const sim_task *t, int32_t n); /* tasks t[0..n), consecutive ids */
/* (a task is checked for coming late at the next sim_des_pump or sim_des_run: add its
 * dependencies before.) */
void sim_des_stream(sim_des *d, int32_t window, sim_retire_fn fn, void *ctx);
void sim_des_pump(sim_des *d);
/* Changes the window (e.g. once the caller knows how many tasks a decode step has). */
void sim_des_window(sim_des *d, int32_t window);
int sim_des_overrun(const sim_des *d);
/* The critical path after a run, from the task that ended last back along the tasks whose
 * completion let each start, as far as the first token's end t0 (t0 > 0): per kind the time on it
 * after t0, and the time it waited on nothing (0 in a consistent run). Exact integer sums, so a
 * streamed run, which folds the path's settled part as it goes, gives the whole graph's. */
void sim_des_crit_sums(const sim_des *d, sim_time t0, sim_time op[KV_OP_COUNT], sim_time *wait);
/* Critical-path nodes a streamed run had in use at most (0 with the whole graph: the tasks are
 * the nodes); bounded by the tasks in flight, not by the run's length. */
int32_t sim_des_crit_nodes(const sim_des *d);
/* End of the marked task (-1 if it has not ended). */
sim_time sim_des_mark_end(const sim_des *d);
/* The latest end of a finished task so far (0 before any): no finished task's times exceed it. */
sim_time sim_des_last_end(const sim_des *d);
void sim_des_links(sim_des *d, sim_link h2d, sim_link d2h);

/* Declares tasks [a, b) a region whose task i + Q repeats task i (a decode step's layers, Q tasks
 * each; anchor0 is a layer's first compute task), once they and their dependencies have been added
 * and before any of them runs (a streamed run: as the next step begins): it is verified at once,
 * the longest stretch that repeats is kept, and the run fast-forwards over the layers whose state
 * repeats (see des.c). The results are the full run's to the bit. Ignored with a host network, and
 * for a region whose anchors are not on the queue of the first region's anchors. */
void sim_des_periodic(sim_des *d, int32_t a, int32_t b, int32_t Q, int32_t anchor0);
/* Layers (periods of a region's Q tasks) the last run fast-forwarded over. */
uint64_t sim_des_ff_periods(const sim_des *d);
/* Replays of a streamed run that made the critical-path nodes of their first two periods only
 * (the tree they leave repeated: the later periods' share is added in one go); *refused (if not
 * NULL): those that compared the two trees and made every period's nodes, the trees differing. */
uint64_t sim_des_ff_bulk(const sim_des *d, uint64_t *refused);

/* Several GPUs on one host: every replica has its own queues; copies and CPU attention become
 * flows over a route of hops (its GPU's link direction, its switch uplink, the inter-socket link,
 * the DRAM of the socket holding its buffers, that socket's cores), shared max-min fairly
 * (progressive filling) and re-rated whenever a flow starts or ends. A flow's progress is counted
 * in its task's `work` units; on a hop marked per_byte it consumes bytes/work of capacity per unit
 * (the size efficiency slows the copy, not the wire), on others one. A GPU link hop keeps the
 * duplex coupling: its capacity is scaled by `duplex` while its `pair` (the other direction) carries
 * a flow. CPU attention tasks are flows too when a network is set: their work is the KV bytes they
 * read (fixed_s ignored). Without a network (the default) a run is the single-GPU one above,
 * byte for byte. */
#define SIM_MAX_REP 16
#define SIM_MAX_HOPS 96
#define SIM_ROUTE_MAX 6
enum { SIM_R_H2D = 0, SIM_R_D2H, SIM_R_CPU, SIM_R_COUNT };
typedef struct {
    char name[40];
    double cap;       /* per second, in work units (per_byte = 0) or bytes (per_byte = 1) */
    double duplex;    /* capacity fraction while `pair` is in use */
    int pair;         /* -1: none */
    int per_byte;
} sim_hop;
typedef struct {
    int n;
    int hop[SIM_ROUTE_MAX];
} sim_route;
typedef struct {
    int nrep, nhop;
    sim_hop hop[SIM_MAX_HOPS];
    sim_route route[SIM_MAX_REP][SIM_R_COUNT];
} sim_net;
/* Sets the network (copied; NULL: none) before adding tasks; KV_EINVAL if malformed. */
kv_status sim_des_net(sim_des *d, const sim_net *net);
/* Tasks added from now on belong to replica r (0 .. nrep - 1). */
void sim_des_replica(sim_des *d, int r);
/* After a run with a network: hop i's time with at least one flow, time saturated (its capacity
 * bound some flow's rate), and bytes carried. */
void sim_des_hop_stats(const sim_des *d, int i, double *busy_s, double *sat_s, double *bytes);

typedef struct {
    sim_time makespan;
    uint64_t events;
    sim_time busy[KV_RES_COUNT]; /* a link is busy while at least one copy is in flight on it */
    sim_time busy_at_mark[KV_RES_COUNT]; /* busy time when the marked task ended (0 without a mark) */
    int32_t last; /* task that ended last */
} sim_des_stats;

/* Snapshot the busy times when task `id` ends (e.g. the first token), so that utilisation can be
 * given for what follows; -1 for none. The marked task must end with its resource idle. */
void sim_des_mark(sim_des *d, int32_t id);

/* Runs to completion. KV_EINVAL if a dependency cycle leaves tasks unrun, or a duration is not a
 * finite time that fits the clock. (GPU memory is the graph layout's, checked before a run.) */
kv_status sim_des_run(sim_des *d, sim_des_stats *st);

/* Longest duration the clock accepts: 1e18 s (the 128-bit femtosecond clock holds 1.7e23 s). */
#define SIM_MAX_S 1e18
static inline int sim_time_ok(double s) { return s >= 0 && s <= SIM_MAX_S; }
/* Only for values that passed sim_time_ok (the conversion of anything else is undefined). */
/* Both conversions take the 64-bit path when the value fits (9.2e3 s): the same result as the
 * 128-bit conversion (truncation of the same double; rounding of the same integer), without the
 * library calls that were a tenth of a sweep. */
static inline sim_time sim_from_s(double s) {
    double x = s * SIM_FS_PER_S + 0.5;
    return x < 9.2e18 ? (sim_time)(int64_t)x : (sim_time)x;
}
static inline double sim_to_s(sim_time t) {
    return (t >= INT64_MIN && t <= INT64_MAX ? (double)(int64_t)t : (double)t) / SIM_FS_PER_S;
}

#endif
