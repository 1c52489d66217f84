/* sim_des: pending completions, in-order queues, links shared by their copies, duplex coupling. */
#include "des.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sim_time t;
    uint64_t seq; /* insertion order breaks ties: deterministic runs */
    int32_t task;
} sim_event;

typedef struct {
    int32_t *seq; /* program order */
    int32_t n, cap, head;
    int32_t running; /* -1 when idle */
} sim_queue;

/* One copy in flight on a link direction. */
typedef struct {
    int32_t task;
    double rem, rate; /* work left (bytes at the link's rate), current rate */
    sim_time upd;     /* time rem refers to (the end of the overhead while it is being paid) */
} sim_flow;

typedef struct {
    sim_flow f[KV_Q_COUNT]; /* at most one copy per queue */
    int n;
    sim_time since; /* start of the current busy period */
} sim_dir;

/* A flow of the host network (copies and CPU attention of every replica). */
typedef struct {
    int32_t task;
    double rem, rate;
    sim_time upd;
    const sim_route *route;
    double coef; /* capacity per work unit on per_byte hops */
} sim_mflow;

/* The host network, allocated on first use and kept across resets. */
typedef struct {
    sim_net net;
    sim_mflow f[SIM_MAX_REP * KV_Q_COUNT];
    int nf;
    int nact[SIM_MAX_HOPS];
    uint8_t sat[SIM_MAX_HOPS];
    sim_time since[SIM_MAX_HOPS], busy[SIM_MAX_HOPS], sat_t[SIM_MAX_HOPS], last;
    double bytes[SIM_MAX_HOPS];
} sim_netstate;

/* A successor edge: the lists keep insertion order (the order successors are released in). */
typedef struct {
    int32_t to, next;
} sim_edge;

/* A region of tasks [a, b) whose task i + Q is task i's copy (kind, queue, cost, dependency
 * count, successors shifted by Q); anchors are the tasks anchor0 + m Q. */
typedef struct {
    int32_t a, b, Q, anchor0;
} sim_region;

/* A task's start or end, as the fast-forward log keeps them. */
typedef struct {
    sim_time t;
    int32_t id, why;
    uint8_t end;
    uint8_t qi;   /* a start's queue */
    uint8_t need; /* an end's node is needed (a streamed replay's scratch) */
} sim_tr;

/* A finished task as the critical path needs it. A node lives while a task that it let start is
 * still running or a node refers to it (or it is the task that ended last), so a streamed run
 * keeps the chains that can still be the critical path, not the whole run; and the part of them
 * every chain shares, which will be on the path whatever ends last, is folded into sums (crit_fold),
 * so that what is kept is bounded by the tasks in flight, not by the length of the run. */
typedef struct {
    sim_time start, end;
    int32_t parent, refs; /* parent: node of the task that let this one start (-1: none; CN_FOLDED) */
    uint32_t serial;      /* creation order (a parent's is older), modulo 2^32 */
    uint8_t op;
} sim_cnode;
#define CN_FOLDED INT32_MIN /* the parent was folded into the sums (its end: cf_end) */
#define CF_FIRST 256        /* nodes in use before the first fold */

struct sim_des {
    sim_task *t;      /* a ring: task id i is t[i & tmask]; ids [off, n) are kept (off > 0 only while streaming) */
    int32_t n, cap, off, tmask;
    sim_edge *e;      /* successor lists; free list through next (streaming frees them) */
    int32_t ne, ecap, efree;
    int32_t *scratch; /* sim_des_succ's answer */
    int32_t scap;
    sim_cnode *cn;
    int32_t ncn, cncap, cnfree;
    int32_t cnlive, cf_next; /* nodes in use; crit_fold runs again once they reach cf_next */
    uint32_t cserial;        /* the last node's serial */
    /* the critical path's folded part (crit_fold): its sums in task-time units, and its newest end */
    sim_time cf_op[KV_OP_COUNT], cf_wait, cf_end;
    /* streaming (sim_des_stream): events run while tasks are still being added */
    int stream, started, overrun;
    int32_t window, base; /* base: tasks below it are retired */
    int32_t checked;      /* tasks below it were checked for coming late */
    sim_retire_fn retire;
    void *retire_ctx;
    /* run state (kept here: a streamed run spans many calls) */
    sim_des_stats st;
    int32_t bad, done, last_node;
    int nomem;
    sim_time now, last_end, mark_end;
    int nq;      /* queues in use: KV_Q_COUNT per replica */
    int rep;     /* replica of the tasks being added */
    sim_netstate *ns; /* NULL or unused (has_net 0): one GPU, the links below */
    int has_net;
    sim_dir dir[2];
    sim_link link[2];
    /* pending completions: one per queue at most (push); evmask says which queues hold one */
    sim_event ev[SIM_MAX_REP * KV_Q_COUNT];
    uint64_t evmask[2];
    uint64_t seq;
    int32_t mark;
    /* fast-forward over periodic regions (sim_des_periodic) */
    sim_region *rg;       /* verified regions, in task order */
    int32_t nrg, rgcap, rgi;
    int32_t ff_cursor;    /* the first anchor not yet started (INT32_MAX: none known) */
    int ff_aq;            /* the queue every anchor is on */
    int ff_on;
    int32_t lo;           /* every task below it has finished */
    int32_t ff_hi;        /* highest task id started */
    int32_t ff_anchor;    /* an anchor started during the event being run (-1: none) */
    int32_t ff_prev;      /* anchor of the last checkpoint (-1: none) */
    /* the checkpoint before it (a state may repeat every two layers, e.g. two weight buffers):
     * its anchor, events, busy times and time; the log keeps the entries since it, those since the
     * last checkpoint from log_mid on */
    int32_t ff_prev2, log0, log_mid; /* the log's entries since it: [log0, nlog) */
    int ff_logbad2;
    uint64_t ff_ev02;
    sim_time ff_busy02[KV_RES_COUNT], ff_t02;
    int64_t *sig[3];      /* signatures: the last checkpoint's, the current one, the one before the last */
    int32_t nsig[3], sigcap[3];
    sim_tr *log;          /* transitions: since the checkpoint before the last from log0, since the last from log_mid */
    int32_t nlog, logcap;
    int ff_logbad;        /* the log could not keep up (out of memory): no fast-forward from it */
    uint64_t ff_ev0;
    sim_time ff_busy0[KV_RES_COUNT], ff_t0;
    uint64_t ff_periods;  /* periods fast-forwarded in the run */
    uint64_t ff_bulk;     /* replays of a streamed run whose later periods made no nodes */
    uint64_t ff_bulk_no;  /* ... and those that compared two trees and found them different */
    uint8_t *ff_need;     /* a streamed replay's scratch: residues mod Q some start names as its cause */
    int32_t ff_needcap;
    /* ... and its critical-path trees at the ends of its first two periods (crit_tree) */
    sim_cnode *ct[2];
    int32_t *ct_id[2], *ct_fr[2];
    int ff_broken;        /* a replay found the queues not as the region promised (a bug): the run fails */
    /* copies (sim_des_add_copies): the last run [cl_a, cl_b) of consecutive tasks each the copy of the
     * task cl_q before it, and the longest dependency edge from a task at or above efloor */
    int32_t cl_a, cl_b, cl_q, efloor, elen;
    sim_queue q[SIM_MAX_REP * KV_Q_COUNT]; /* last: one GPU uses the first KV_Q_COUNT */
};

static int grow(void **p, int32_t *cap, int32_t need, size_t elem) {
    if (need <= *cap) return 0;
    int32_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

_Static_assert(sizeof(sim_task) == 128, "a task record stays 128 bytes");
#define TK(d, id) (&(d)->t[(id) & (d)->tmask])

/* Stores a time as two 64-bit halves where it was computed in general registers: GCC otherwise
 * passes such a value through the stack into a vector register, and the 16-byte load spanning the
 * two 8-byte spills cannot be forwarded from them (it waits for both stores to complete: a tenth
 * of a streamed run's time went to one such store). */
static inline void time_set(sim_time *p, sim_time v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t lo = (uint64_t)v, hi = (uint64_t)((unsigned __int128)v >> 64);
    memcpy(p, &lo, sizeof lo);
    memcpy((char *)p + sizeof lo, &hi, sizeof hi);
#else
    *p = v;
#endif
}

/* ... and loads one as two halves, for the same reason (a 16-byte load into a vector register,
 * moved to general registers through the stack). */
static inline sim_time time_get(const sim_time *p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t lo, hi;
    memcpy(&lo, p, sizeof lo);
    memcpy(&hi, (const char *)p + sizeof lo, sizeof hi);
    return (sim_time)(((unsigned __int128)hi << 64) | lo);
#else
    return *p;
#endif
}

/* A critical-path node, field by field (a compound literal is built the same way). */
static inline void cnode_set(sim_cnode *c, sim_time start, sim_time end, int32_t parent, uint32_t serial, uint8_t op) {
    time_set(&c->start, start), time_set(&c->end, end);
    c->parent = parent, c->refs = 0, c->serial = serial, c->op = op;
}

/* Room for `more` more tasks in the ring (a power of two at least the tasks kept): the kept ids move
 * to their places under the larger mask. A streamed run's retired tasks leave the ring by
 * advancing off, so nothing is moved while it runs (a whole graph has off 0: the ring is an
 * array). */
static int grow_tasks(sim_des *d, int32_t more) {
    int32_t need = d->n - d->off + more;
    if (need <= d->cap) return 0;
    /* from 1024 records (128 KB, what a streamed run usually needs): growing there by doubling
     * copied into fresh pages, and a first touch of a page costs microseconds on a virtual machine */
    int32_t nc = d->cap ? d->cap : 1024;
    while (nc < need) {
        if (nc >= (1 << 30)) return -1;
        nc *= 2;
    }
    if (d->off == 0) { /* nothing has left: every id is its own index, under any mask */
        sim_task *t = realloc(d->t, (size_t)nc * sizeof *t);
        if (!t) return -1;
        d->t = t, d->cap = nc, d->tmask = nc - 1;
        return 0;
    }
    sim_task *t = malloc((size_t)nc * sizeof *t);
    if (!t) return -1;
    for (int32_t i = d->off; i < d->n;) {
        /* the longest stretch contiguous in both rings */
        int32_t a = i & d->tmask, b = i & (nc - 1), len = d->n - i;
        if (len > d->cap - a) len = d->cap - a;
        if (len > nc - b) len = nc - b;
        memcpy(t + b, d->t + a, (size_t)len * sizeof *t);
        i += len;
    }
    free(d->t);
    d->t = t, d->cap = nc, d->tmask = nc - 1;
    return 0;
}

/* Streaming: drop started tasks from the front of a queue's program order, once they are at
 * least half of it (amortised O(1)); early, so that the arrays stay a few pages. */
static inline void compact(sim_queue *r) {
    if (r->head >= 256 && r->head >= r->n - r->head) {
        memmove(r->seq, r->seq + r->head, (size_t)(r->n - r->head) * sizeof *r->seq);
        r->n -= r->head, r->head = 0;
    }
}

sim_des *sim_des_new(void) {
    sim_des *d = calloc(1, sizeof *d);
    if (d) sim_des_reset(d);
    return d;
}

void sim_des_free(sim_des *d) {
    if (!d) return;
    free(d->t);
    free(d->e);
    free(d->scratch);
    free(d->cn);
    free(d->ns);
    free(d->rg);
    free(d->sig[0]), free(d->sig[1]), free(d->sig[2]);
    free(d->log);
    free(d->ff_need);
    for (int i = 0; i < 2; i++) free(d->ct[i]), free(d->ct_id[i]), free(d->ct_fr[i]);
    for (int i = 0; i < SIM_MAX_REP * KV_Q_COUNT; i++) free(d->q[i].seq);
    free(d);
}

void sim_des_reset(sim_des *d) {
    d->n = d->ne = 0;
    d->evmask[0] = d->evmask[1] = 0;
    d->off = 0, d->efree = -1;
    d->ncn = 0, d->cnfree = -1, d->cnlive = 0, d->cf_next = CF_FIRST, d->cserial = 0;
    memset(d->cf_op, 0, sizeof d->cf_op), d->cf_wait = d->cf_end = 0;
    d->stream = d->started = d->overrun = 0;
    d->base = 0, d->retire = NULL, d->checked = 0;
    d->bad = -1, d->done = 0, d->last_node = -1, d->nomem = 0;
    d->now = d->last_end = 0, d->mark_end = -1;
    memset(&d->st, 0, sizeof d->st);
    d->st.last = -1;
    d->seq = 0;
    for (int i = 0; i < KV_Q_COUNT; i++) d->q[i].n = d->q[i].head = 0, d->q[i].running = -1;
    d->nq = KV_Q_COUNT;
    d->rep = 0;
    d->has_net = 0;
    d->dir[0].n = d->dir[1].n = 0;
    d->link[0] = d->link[1] = (sim_link){1, 1};
    d->mark = -1;
    d->nrg = 0, d->rgi = 0, d->ff_cursor = INT32_MAX, d->ff_on = 0, d->lo = 0, d->ff_hi = -1, d->ff_anchor = d->ff_prev = -1;
    d->nlog = 0, d->ff_logbad = 0, d->ff_periods = d->ff_bulk = d->ff_bulk_no = 0, d->ff_broken = 0, d->ff_prev2 = -1, d->log0 = d->log_mid = 0;
    d->cl_a = d->cl_b = d->cl_q = 0, d->efloor = 0, d->elen = 0;
}

void sim_des_rewind(sim_des *d, const int32_t *deps) {
    d->evmask[0] = d->evmask[1] = 0, d->seq = 0;
    d->started = d->overrun = 0, d->checked = 0, d->base = 0;
    d->bad = -1, d->done = 0, d->last_node = -1, d->nomem = 0;
    d->now = d->last_end = 0, d->mark_end = -1;
    memset(&d->st, 0, sizeof d->st);
    d->st.last = -1;
    for (int i = 0; i < d->nq; i++) d->q[i].head = 0, d->q[i].running = -1;
    d->dir[0].n = d->dir[1].n = 0;
    d->ncn = 0, d->cnfree = -1, d->cnlive = 0, d->cf_next = CF_FIRST, d->cserial = 0;
    memset(d->cf_op, 0, sizeof d->cf_op), d->cf_wait = d->cf_end = 0;
    d->rgi = 0, d->ff_on = 0, d->lo = 0, d->ff_hi = -1, d->ff_anchor = d->ff_prev = -1;
    d->nlog = 0, d->ff_logbad = 0, d->ff_periods = d->ff_bulk = d->ff_bulk_no = 0, d->ff_broken = 0, d->ff_prev2 = -1, d->log0 = d->log_mid = 0;
    for (int32_t i = 0; i < d->n; i++) {
        sim_task *t = TK(d, i);
        t->deps_left = deps[i];
        t->start = t->end = -1;
        t->fin = 0;
        t->crit = t->cpar = t->cnode = -1;
    }
}

void sim_des_mark(sim_des *d, int32_t id) { d->mark = id; }

/* Room for task d->n at the end of queue r's program order (its record not yet written); NULL
 * when out of memory. */
static inline sim_task *task_room(sim_des *d, sim_queue *r) {
    if (d->stream) compact(r);
    if ((d->n - d->off >= d->cap && grow_tasks(d, 1)) || (r->n >= r->cap && grow((void **)&r->seq, &r->cap, r->n + 1, sizeof *r->seq)))
        return NULL;
    return TK(d, d->n);
}

/* What running and dependencies set, as a new task has it (every field by hand: a memset of the
 * whole record was a tenth of a sweep's time). */
static inline void task_fresh(sim_task *t) {
    t->deps_left = 0;
    t->succ_head = t->succ_tail = -1;
    t->nsucc_in = 0, t->ndeps0 = 0;
    t->crit = t->cpar = t->cnode = -1;
    t->fin = 0;
    t->start = t->end = -1;
}

/* The task written at task_room joins its queue; its id. */
static inline int32_t task_commit(sim_des *d, sim_queue *r) {
    r->seq[r->n++] = d->n;
    return d->n++;
}

int32_t sim_des_task(sim_des *d, kv_op op, kv_queue queue, int step, int layer, int mb) {
    if ((unsigned)queue >= KV_Q_COUNT) return -1;
    sim_queue *r = &d->q[d->rep * KV_Q_COUNT + queue];
    sim_task *t = task_room(d, r);
    if (!t) return -1;
    task_fresh(t);
    t->bytes = t->flops = t->fixed_s = t->work = 0;
    t->op = (uint8_t)op;
    t->queue = (uint8_t)queue;
    t->rep = (uint8_t)d->rep;
    t->res = (uint8_t)kv_queue_res(queue);
    t->step = step, t->layer = layer, t->mb = mb;
    return task_commit(d, r);
}

/* from -> to: appended to from's successor list. A dependency on a task that has finished (a
 * streamed run) is already met: nothing to wait for. */
static inline int add_succ(sim_des *d, sim_task *f, int32_t to) {
    if (f->nsucc_in < SIM_SUCC_IN) {
        f->succ_in[f->nsucc_in++] = to;
        return 0;
    }
    int32_t k = d->efree;
    if (k >= 0) d->efree = d->e[k].next;
    else {
        if (grow((void **)&d->e, &d->ecap, d->ne + 1, sizeof *d->e)) return -1;
        k = d->ne++;
    }
    d->e[k].to = to, d->e[k].next = -1;
    if (f->succ_tail >= 0) d->e[f->succ_tail].next = k;
    else f->succ_head = k;
    f->succ_tail = k;
    return 0;
}

/* ... and t (task `to`) waits for it (ndeps0 is the caller's); t is passed in: sim_des_add has the
 * new record at hand. */
static inline int add_edge(sim_des *d, int32_t from, int32_t to, sim_task *t) {
    if (from >= d->efloor && to - from > d->elen) d->elen = to - from;
    if (from < d->base) return 0;
    sim_task *f = TK(d, from);
    if (f->fin) return 0;
    t->deps_left++;
    return add_succ(d, f, to);
}

/* A streamed run added a task that, with the whole graph present, would already have started
 * (ready, heading an idle queue, everything it waits for done): the streamed timeline would
 * differ, so the run says so and the caller runs it again with the whole graph. */
static inline int is_late(const sim_des *d, int32_t id) {
    const sim_task *t = TK(d, id);
    if (t->deps_left) return 0;
    const sim_queue *q = &d->q[t->rep * KV_Q_COUNT + t->queue];
    return q->running < 0 && q->seq[q->head] == id;
}

/* Task id (record t, just made) waits for deps, all earlier tasks. */
static inline int add_deps(sim_des *d, int32_t id, sim_task *t, const int32_t *deps, int ndeps) {
    t->ndeps0 = (uint8_t)(ndeps < 255 ? ndeps : 255);
    for (int i = 0; i < ndeps; i++)
        if (deps[i] < 0 || deps[i] >= id || add_edge(d, deps[i], id, t)) return -1;
    return 0;
}

int32_t sim_des_add(sim_des *d, kv_op op, kv_queue q, int step, int layer, int mb, const int32_t *deps, int ndeps, sim_task **out) {
    int32_t id = sim_des_task(d, op, q, step, layer, mb);
    if (id < 0) return -1;
    sim_task *t = TK(d, id);
    if (add_deps(d, id, t, deps, ndeps)) return -1;
    *out = t;
    return id;
}

int32_t sim_des_add_copies(sim_des *d, int32_t n, const int32_t *deps, const uint8_t *ndeps, size_t stride) {
    int32_t first = d->n;
    if (n <= 0 || first - n < d->off) return -1;
    if (d->n - d->off + n > d->cap && grow_tasks(d, n)) return -1;
    if (d->nq > KV_Q_COUNT) /* replicas: every source must be the replica's being added */
        for (int32_t i = first - n; i < first; i++)
            if (TK(d, i)->rep != d->rep) return -1;
    sim_queue *qs = &d->q[d->rep * KV_Q_COUNT];
    if (d->stream)
        for (int k = 0; k < KV_Q_COUNT; k++) compact(&qs[k]);
    int32_t differ = -1; /* the last copy whose dependency count is not its source's */
    for (int32_t i = 0; i < n; i++) {
        int32_t id = first + i;
        sim_task *t = TK(d, id);
        /* copy i's record: computed, not stepped to, so that no pointer passes the last one */
        const int32_t *dp = (const int32_t *)((const char *)deps + (size_t)i * stride);
        int nd = ndeps[(size_t)i * stride];
        const sim_task *x = TK(d, id - n);
        /* the queue and count read from the source, not from the copy just stored: the copy's
         * loads would wait on its stores */
        sim_queue *r = &qs[x->queue];
        if (x->ndeps0 != nd) differ = i; /* (a cheap part of the promise sim_des_periodic relies on) */
        if (r->n >= r->cap && grow((void **)&r->seq, &r->cap, r->n + 1, sizeof *r->seq)) return -1;
        *t = *x;
        task_fresh(t);
        t->layer++;
        task_commit(d, r);
        if (add_deps(d, id, t, dp, nd)) return -1;
    }
    /* the run of copies: as if each had been added alone (a copy with another count breaks it) */
    if (differ == n - 1) d->cl_a = d->cl_b = d->cl_q = 0;
    else if (differ < 0 && first == d->cl_b && n == d->cl_q) d->cl_b = first + n;
    else d->cl_a = first + differ + 1, d->cl_b = first + n, d->cl_q = n;
    return first;
}

void sim_des_edge_floor(sim_des *d, int32_t id) { d->efloor = id, d->elen = 0; }

const sim_task *sim_des_tasks(const sim_des *d) { return d->off == 0 && d->n <= d->cap ? d->t : NULL; }
sim_task *sim_des_get(sim_des *d, int32_t id) { return id >= d->off && id < d->n ? TK(d, id) : NULL; }
int32_t sim_des_count(const sim_des *d) { return d->n; }
const sim_task *sim_des_task_at(const sim_des *d, int32_t id) { return id >= d->off && id < d->n ? TK(d, id) : NULL; }

kv_status sim_des_dep(sim_des *d, int32_t from, int32_t to) {
    if (from < d->base || to < d->base || from >= d->n || to >= d->n || from == to)
        return kv_errorf(KV_EINVAL, "sim: bad dependency %d -> %d", from, to);
    sim_task *t = TK(d, to);
    if (t->ndeps0 < 255) t->ndeps0++;
    if (add_edge(d, from, to, t)) return kv_errorf(KV_ENOMEM, "sim: out of memory for dependencies");
    return KV_OK;
}

const int32_t *sim_des_succ(sim_des *d, int32_t id, int32_t *n) {
    *n = 0;
    if (id < d->off || id >= d->n) return d->scratch;
    for (int i = 0; i < TK(d, id)->nsucc_in; i++) {
        if (grow((void **)&d->scratch, &d->scap, *n + 1, sizeof *d->scratch)) return d->scratch;
        d->scratch[(*n)++] = TK(d, id)->succ_in[i];
    }
    for (int32_t k = TK(d, id)->succ_head; k >= 0; k = d->e[k].next) {
        if (grow((void **)&d->scratch, &d->scap, *n + 1, sizeof *d->scratch)) return d->scratch;
        d->scratch[(*n)++] = d->e[k].to;
    }
    return d->scratch;
}

void sim_des_links(sim_des *d, sim_link h2d, sim_link d2h) {
    d->link[0] = h2d;
    d->link[1] = d2h;
}

kv_status sim_des_net(sim_des *d, const sim_net *net) {
    if (!net) {
        d->has_net = 0;
        return KV_OK;
    }
    if (net->nrep < 1 || net->nrep > SIM_MAX_REP || net->nhop < 1 || net->nhop > SIM_MAX_HOPS)
        return kv_errorf(KV_EINVAL, "sim: a host network needs 1 to %d replicas and 1 to %d hops", SIM_MAX_REP, SIM_MAX_HOPS);
    for (int h = 0; h < net->nhop; h++) {
        const sim_hop *o = &net->hop[h];
        if (!(o->cap > 0 && isfinite(o->cap)) || !(o->duplex > 0 && o->duplex <= 1) || o->pair < -1 || o->pair >= net->nhop || o->pair == h)
            return kv_errorf(KV_EINVAL, "sim: hop %d (%s) has a bad capacity, duplex fraction or pair", h, o->name);
    }
    for (int r = 0; r < net->nrep; r++)
        for (int k = 0; k < SIM_R_COUNT; k++) {
            const sim_route *rt = &net->route[r][k];
            if (rt->n < 1 || rt->n > SIM_ROUTE_MAX) return kv_errorf(KV_EINVAL, "sim: replica %d has an empty or too long route", r);
            for (int i = 0; i < rt->n; i++) {
                if (rt->hop[i] < 0 || rt->hop[i] >= net->nhop) return kv_errorf(KV_EINVAL, "sim: replica %d's route names no hop", r);
                for (int j = 0; j < i; j++)
                    if (rt->hop[j] == rt->hop[i]) return kv_errorf(KV_EINVAL, "sim: replica %d's route crosses a hop twice", r);
            }
        }
    if (!d->ns && !(d->ns = calloc(1, sizeof *d->ns))) return kv_errorf(KV_ENOMEM, "sim: out of memory");
    d->ns->net = *net;
    d->has_net = 1;
    for (int i = KV_Q_COUNT; i < net->nrep * KV_Q_COUNT; i++) d->q[i].n = d->q[i].head = 0, d->q[i].running = -1;
    d->nq = net->nrep * KV_Q_COUNT;
    return KV_OK;
}

void sim_des_replica(sim_des *d, int r) { d->rep = r >= 0 && r < d->nq / KV_Q_COUNT ? r : 0; }

void sim_des_hop_stats(const sim_des *d, int i, double *busy_s, double *sat_s, double *bytes) {
    *busy_s = *sat_s = *bytes = 0;
    if (!d->has_net || i < 0 || i >= d->ns->net.nhop) return;
    *busy_s = sim_to_s(d->ns->busy[i]);
    *sat_s = sim_to_s(d->ns->sat_t[i]);
    *bytes = d->ns->bytes[i];
}

/* ---- pending completions ------------------------------------------------------------- */

_Static_assert(SIM_MAX_REP * KV_Q_COUNT <= 128, "evmask holds one bit per queue");

static int ev_less(const sim_event *a, const sim_event *b) { return a->t < b->t || (a->t == b->t && a->seq < b->seq); }

/* Every event is the completion of a running task, and a queue runs one task at a time, so each
 * queue holds at most one pending completion: a re-rated copy's new completion replaces its old
 * one (a heap kept the old one as a stale event: 38 % of the pops of the throughput benchmark).
 * The next event is the earliest (time, insertion order) of the few queues holding one: the order
 * a heap of the same events, stale ones skipped, pops them in. */
static void push(sim_des *d, sim_time t, int32_t task) {
    const sim_task *x = TK(d, task);
    int qi = x->rep * KV_Q_COUNT + x->queue;
    d->evmask[qi >> 6] |= 1ULL << (qi & 63);
    d->ev[qi] = (sim_event){t, d->seq++, task};
}

/* The queue whose completion comes next; -1 if none is pending. */
static int ev_next(const sim_des *d) {
    int best = -1;
    for (int w = 0; w < 2; w++)
        for (uint64_t m = d->evmask[w]; m; m &= m - 1) {
            int qi = w * 64 + __builtin_ctzll(m);
            if (best < 0 || ev_less(&d->ev[qi], &d->ev[best])) best = qi;
        }
    return best;
}

static sim_event ev_take(sim_des *d, int qi) {
    d->evmask[qi >> 6] &= ~(1ULL << (qi & 63));
    return d->ev[qi];
}

/* ---- run -------------------------------------------------------------------------- */

/* The run's state lives in sim_des (a streamed run spans many calls); c is d. */
typedef sim_des run_ctx;

static int is_link(int res) { return res == KV_RES_H2D || res == KV_RES_D2H; }

/* Schedules a task's completion `dt` seconds after `base`; a duration the clock cannot hold
 * stops the run (reported by sim_des_run) instead of overflowing. */
static int complete_at(sim_des *c, sim_time base, double dt, int32_t id) {
    if (!sim_time_ok(dt)) {
        c->bad = id;
        return 0;
    }
    push(c, base + sim_from_s(dt), id);
    return 0;
}

/* The copies in flight on one direction changed (or the other direction started or stopped):
 * each gets rate / n, times the duplex fraction while the other direction copies. */
static int rerate(sim_des *c, int dir, sim_time now) {
    sim_des *d = c;
    sim_dir *L = &d->dir[dir];
    if (L->n == 0) return 0;
    double r = d->link[dir].rate / L->n;
    if (d->dir[1 - dir].n > 0) r *= d->link[dir].duplex;
    for (int i = 0; i < L->n; i++) {
        sim_flow *f = &L->f[i];
        if (f->rate == r) continue;
        if (now > f->upd) {
            f->rem -= f->rate * sim_to_s(now - f->upd);
            if (f->rem < 0) f->rem = 0;
            f->upd = now;
        }
        f->rate = r;
        if (complete_at(c, f->upd, f->rem / r, f->task)) return -1;
    }
    return 0;
}

/* ---- the host network: progressive filling over every hop ----------------------------- */

static int is_flow(const sim_des *d, const sim_task *t) { return is_link(t->res) || (d->has_net && t->res == KV_RES_CPU); }

/* Max-min fair rates of all flows: raise every unfixed flow's rate together until a hop fills,
 * fix the flows crossing it (and any hop filling at the same level, within rounding), repeat.
 * Deterministic: flows and hops are visited in array order. Then every flow whose rate changed
 * has its remaining work brought to `now` and its completion rescheduled. */
static int net_solve(sim_des *c, sim_time now) {
    sim_des *d = c;
    sim_netstate *ns = d->ns;
    const sim_net *net = &ns->net;
    int H = net->nhop;
    for (int h = 0; h < H; h++)
        if (ns->sat[h]) ns->sat_t[h] += now - ns->last;
    ns->last = now;
    double cap[SIM_MAX_HOPS], w[SIM_MAX_HOPS], rate[SIM_MAX_REP * KV_Q_COUNT];
    int nun[SIM_MAX_HOPS];
    uint8_t full[SIM_MAX_HOPS], fixed[SIM_MAX_REP * KV_Q_COUNT];
    for (int h = 0; h < H; h++) {
        const sim_hop *o = &net->hop[h];
        cap[h] = o->cap * (o->pair >= 0 && ns->nact[o->pair] > 0 ? o->duplex : 1);
        w[h] = 0, nun[h] = 0, ns->sat[h] = 0;
    }
    for (int i = 0; i < ns->nf; i++) {
        const sim_mflow *f = &ns->f[i];
        fixed[i] = 0;
        for (int k = 0; k < f->route->n; k++) {
            int h = f->route->hop[k];
            w[h] += net->hop[h].per_byte ? f->coef : 1;
            nun[h]++;
        }
    }
    for (int left = ns->nf; left > 0;) {
        double lam = (double)INFINITY;
        for (int h = 0; h < H; h++)
            if (nun[h] > 0 && fmax(cap[h], 0) / w[h] < lam) lam = fmax(cap[h], 0) / w[h];
        if (!(lam < (double)INFINITY)) break;
        for (int h = 0; h < H; h++) full[h] = nun[h] > 0 && fmax(cap[h], 0) / w[h] <= lam * (1 + 1e-12);
        for (int i = 0; i < ns->nf; i++) {
            if (fixed[i]) continue;
            const sim_route *rt = ns->f[i].route;
            int hit = 0;
            for (int k = 0; k < rt->n; k++) hit |= full[rt->hop[k]];
            if (!hit) continue;
            fixed[i] = 1, rate[i] = lam, left--;
            for (int k = 0; k < rt->n; k++) {
                int h = rt->hop[k];
                double a = net->hop[h].per_byte ? ns->f[i].coef : 1;
                cap[h] -= lam * a;
                if (--nun[h] == 0) w[h] = 0;
                else w[h] -= a;
            }
        }
        for (int h = 0; h < H; h++) ns->sat[h] |= full[h];
    }
    for (int i = 0; i < ns->nf; i++) {
        sim_mflow *f = &ns->f[i];
        if (f->rate == rate[i]) continue;
        if (now > f->upd) {
            f->rem -= f->rate * sim_to_s(now - f->upd);
            if (f->rem < 0) f->rem = 0;
            f->upd = now;
        }
        f->rate = rate[i];
        if (complete_at(c, f->upd, f->rem / f->rate, f->task)) return -1;
    }
    return 0;
}

static int net_start(sim_des *c, int32_t id, sim_time now) {
    sim_des *d = c;
    sim_netstate *ns = d->ns;
    sim_task *t = TK(d, id);
    int kind = t->res == KV_RES_H2D ? SIM_R_H2D : t->res == KV_RES_D2H ? SIM_R_D2H : SIM_R_CPU;
    double pay = kind == SIM_R_CPU ? 0 : t->fixed_s; /* CPU attention: its time comes from its rate */
    if (!sim_time_ok(pay) || !(t->work >= 0)) {
        c->bad = id;
        return 0;
    }
    sim_mflow *f = &ns->f[ns->nf++];
    *f = (sim_mflow){id, t->work, 0, now + sim_from_s(pay), &ns->net.route[t->rep][kind], 1};
    if (t->work > 0 && t->bytes > 0) f->coef = fmin(t->bytes / t->work, 1);
    for (int k = 0; k < f->route->n; k++) {
        int h = f->route->hop[k];
        if (ns->nact[h]++ == 0) ns->since[h] = now;
    }
    return net_solve(c, now);
}

static int net_end(sim_des *c, int32_t id, sim_time now) {
    sim_des *d = c;
    sim_netstate *ns = d->ns;
    for (int i = 0; i < ns->nf; i++)
        if (ns->f[i].task == id) {
            const sim_route *rt = ns->f[i].route;
            for (int k = 0; k < rt->n; k++) {
                int h = rt->hop[k];
                ns->bytes[h] += TK(d, id)->bytes;
                if (--ns->nact[h] == 0) ns->busy[h] += now - ns->since[h];
            }
            /* keep the order of the others: the solver visits flows in array order */
            memmove(&ns->f[i], &ns->f[i + 1], (size_t)(ns->nf - i - 1) * sizeof *ns->f);
            ns->nf--;
            break;
        }
    return net_solve(c, now);
}


/* ---- fast-forward over periodic regions ------------------------------------------------------
 * The layers of one decode step are copies of each other: the same ops with the same costs and
 * the same dependencies, shifted by the layer's task count Q. Once the simulation reaches the
 * same state, relative to a layer's first compute task (the anchor) and its start time, at two
 * anchors in a row, every later layer of the region runs the same events shifted by Q tasks and
 * by the time D between the anchors: the run is deterministic and its arithmetic depends only on
 * differences of times. Those layers are then not simulated but replayed: the starts and ends
 * logged between the two anchors are copied k times, shifted (the successors' dependency counts
 * are decremented as the run would, the busy times and event counts grow by k times the
 * period's), and the run continues from the state shifted by k Q and k D. The state compared is
 * everything the future depends on: every unfinished task's status and dependency count between
 * the oldest unfinished task and the newest started one, each queue's running task (its start
 * and the task that let it start) and next task, every copy in flight (its remaining work and
 * rate to the bit, the time its rate applies from), and the pending completion events in time
 * order. A skip is taken only when every task it touches stays inside the region, every task
 * before the region has finished (so dependencies from outside are met), and no queue could
 * start a task outside the region. Results are those of the full run to the bit (tests compare
 * every field); KVPR_SIM_FF=0 turns it off. One GPU only (no host network); a streamed run
 * declares each step as its successor begins, before any of its tasks has run, and the replay
 * makes and drops its critical-path nodes as the run would. */

static inline int32_t cnode_new(sim_des *d);
static inline void cnode_drop(sim_des *d, int32_t k);
static void retire(sim_des *d);
static int32_t crit_fold_from(sim_des *d, const int32_t *run, int nrun);
static int crit_running(const sim_des *d, int32_t *run);
static int32_t crit_tree(const sim_des *d, const int32_t *run, int nrun, sim_time T, int32_t *ids, sim_cnode *out, int32_t *fr, int32_t max);
#define FF_TREE_MAX 256 /* nodes a replay compares at most (more: it makes every period's nodes) */

/* The scratch for two trees; -1 when out of memory (then no bulk: nothing else lost). */
static int ff_tree_room(sim_des *d) {
    for (int i = 0; i < 2; i++) {
        if (!d->ct[i]) d->ct[i] = malloc(FF_TREE_MAX * sizeof *d->ct[i]);
        if (!d->ct_id[i]) d->ct_id[i] = malloc(FF_TREE_MAX * sizeof *d->ct_id[i]);
        if (!d->ct_fr[i]) d->ct_fr[i] = malloc((SIM_MAX_REP * KV_Q_COUNT + 1) * sizeof *d->ct_fr[i]);
        if (!d->ct[i] || !d->ct_id[i] || !d->ct_fr[i]) return -1;
    }
    return 0;
}

/* The two trees are the same: nodes (relative times, kind, references, parent) and where the
 * nfr frontier entries hang. */
static int ff_tree_same(const sim_des *d, int32_t n, int nfr) {
    for (int32_t i = 0; i < n; i++) {
        const sim_cnode *a = &d->ct[0][i], *b = &d->ct[1][i];
        if (a->start != b->start || a->end != b->end || a->parent != b->parent || a->refs != b->refs || a->op != b->op) return 0;
    }
    return !memcmp(d->ct_fr[0], d->ct_fr[1], (size_t)nfr * sizeof *d->ct_fr[0]);
}

uint64_t sim_des_ff_periods(const sim_des *d) { return d->ff_periods; }
uint64_t sim_des_ff_bulk(const sim_des *d, uint64_t *refused) {
    if (refused) *refused = d->ff_bulk_no;
    return d->ff_bulk;
}

/* Task i is task i - Q's copy: the same kind, queue and cost, the same number of dependencies, and
 * its successors are the other's shifted by Q (in order). Checked when the region is declared: no
 * task of it has run (so no successor list has been consumed), and the successors added so far
 * lie inside the region (dependencies from later tasks are met or counted when those are added). */
static int ff_copy(sim_des *d, int32_t i, int32_t Q) {
    const sim_task *x = TK(d, i), *y = TK(d, i - Q);
    if (x->op != y->op || x->queue != y->queue || x->rep != y->rep || x->ndeps0 != y->ndeps0 || x->nsucc_in != y->nsucc_in ||
        x->start >= 0 || y->start >= 0)
        return 0;
    if (memcmp(&x->fixed_s, &y->fixed_s, sizeof x->fixed_s) || memcmp(&x->work, &y->work, sizeof x->work)) return 0;
    for (int k = 0; k < x->nsucc_in; k++)
        if (x->succ_in[k] != y->succ_in[k] + Q) return 0;
    int32_t p = x->succ_head, q = y->succ_head;
    for (; p >= 0 && q >= 0; p = d->e[p].next, q = d->e[q].next)
        if (d->e[p].to != d->e[q].to + Q) return 0;
    return p < 0 && q < 0;
}

/* The region shrinks to its longest stretch of copies (at least four periods), kept in order. */
void sim_des_periodic(sim_des *d, int32_t a, int32_t b, int32_t Q, int32_t anchor0) {
    if (Q <= 0 || b - a < 4 * Q || anchor0 < a || anchor0 >= b || b > d->n) return;
    if (d->nrg > 0 && a < d->rg[d->nrg - 1].b) return; /* out of order */
    if (a < d->off) a = d->off; /* tasks that have left (a streamed run's short window) ran: no copy */
    /* Copies need no check where it follows from how they were made: task x of the last run of
     * copies [c0, c1) made with period Q is x - Q's copy in kind, queue, costs and dependencies
     * (each Q higher), so its successors are x - Q's shifted wherever every successor of either
     * is itself such a copy: edges from the region's tasks reach at most elen ahead, so that holds
     * for x in [c0, c1 - elen), provided no task of the region has run (every dependency on x - Q
     * was then recorded as an edge, as on x). */
    int32_t s0 = INT32_MAX, s1 = INT32_MAX;
    if (d->cl_q == Q && d->efloor <= a && (!d->started || (d->ff_on && d->ff_hi < a))) {
        s0 = d->cl_a > a + Q ? d->cl_a : a + Q;
        s1 = d->cl_b - d->elen < b ? d->cl_b - d->elen : b;
        if (s1 <= s0) s0 = s1 = INT32_MAX;
    }
    int32_t best_s = 0, best_e = 0, run_s = -1;
    for (int32_t i = a + Q; i <= b; i++) {
        if (i == s0) {
            if (run_s < 0) run_s = i;
            i = s1 - 1;
            continue;
        }
        int ok = i < b && ff_copy(d, i, Q);
        if (ok && run_s < 0) run_s = i;
        if (!ok && run_s >= 0) {
            if (i - run_s > best_e - best_s) best_s = run_s, best_e = i;
            run_s = -1;
        }
    }
    if (best_e - best_s < 3 * Q) return;
    sim_region g = {best_s - Q, best_e, Q, anchor0};
    /* the first anchor inside */
    int32_t m = g.anchor0 >= g.a ? 0 : (g.a - g.anchor0 + g.Q - 1) / g.Q;
    g.anchor0 += m * g.Q;
    if (g.anchor0 >= g.b) return;
    /* every region's anchors on one queue, which runs in id order: anchors start in id order, so
     * the next one to start is a cursor (ff_cursor) */
    const sim_task *at = TK(d, g.anchor0);
    int aq = at->rep * KV_Q_COUNT + at->queue;
    if (d->nrg > 0 && aq != d->ff_aq) return;
    if (d->stream && d->nrg > 0 && d->nrg == d->rgcap) { /* regions whose tasks have all retired are done with */
        int32_t k = 0;
        while (k < d->nrg && d->rg[k].b <= d->base) k++;
        memmove(d->rg, d->rg + k, (size_t)(d->nrg - k) * sizeof *d->rg);
        d->nrg -= k, d->rgi = d->rgi > k ? d->rgi - k : 0;
    }
    if (grow((void **)&d->rg, &d->rgcap, d->nrg + 1, sizeof *d->rg)) return; /* no fast-forward, nothing else lost */
    d->ff_aq = aq;
    d->rg[d->nrg++] = g;
    if (g.anchor0 < d->ff_cursor) d->ff_cursor = g.anchor0;
}

static int ff_push(sim_des *d, int k, int64_t v) {
    if (d->nsig[k] == d->sigcap[k] && grow((void **)&d->sig[k], &d->sigcap[k], d->nsig[k] + 1, sizeof(int64_t))) return -1;
    d->sig[k][d->nsig[k]++] = v;
    return 0;
}

static int64_t ff_bits(double x) {
    int64_t v;
    memcpy(&v, &x, sizeof v);
    return v;
}

/* The pending completions in (time, insertion) order, into out (a handful: one per queue at most,
 * so an insertion sort; the order is total, insertion numbers being distinct). */
static int32_t ff_live(sim_des *d, sim_event *out) {
    int32_t n = 0;
    for (int w = 0; w < 2; w++)
        for (uint64_t m = d->evmask[w]; m; m &= m - 1) {
            sim_event e = d->ev[w * 64 + __builtin_ctzll(m)];
            int32_t j = n++;
            for (; j > 0 && ev_less(&e, &out[j - 1]); j--) out[j] = out[j - 1];
            out[j] = e;
        }
    return n;
}

#define FF_NONE INT64_MIN

/* The state relative to anchor A at time now into signature k; -1 if it cannot be expressed
 * (a time too far apart, or out of memory). */
static int ff_sig(sim_des *d, int k, int32_t A, sim_time now, sim_event *live, int32_t nlive) {
    d->nsig[k] = 0;
    int32_t lo = d->lo, hi = d->ff_hi;
    if (ff_push(d, k, lo - A) || ff_push(d, k, hi - A)) return -1;
    for (int32_t i = lo; i <= hi; i++) {
        const sim_task *t = TK(d, i);
        if (ff_push(d, k, t->fin ? -1 : t->start >= 0 ? -2 : t->deps_left)) return -1;
    }
    const sim_time lim = (sim_time)INT64_MAX / 2;
    for (int qi = 0; qi < d->nq; qi++) {
        const sim_queue *q = &d->q[qi];
        if (q->running >= 0) {
            const sim_task *t = TK(d, q->running);
            if (now - t->start > lim || ff_push(d, k, q->running - A) || ff_push(d, k, (int64_t)(now - t->start)) ||
                ff_push(d, k, t->crit >= 0 ? t->crit - A : FF_NONE))
                return -1;
        } else if (ff_push(d, k, FF_NONE))
            return -1;
        if (ff_push(d, k, q->head < q->n ? q->seq[q->head] - A : FF_NONE)) return -1;
    }
    for (int r = 0; r < 2; r++) {
        const sim_dir *L = &d->dir[r];
        if (ff_push(d, k, L->n)) return -1;
        for (int i = 0; i < L->n; i++) {
            const sim_flow *f = &L->f[i];
            sim_time u = f->upd - now;
            if (u > lim || u < -lim || ff_push(d, k, f->task - A) || ff_push(d, k, ff_bits(f->rem)) || ff_push(d, k, ff_bits(f->rate)) ||
                ff_push(d, k, (int64_t)u))
                return -1;
        }
    }
    if (ff_push(d, k, nlive)) return -1;
    for (int32_t i = 0; i < nlive; i++) {
        sim_time u = live[i].t - now;
        if (u > lim || ff_push(d, k, (int64_t)u) || ff_push(d, k, live[i].task - A)) return -1;
    }
    return 0;
}

static const sim_region *ff_region(sim_des *d, int32_t id) {
    while (d->rgi < d->nrg && d->rg[d->rgi].b <= id) d->rgi++;
    if (d->rgi < d->nrg && id >= d->rg[d->rgi].a) return &d->rg[d->rgi];
    /* a start behind the current region (another queue): look it up */
    int32_t lo = 0, hi = d->nrg;
    while (lo < hi) {
        int32_t m = (lo + hi) / 2;
        if (d->rg[m].b <= id) lo = m + 1;
        else hi = m;
    }
    return lo < d->nrg && id >= d->rg[lo].a ? &d->rg[lo] : NULL;
}

/* The first anchor at or after id, over the regions (INT32_MAX: none). Anchors start in id order
 * (they are a layer's first compute task, and the compute queue runs in id order), so a start
 * is an anchor exactly when it is this cursor. */
static int32_t ff_next_anchor(const sim_des *d, int32_t id) {
    int32_t lo = 0, hi = d->nrg;
    while (lo < hi) {
        int32_t m = (lo + hi) / 2;
        if (d->rg[m].b <= id) lo = m + 1;
        else hi = m;
    }
    for (; lo < d->nrg; lo++) {
        const sim_region *g = &d->rg[lo];
        int64_t a = id <= g->anchor0 ? g->anchor0 : g->anchor0 + ((int64_t)id - g->anchor0 + g->Q - 1) / g->Q * g->Q;
        if (a < g->b) return (int32_t)a;
    }
    return INT32_MAX;
}

static void ff_log(sim_des *d, int32_t id, int32_t why, sim_time t, int end, int qi) {
    if (d->ff_prev < 0 || d->ff_logbad) return;
    if (d->nlog == d->logcap && d->log0 > 0 && d->log0 >= d->nlog / 2) { /* entries before log0 are dropped */
        memmove(d->log, d->log + d->log0, (size_t)(d->nlog - d->log0) * sizeof *d->log);
        d->nlog -= d->log0, d->log_mid -= d->log0, d->log0 = 0;
    }
    if (d->nlog == d->logcap && grow((void **)&d->log, &d->logcap, d->nlog + 1, sizeof *d->log)) {
        d->ff_logbad = d->ff_logbad2 = 1;
        return;
    }
    d->log[d->nlog++] = (sim_tr){t, id, why, (uint8_t)end, (uint8_t)qi, 0};
}

/* A link's busy time counts a stretch (some copy in flight) when it closes; with the stretch open
 * at `now` counted up to now, the busy time within a period repeats from period to period even
 * when stretches span periods (which the closed stretches alone do not). */
static void ff_busy_now(const sim_des *d, sim_time now, sim_time *b) {
    memcpy(b, d->st.busy, sizeof d->st.busy);
    for (int r = 0; r < 2; r++)
        if (d->dir[r].n > 0) b[r == 0 ? KV_RES_H2D : KV_RES_D2H] += now - d->dir[r].since;
}

static void sig_swap(sim_des *d, int i, int j) {
    int64_t *x = d->sig[i];
    int32_t c = d->sigcap[i], n = d->nsig[i];
    d->sig[i] = d->sig[j], d->sigcap[i] = d->sigcap[j], d->nsig[i] = d->nsig[j];
    d->sig[j] = x, d->sigcap[j] = c, d->nsig[j] = n;
}

/* Starts a new period at anchor A: its signature becomes the one to compare with, and the last
 * checkpoint the one before it (the log drops what came before that). */
static void ff_begin(sim_des *d, int32_t A, sim_time now) {
    sig_swap(d, 2, 0), sig_swap(d, 0, 1); /* last -> before the last, current -> last */
    d->nsig[1] = 0;
    d->ff_prev2 = d->ff_prev, d->ff_logbad2 = d->ff_logbad, d->ff_ev02 = d->ff_ev0, d->ff_t02 = d->ff_t0;
    memcpy(d->ff_busy02, d->ff_busy0, sizeof d->ff_busy02);
    d->log0 = d->log_mid, d->log_mid = d->nlog;
    d->ff_prev = A;
    d->ff_logbad = 0;
    d->ff_ev0 = d->st.events;
    ff_busy_now(d, now, d->ff_busy0);
    d->ff_t0 = now;
}

/* Replays a logged start on task t (the entry's task shifted by sh, its time by dt); -1 when its
 * queue is not as the region promised (a bug: the run fails). */
static inline int ff_start(sim_des *d, sim_task *t, const sim_tr *r, int32_t sh, sim_time dt) {
    sim_queue *q = &d->q[r->qi];
    if (q->head >= q->n || q->seq[q->head] != r->id + sh) {
        d->ff_broken = 1;
        return -1;
    }
    q->head++;
    t->start = r->t + dt;
    t->crit = r->why + sh;
    return 0;
}

/* A replayed end: successors beyond the compared window (above hi_end) count it as done; those
 * within take their counts from the signature. A streamed run (consume) then frees its edges, as
 * step_event does. */
static inline void ff_release(sim_des *d, sim_task *t, int32_t hi_end, int consume) {
    for (int j = 0; j < t->nsucc_in; j++)
        if (t->succ_in[j] > hi_end) TK(d, t->succ_in[j])->deps_left--;
    for (int32_t e = t->succ_head, nx; e >= 0; e = nx) {
        if (d->e[e].to > hi_end) TK(d, d->e[e].to)->deps_left--;
        nx = d->e[e].next;
        if (consume) d->e[e].next = d->efree, d->efree = e;
    }
    if (consume) t->succ_head = t->succ_tail = -1;
}

/* A streamed replay's previous last end, released once the starts it caused are done: its node
 * (pend >= 0) as step_event drops it, or, had it none (pend == -2), its parent, which is what
 * dropping the node would have done (pend -1 or -3: nothing). */
static inline void ff_release_last(sim_des *d, int32_t pend, int32_t pcpar) {
    if (pend >= 0 && pend != d->last_node) cnode_drop(d, pend);
    else if (pend == -2 && pcpar >= 0) d->cn[pcpar].refs--, cnode_drop(d, pcpar);
}

/* At the end of an event in which anchor A started: compare, and skip what repeats. */
static void ff_checkpoint(sim_des *d, int32_t A) {
    sim_time now = d->now;
    const sim_region *g = ff_region(d, A);
    if (d->lo < d->base) d->lo = d->base; /* retired tasks (a streamed run) have finished */
    while (d->lo < d->n && TK(d, d->lo)->fin) d->lo++;
    /* (and where even one period would pass the region's end, as at a step's last layers, no
     * replay can come from here or from a later anchor of the region: no signature either) */
    if (!g || d->ff_hi - d->lo > 16 * g->Q + 64 || g->b - 1 - A < g->Q) {
        d->ff_prev = d->ff_prev2 = -1;
        return;
    }
    sim_event live[SIM_MAX_REP * KV_Q_COUNT];
    int32_t nlive = ff_live(d, live);
    if (ff_sig(d, 1, A, now, live, nlive)) {
        d->ff_prev = d->ff_prev2 = -1;
        return;
    }
    /* the state repeats the last checkpoint's (a period of one layer), or the one before it (two
     * layers: then the period is both layers, and the log holds both) */
    int same = d->ff_prev == A - g->Q && !d->ff_logbad && d->nsig[0] == d->nsig[1] &&
               !memcmp(d->sig[0], d->sig[1], sizeof(int64_t) * (size_t)d->nsig[1]);
    int same2 = !same && d->ff_prev2 == A - 2 * g->Q && !d->ff_logbad2 && d->nsig[2] == d->nsig[1] &&
                !memcmp(d->sig[2], d->sig[1], sizeof(int64_t) * (size_t)d->nsig[1]);
    if (!same && !same2) {
        ff_begin(d, A, now);
        return;
    }
    /* the period's log: from the last checkpoint on (one layer) or from the one before */
    sim_tr *lg = d->log + (same ? d->log_mid : d->log0);
    const int32_t nl = d->nlog - (int32_t)(lg - d->log);
    const sim_time t0 = same ? d->ff_t0 : d->ff_t02, *busy0 = same ? d->ff_busy0 : d->ff_busy02;
    const uint64_t ev0 = same ? d->ff_ev0 : d->ff_ev02;
    sim_time D = now - t0;
    int32_t Q = same ? g->Q : 2 * g->Q, maxid = d->ff_hi;
    int ok = D > 0 && d->lo >= g->a;
    for (int32_t i = 0; ok && i < nl; i++) {
        const sim_tr *r = &lg[i];
        if (r->id < g->a || r->id >= g->b || (!r->end && (r->why < g->a || r->why >= g->b))) ok = 0;
        if (r->id > maxid) maxid = r->id;
    }
    for (int qi = 0; ok && qi < d->nq; qi++) {
        const sim_queue *q = &d->q[qi];
        if (q->running >= 0) {
            const sim_task *t = TK(d, q->running);
            if (q->running < g->a || q->running >= g->b || t->crit < g->a || t->crit >= g->b) ok = 0;
        }
        /* a queue whose next task lies outside could start it at any time of the skip */
        if (q->head < q->n && (q->seq[q->head] < g->a || q->seq[q->head] >= g->b)) ok = 0;
        if (q->head < q->n && q->seq[q->head] > maxid) maxid = q->seq[q->head];
    }
    for (int32_t i = 0; i < nlive; i++)
        if (live[i].task > maxid) maxid = live[i].task;
    int64_t k = ok ? (int64_t)(g->b - 1 - maxid) / Q : 0;
    if (k < 1) {
        ff_begin(d, A, now);
        return;
    }
    /* replay the period k times. Dependency counts: a task at or below the last started one after
     * the skip (hi + k Q) has either started, or lies in the compared window and takes its count
     * from the signature (the state repeats); only tasks beyond are decremented as ends go by. */
    sim_des_stats *st = &d->st;
    uint64_t ev = st->events - ev0;
    int32_t hi_end = (int32_t)(d->ff_hi + k * Q);
    if (!d->stream) {
        /* a whole graph keeps no nodes: ends come in time order at or after every earlier end, so
         * the last one of the last pass is the task that ended last */
        int32_t nend = 0, lastend = -1;
        for (int32_t i = 0; i < nl; i++)
            if (lg[i].end) nend++, lastend = i;
        for (int64_t m = 1; m <= k; m++) {
            int32_t sh = (int32_t)(m * Q);
            sim_time dt = (sim_time)m * D;
            for (const sim_tr *r = lg, *re = lg + nl; r < re; r++) {
                sim_task *t = TK(d, r->id + sh);
                if (!r->end) {
                    if (ff_start(d, t, r, sh, dt)) return;
                    continue;
                }
                time_set(&t->end, r->t + dt);
                t->fin = 1;
                ff_release(d, t, hi_end, 0);
            }
        }
        d->done += (int32_t)(k * nend);
        if (lastend >= 0) {
            st->last = lg[lastend].id + (int32_t)(k * Q);
            d->last_end = lg[lastend].t + (sim_time)k * D;
            d->last_node = -1;
        }
    }
    if (d->stream) {
        /* Critical-path nodes, made and dropped as step_event does: the node of the previous last
         * end is released at the next end (after the starts it caused). Only an end that some
         * start names as its cause (its task id and a start's cause equal modulo Q: conservative)
         * or that ends the replay needs a node; for the others, releasing the node they would have
         * had is releasing their parent, which is what is done (nodes are internal: the paths are
         * the same). */
        if (Q > d->ff_needcap) {
            uint8_t *nn = realloc(d->ff_need, (size_t)Q);
            if (!nn) {
                d->nomem = 1;
                return;
            }
            d->ff_need = nn, d->ff_needcap = Q;
        }
        memset(d->ff_need, 0, (size_t)Q);
        int32_t lastend = -1;
        for (int32_t i = 0; i < nl; i++) {
            const sim_tr *r = &lg[i];
            if (r->end) lastend = i;
            else if (r->why >= 0) d->ff_need[r->why % Q] = 1;
        }
        for (int32_t i = 0; i < nl; i++)
            if (lg[i].end) lg[i].need = d->ff_need[lg[i].id % Q];
        /* the last end before the one being replayed: a node (>= 0), or none (-1), or virtual (-2,
         * its parent in pcpar) */
        int32_t pend = -3, pcpar = -1, lcpar = -1, nend = 0;
        int lvirt = 0;
        for (int32_t i = 0; i < nl; i++) nend += lg[i].end;
        /* Nodes in bulk. Periods 1 and 2 make their nodes; at the end of each (a point between
         * events: the last end gets a node, the one before is released) the chains' shared part is
         * folded and the tree left under the frontier captured. If the two trees are the same, one
         * period apart in time, each later period only moves the tree on by a period and adds to
         * the folded sums what period 2 added (integer sums of shifted nodes, all after the first
         * token): periods 3..k make no nodes, and at the end the tree is moved on by k - 2 periods
         * and hung from the tasks then running. Otherwise every period makes its nodes. */
        int32_t run[SIM_MAX_REP * KV_Q_COUNT], runm[SIM_MAX_REP * KV_Q_COUNT], cpar2[SIM_MAX_REP * KV_Q_COUNT], ntree[2] = {-1, -1};
        int nrun = crit_running(d, run), verify = k >= 4 && ff_tree_room(d) == 0, bulk = 0;
        sim_time cf1[KV_OP_COUNT + 2];
        /* what the loop reads of d and does not change, in locals (stores to the records could
         * alias it otherwise); the node array may move (cnode_new) */
        sim_task *const ring = d->t;
        const int32_t mask = d->tmask;
        for (int64_t m = 1; m <= k; m++) {
            int32_t sh = (int32_t)(m * Q), last = -1;
            sim_time dt = (sim_time)m * D, lastt = 0;
            const int nodes = !bulk;
            const sim_tr *force = lastend >= 0 && (m == k || (verify && m <= 2)) ? lg + lastend : NULL;
            for (const sim_tr *r = lg, *re = lg + nl; r < re; r++) {
                int32_t id = r->id + sh;
                sim_task *t = &ring[id & mask];
                if (!r->end) {
                    if (ff_start(d, t, r, sh, dt)) return;
                    int32_t c = nodes ? ring[(r->why + sh) & mask].cnode : -1;
                    t->cpar = c;
                    if (c >= 0) d->cn[c].refs++;
                    continue;
                }
                sim_time te = r->t + dt;
                time_set(&t->end, te);
                t->fin = 1;
                last = id, lastt = te;
                if (nodes) {
                    ff_release_last(d, pend, pcpar);
                    pend = lvirt ? -2 : d->last_node, pcpar = lcpar;
                    int32_t nd = -1;
                    if (r->need || r == force) {
                        if ((nd = cnode_new(d)) < 0) {
                            d->nomem = 1;
                            return;
                        }
                        cnode_set(&d->cn[nd], t->start, te, t->cpar, ++d->cserial, t->op);
                        lvirt = 0;
                    } else
                        lvirt = 1, lcpar = t->cpar;
                    t->cnode = nd;
                    d->last_node = nd;
                } else
                    t->cnode = -1;
                ff_release(d, t, hi_end, 1);
            }
            /* ends come in time order, at or after every earlier end */
            d->done += nend;
            if (last >= 0) st->last = last, d->last_end = lastt;
            /* hand the finished tasks over while their records are still in cache, a few periods
             * at a time (each hand-over has its fixed cost) */
            if ((m & 3) == 0 || m == k) retire(d);
            if (verify && m <= 2) {
                ff_release_last(d, pend, pcpar);
                pend = -3, pcpar = -1, lvirt = 0;
                for (int i = 0; i < nrun; i++) runm[i] = run[i] + sh;
                crit_fold_from(d, runm, nrun);
                int w = (int)m - 1;
                ntree[w] = crit_tree(d, runm, nrun, now + dt, d->ct_id[w], d->ct[w], d->ct_fr[w], FF_TREE_MAX);
                if (ntree[w] < 0) verify = 0;
                if (m == 1) {
                    memcpy(cf1, d->cf_op, sizeof d->cf_op), cf1[KV_OP_COUNT] = d->cf_wait, cf1[KV_OP_COUNT + 1] = d->cf_end;
                    /* every node from here on starts after the first token: their shares do not
                     * depend on where they lie in time */
                    sim_time tf = d->mark >= 0 ? d->mark_end : 0;
                    if (d->mark >= 0 && (tf < 0 || d->cf_end <= tf)) verify = 0;
                    for (int32_t i = 0; verify && i < ntree[0]; i++)
                        if (d->ct[0][i].start + now + dt <= tf) verify = 0;
                } else {
                    bulk = verify && ntree[1] == ntree[0] && d->cf_end - cf1[KV_OP_COUNT + 1] == D &&
                           ff_tree_same(d, ntree[0], nrun + 1);
                    d->ff_bulk_no += verify && !bulk;
                    for (int i = 0; i < nrun; i++) cpar2[i] = ring[runm[i] & mask].cpar;
                }
            }
        }
        if (bulk) {
            /* periods 3..k as period 2 did: the tree moved on, its sums added, the running tasks'
             * nodes theirs */
            d->ff_bulk++;
            int64_t more = k - 2;
            sim_time mv = (sim_time)more * D;
            for (int32_t i = 0; i < ntree[1]; i++) {
                sim_cnode *x = &d->cn[d->ct_id[1][i]];
                time_set(&x->start, time_get(&x->start) + mv), time_set(&x->end, time_get(&x->end) + mv);
            }
            sim_time cw = d->cf_wait, ce = d->cf_end;
            for (int i = 0; i < KV_OP_COUNT; i++) d->cf_op[i] += (sim_time)more * (d->cf_op[i] - cf1[i]);
            d->cf_wait = cw + (sim_time)more * (cw - cf1[KV_OP_COUNT]);
            d->cf_end = ce + mv;
            for (int i = 0; i < nrun; i++) ring[(run[i] + (int32_t)(k * Q)) & mask].cpar = cpar2[i];
        }
        ff_release_last(d, pend, pcpar);
    }
    int32_t sh = (int32_t)(k * Q);
    sim_time dt = (sim_time)k * D;
    for (int32_t i = d->lo; i <= d->ff_hi; i++) {
        int64_t code = d->sig[1][2 + (i - d->lo)];
        if (code >= 0) TK(d, i + sh)->deps_left = (int32_t)code;
    }
    st->events += (uint64_t)k * ev;
    /* busy time: each period adds what the reference period did, the open stretches counted up to
     * its ends; an open stretch is then carried forward with the run (its start shifted by k D),
     * so that busy time up to any later moment is exact (a link busy through the whole skip adds
     * k D, and shifting its start takes back nothing it had) */
    sim_time bnow[KV_RES_COUNT];
    ff_busy_now(d, now, bnow);
    for (int r = 0; r < KV_RES_COUNT; r++) st->busy[r] += (sim_time)k * (bnow[r] - busy0[r]);
    for (int r = 0; r < 2; r++) {
        sim_dir *L = &d->dir[r];
        if (L->n > 0) L->since += dt;
        for (int i = 0; i < L->n; i++) L->f[i].task += sh, L->f[i].upd += dt;
    }
    for (int qi = 0; qi < d->nq; qi++) {
        sim_queue *q = &d->q[qi];
        if (q->running < 0) continue;
        const sim_task *x = TK(d, q->running);
        sim_task *y = TK(d, q->running + sh);
        y->start = x->start + dt, y->crit = x->crit + sh, y->fin = 0;
        q->running += sh;
    }
    d->evmask[0] = d->evmask[1] = 0;
    for (int32_t i = 0; i < nlive; i++) push(d, live[i].t + dt, live[i].task + sh);
    d->now = now + dt;
    d->ff_hi += sh;
    d->ff_periods += (uint64_t)k * (uint64_t)(Q / g->Q);
    d->lo += sh; /* the oldest unfinished task, shifted like the rest of the state */
    /* the state is the current checkpoint's, shifted: the next period compares with it again */
    if (same2) sig_swap(d, 0, 2); /* its signature (equal to the one before the last) becomes the last */
    d->ff_prev = A + sh;
    d->ff_prev2 = -1;
    d->ff_cursor = ff_next_anchor(d, A + sh + 1); /* the anchors up to A + sh started in the replay */
    d->nlog = d->log0 = d->log_mid = 0, d->ff_logbad = 0;
    d->ff_ev0 = st->events;
    ff_busy_now(d, d->now, d->ff_busy0);
    d->ff_t0 = d->now;
}

static int try_start(sim_des *c, int qi, sim_time now, int32_t why) {
    sim_des *d = c;
    sim_queue *q = &d->q[qi];
    if (q->running >= 0 || q->head >= q->n || c->bad >= 0) return 0;
    int32_t id = q->seq[q->head];
    sim_task *t = TK(d, id);
    if (t->deps_left > 0) return 0;
    q->head++;
    q->running = id;
    t->start = now;
    t->crit = why;
    if (d->ff_on) {
        if (id > d->ff_hi) d->ff_hi = id;
        ff_log(d, id, why, now, 0, qi);
        if (id == d->ff_cursor) d->ff_anchor = id, d->ff_cursor = ff_next_anchor(d, id + 1);
    }
    if (d->has_net && is_flow(d, t)) return net_start(c, id, now);
    if (is_link(t->res)) {
        int dir = t->res == KV_RES_H2D ? 0 : 1;
        sim_dir *L = &d->dir[dir];
        if (!sim_time_ok(t->fixed_s) || !(t->work >= 0)) {
            c->bad = id;
            return 0;
        }
        if (L->n == 0) L->since = now;
        L->f[L->n++] = (sim_flow){id, t->work, 0, now + sim_from_s(t->fixed_s)};
        if (rerate(c, dir, now)) return -1;
        /* the other direction's copies slow down while this one is in flight */
        return L->n == 1 ? rerate(c, 1 - dir, now) : 0;
    }
    return complete_at(c, now, t->fixed_s, id);
}

/* A copy ended: it leaves its direction, whose other copies speed up. */
static int end_flow(sim_des *c, int32_t id, sim_time now) {
    sim_des *d = c;
    int dir = TK(d, id)->res == KV_RES_H2D ? 0 : 1;
    sim_dir *L = &d->dir[dir];
    for (int i = 0; i < L->n; i++)
        if (L->f[i].task == id) {
            L->f[i] = L->f[--L->n];
            break;
        }
    /* the busy time of a link is the union of its copies' lifetimes */
    if (L->n == 0) {
        c->st.busy[dir == 0 ? KV_RES_H2D : KV_RES_D2H] += now - L->since;
        return rerate(c, 1 - dir, now);
    }
    return rerate(c, dir, now);
}

/* ---- critical-path nodes ----------------------------------------------------------------- */

/* One node's share of the critical path's sums (the walk from the task that ended last stops at
 * the first node that ended by the first token, t0 > 0; only what falls after t0 counts). Integer
 * sums: the same whatever the order, so a folded prefix and a final walk add up alike. */
static inline void crit_add(sim_time *op, sim_time *wait, sim_time t0, int xop, sim_time xs, sim_time xe, int has_par, sim_time pe) {
    if (t0 > 0 && xe <= t0) return;
    op[xop] += xe - (xs > t0 ? xs : t0);
    if (has_par && pe > t0) *wait += xs - pe;
}

/* Node k's share (its parent's end, where the parent was folded: the folded part's newest). */
static inline void cnode_add(const sim_des *d, sim_time *op, sim_time *wait, sim_time t0, int32_t k) {
    const sim_cnode *x = &d->cn[k];
    int32_t p = x->parent;
    crit_add(op, wait, t0, x->op, time_get(&x->start), time_get(&x->end), p != -1, p >= 0 ? time_get(&d->cn[p].end) : d->cf_end);
}

/* Folds the part of the critical-path chains that every chain still able to grow shares: the
 * strict ancestors of the nodes' lowest common ancestor, over the nodes that the running tasks
 * run[0..nrun) will hang from and the node of the task that ended last. Only at a safe point:
 * between events, outside a replay, or at the end of a replay's period once its pending last end
 * has been released (no virtual node then holds a reference that no running task shows).
 * Whatever ends last from now on, its path runs through them, so their shares are final. Returns
 * the nodes freed. */
static int32_t crit_fold_from(sim_des *d, const int32_t *run, int nrun) {
    if (d->mark >= 0 && d->mark_end < 0) return 0; /* the first token's time is not known yet */
    sim_time t0 = d->mark >= 0 ? d->mark_end : 0;
    /* folds made before the first token's task was even added (a small streaming window) took t0
     * as 0; everything they folded ended before it, where nothing counts */
    if (t0 > 0 && d->cf_end <= t0) memset(d->cf_op, 0, sizeof d->cf_op), d->cf_wait = 0;
    int32_t f[SIM_MAX_REP * KV_Q_COUNT + 1];
    int nf = 0;
    for (int r = 0; r <= nrun; r++) {
        int32_t c = d->last_node;
        /* a running task that no end let start (the run's first tasks) will root a chain of its
         * own: nothing is shared yet */
        if (r < nrun && (c = TK(d, run[r])->cpar) < 0) return 0;
        int dup = c < 0;
        for (int i = 0; i < nf && !dup; i++) dup = f[i] == c;
        if (!dup) f[nf++] = c;
    }
    if (nf == 0) return 0;
    /* the chains walked back together, the newest node first (a parent is older than its
     * children, so no meeting point is passed), merging as they meet: they meet a few nodes back,
     * and only the nodes newer than the ancestor are visited (the wrap-safe difference of serials
     * orders nodes made less than 2^31 apart, far more than are ever in use) */
    while (nf > 1) {
        int b = 0;
        for (int i = 1; i < nf; i++)
            if ((int32_t)(d->cn[f[i]].serial - d->cn[f[b]].serial) > 0) b = i;
        int32_t up = d->cn[f[b]].parent;
        if (up < 0) return 0; /* a chain of its own: nothing is shared yet */
        f[b] = up;
        for (int i = 0; i < nf; i++)
            if (i != b && f[i] == up) {
                f[b] = f[--nf];
                break;
            }
    }
    int32_t L = f[0]; /* a node: every entry of f is one */
    if (d->cn[L].parent < 0) return 0;
    int32_t k = d->cn[L].parent, freed = 0;
    sim_time newest = time_get(&d->cn[k].end);
    while (k >= 0) {
        sim_cnode *x = &d->cn[k];
        int32_t p = x->parent;
        cnode_add(d, d->cf_op, &d->cf_wait, t0, k);
        x->parent = d->cnfree, d->cnfree = k, freed++;
        k = p;
    }
    d->cn[L].parent = CN_FOLDED, d->cf_end = newest;
    d->cnlive -= freed;
    return freed;
}

/* The tasks running now, one per busy queue. */
static int crit_running(const sim_des *d, int32_t *run) {
    int n = 0;
    for (int qi = 0; qi < d->nq; qi++)
        if (d->q[qi].running >= 0) run[n++] = d->q[qi].running;
    return n;
}

static int32_t crit_fold(sim_des *d) {
    int32_t run[SIM_MAX_REP * KV_Q_COUNT];
    return crit_fold_from(d, run, crit_running(d, run));
}

/* The live nodes under a frontier (the nodes the running tasks run[0..nrun) hang from, then the
 * last end's), each once in the order first reached walking up, into out[0..n) in a form that
 * compares across periods: times relative to T, the parent as an index (-1: folded), no serial;
 * ids[i] the node, fr[r] the index frontier entry r hangs from. -1 unless they form one tree
 * whose root's parent was folded, of at most max nodes. */
static int32_t crit_tree(const sim_des *d, const int32_t *run, int nrun, sim_time T, int32_t *ids, sim_cnode *out, int32_t *fr, int32_t max) {
    int32_t n = 0, roots = 0;
    for (int r = 0; r <= nrun; r++) {
        int32_t k = r < nrun ? TK(d, run[r])->cpar : d->last_node;
        if (k < 0) return -1;
        fr[r] = -1;
        while (k >= 0) {
            int32_t at = -1;
            for (int32_t i = 0; i < n && at < 0; i++)
                if (ids[i] == k) at = i;
            if (fr[r] < 0) fr[r] = at >= 0 ? at : n;
            if (at >= 0) break;
            if (n == max) return -1;
            ids[n++] = k;
            k = d->cn[k].parent;
            if (k == CN_FOLDED) roots++;
            else if (k < 0) return -1; /* a chain of its own: nothing folded under it */
        }
    }
    if (roots != 1) return -1;
    for (int32_t i = 0; i < n; i++) {
        const sim_cnode *x = &d->cn[ids[i]];
        int32_t p = -1;
        if (x->parent != CN_FOLDED)
            for (int32_t j = 0; j < n && p < 0; j++)
                if (ids[j] == x->parent) p = j;
        out[i] = (sim_cnode){time_get(&x->start) - T, time_get(&x->end) - T, p, x->refs, 0, x->op};
    }
    return n;
}

static inline int32_t cnode_new(sim_des *d) {
    int32_t k = d->cnfree;
    d->cnlive++;
    if (k >= 0) {
        d->cnfree = d->cn[k].parent;
        return k;
    }
    if (grow((void **)&d->cn, &d->cncap, d->ncn + 1, sizeof *d->cn)) return -1;
    return d->ncn++;
}

/* A node nobody refers to any more goes, and with it the part of its chain only it kept. */
static inline void cnode_drop(sim_des *d, int32_t k) {
    while (k >= 0 && d->cn[k].refs == 0 && k != d->last_node) {
        int32_t p = d->cn[k].parent;
        d->cn[k].parent = d->cnfree;
        d->cnfree = k;
        d->cnlive--;
        k = p;
        if (k >= 0) d->cn[k].refs--;
    }
}

int32_t sim_des_crit_nodes(const sim_des *d) { return d->stream ? d->ncn : 0; }

/* With the whole graph kept, the tasks themselves are the nodes (no node is made). */
void sim_des_crit_sums(const sim_des *d, sim_time t0, sim_time op[KV_OP_COUNT], sim_time *wait) {
    memset(op, 0, sizeof(sim_time) * KV_OP_COUNT), *wait = 0;
    if (!d->stream) {
        for (int32_t i = d->st.last; i >= 0;) {
            const sim_task *t = TK(d, i);
            if (t0 > 0 && t->end <= t0) break;
            crit_add(op, wait, t0, t->op, t->start, t->end, t->crit >= 0, t->crit >= 0 ? TK(d, t->crit)->end : 0);
            i = t->crit;
        }
        return;
    }
    int32_t k = d->last_node;
    for (; k >= 0; k = d->cn[k].parent) {
        if (t0 > 0 && d->cn[k].end <= t0) return; /* and so did everything folded */
        cnode_add(d, op, wait, t0, k);
    }
    if (k == CN_FOLDED) {
        for (int i = 0; i < KV_OP_COUNT; i++) op[i] += d->cf_op[i];
        *wait += d->cf_wait;
    }
}
sim_time sim_des_mark_end(const sim_des *d) { return d->mark_end; }
sim_time sim_des_last_end(const sim_des *d) { return d->last_end; }

/* ---- the event loop ------------------------------------------------------------------------ */

static int try_start_at(sim_des *c, int qi, sim_time now, int32_t why) {
    sim_queue *q = &c->q[qi];
    if (q->running >= 0 || q->head >= q->n || c->bad >= 0) return 0;
    sim_task *t = TK(c, q->seq[q->head]);
    if (t->deps_left > 0) return 0;
    /* the node of the task whose completion lets this one start: referred to until this one ends */
    if (c->stream) {
        t->cpar = why >= 0 ? TK(c, why)->cnode : -1;
        if (t->cpar >= 0) c->cn[t->cpar].refs++;
    }
    return try_start(c, qi, now, why);
}

static void start_run(sim_des *d) {
    d->started = 1;
    const char *ff = getenv("KVPR_SIM_FF");
    d->ff_on = !d->has_net && !(ff && !strcmp(ff, "0"));
    d->rgi = 0;
    d->ff_cursor = ff_next_anchor(d, 0);
    d->checked = d->n;
    d->dir[0].n = d->dir[1].n = 0;
    if (d->has_net) {
        sim_netstate *ns = d->ns;
        ns->nf = 0, ns->last = 0;
        memset(ns->nact, 0, sizeof ns->nact);
        memset(ns->sat, 0, sizeof ns->sat);
        memset(ns->busy, 0, sizeof ns->busy);
        memset(ns->sat_t, 0, sizeof ns->sat_t);
        memset(ns->bytes, 0, sizeof ns->bytes);
    }
    for (int q = 0; q < d->nq; q++)
        if (try_start_at(d, q, 0, -1)) d->nomem = 1;
}

/* Streaming: hands finished tasks, in id order, to the retire callback. */
static void retire(sim_des *d) {
    int32_t b = d->base;
    while (b < d->n && TK(d, b)->fin) b++;
    /* handed over as stretches contiguous in the ring (two where it wraps) */
    for (int32_t i = d->base; i < b && d->retire;) {
        int32_t a = i & d->tmask, len = b - i;
        if (len > d->cap - a) len = d->cap - a;
        d->retire(d->retire_ctx, d->t + a, len);
        i += len;
    }
    d->base = b;
    if (d->stream) d->off = d->base; /* their places in the ring are free */
}

/* Runs the completion pending on queue qi (the next one: ev_next); 0 if the run stopped. */
static int step_event_at(sim_des *d, int qi) {
    if (d->bad >= 0 || d->nomem) return 0;
    /* between events, outside a replay (whose virtual nodes hold references no queue shows): a
     * safe point to fold; once the nodes in use double, so that a fold costs O(1) per node made */
    if (d->cnlive >= d->cf_next) {
        crit_fold(d);
        d->cf_next = 2 * d->cnlive + CF_FIRST;
    }
    sim_event e = ev_take(d, qi);
    sim_task *t = TK(d, e.task);
    sim_queue *q = &d->q[qi];
    sim_des_stats *st = &d->st;
    st->events++;
    sim_time now = d->now = e.t;
    time_set(&t->end, now);
    t->fin = 1;
    if (d->ff_on) ff_log(d, e.task, -1, now, 1, 0);
    int32_t nd = -1;
    if (d->stream) {
        if ((nd = cnode_new(d)) < 0) {
            d->nomem = 1;
            return 0;
        }
        cnode_set(&d->cn[nd], t->start, now, t->cpar, ++d->cserial, t->op);
        t->cnode = nd;
    }
    if (!is_link(t->res)) st->busy[t->res] += now - t->start;
    q->running = -1;
    d->done++;
    int32_t old_last = d->last_node;
    if (st->last < 0 || now >= d->last_end) st->last = e.task, time_set(&d->last_end, now), d->last_node = nd;
    if (is_link(t->res) || (d->has_net && t->res == KV_RES_CPU))
        if (d->has_net ? net_end(d, e.task, now) : end_flow(d, e.task, now)) goto nomem;
    for (int i = 0; i < t->nsucc_in; i++) {
        sim_task *u = TK(d, t->succ_in[i]);
        if (--u->deps_left == 0 && try_start_at(d, u->rep * KV_Q_COUNT + u->queue, now, e.task)) goto nomem;
    }
    for (int32_t k = t->succ_head, nx; k >= 0; k = nx) {
        sim_task *u = TK(d, d->e[k].to);
        nx = d->e[k].next;
        if (--u->deps_left == 0 && try_start_at(d, u->rep * KV_Q_COUNT + u->queue, now, e.task)) goto nomem;
        if (d->stream) d->e[k].next = d->efree, d->efree = k; /* consumed */
    }
    if (d->stream) t->succ_head = t->succ_tail = -1;
    if (try_start_at(d, qi, now, e.task)) goto nomem;
    if (e.task == d->mark) {
        d->mark_end = now;
        memcpy(st->busy_at_mark, st->busy, sizeof st->busy);
        for (int k = 0; k < 2; k++)
            if (d->dir[k].n > 0) st->busy_at_mark[k == 0 ? KV_RES_H2D : KV_RES_D2H] += now - d->dir[k].since;
    }
    if (d->stream) {
        cnode_drop(d, nd);
        if (old_last >= 0 && old_last != d->last_node) cnode_drop(d, old_last);
    }
    if (d->ff_anchor >= 0) {
        int32_t A = d->ff_anchor;
        d->ff_anchor = -1;
        ff_checkpoint(d, A);
        if (d->ff_broken || d->nomem) return 0;
    }
    return 1;
nomem:
    d->nomem = 1;
    return 0;
}

void sim_des_stream(sim_des *d, int32_t window, sim_retire_fn fn, void *ctx) {
    d->stream = 1;
    d->window = window > 0 ? window : 1;
    d->retire = fn, d->retire_ctx = ctx;
}

int sim_des_overrun(const sim_des *d) { return d->overrun; }
void sim_des_window(sim_des *d, int32_t window) { d->window = window > 0 ? window : 1; }

/* Runs the completions in turn while the next one's task is at most `last`, until the run stops. */
static void run_events(sim_des *d, int64_t last) {
    for (int qi; !d->overrun && (qi = ev_next(d)) >= 0 && d->ev[qi].task <= last;)
        if (!step_event_at(d, qi)) break;
}

/* The tasks added since the last look, now with their dependencies. */
static void check_new(sim_des *d) {
    int32_t n = d->n;
    if (d->started && !d->overrun)
        for (int32_t i = d->checked; i < n; i++)
            if (is_late(d, i)) {
                d->overrun = 1;
                break;
            }
    d->checked = n;
}

void sim_des_pump(sim_des *d) {
    if (!d->stream || d->overrun) return;
    if (!d->started) {
        if (d->n < d->window) return;
        start_run(d);
    }
    check_new(d);
    /* events whose task is a window behind the newest: its successors and its queues' next tasks
     * are (almost always) added by then; check_new catches the rest */
    run_events(d, (int64_t)d->n - d->window);
    retire(d);
}

kv_status sim_des_run(sim_des *d, sim_des_stats *st) {
    if (!d->started) start_run(d);
    if (d->stream) check_new(d);
    run_events(d, INT64_MAX);
    if (d->stream && !d->overrun) retire(d);
    *st = d->st;
    st->makespan = d->now;
    if (d->overrun) return KV_OK; /* the caller looks at sim_des_overrun and runs the whole graph */
    if (d->nomem) return kv_errorf(KV_ENOMEM, "sim: out of memory for events");
    if (d->ff_broken) return kv_errorf(KV_EINVAL, "sim: fast-forward found a queue out of order (internal error; KVPR_SIM_FF=0 runs without it)");
    if (d->bad >= 0) {
        sim_task *t = TK(d, d->bad);
        return kv_errorf(KV_EINVAL, "simulated time out of range: %s at step %d layer %d mb %d would take %.3g s (the profile's values are absurd)",
                         kv_op_name((kv_op)t->op), t->step, t->layer, t->mb,
                         is_link(t->res) ? t->fixed_s + t->work / d->link[t->res == KV_RES_H2D ? 0 : 1].rate : t->fixed_s);
    }
    if (d->done != d->n) return kv_errorf(KV_EINVAL, "sim: %d of %d tasks never ran (dependency cycle or order conflict)", d->n - d->done, d->n);
    return KV_OK;
}
