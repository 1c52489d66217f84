/* sim_des: event heap, in-order queues, links shared by their copies, duplex coupling. */
#include "des.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sim_time t;
    uint64_t seq; /* insertion order breaks ties: deterministic runs */
    int32_t task;
    uint32_t ver; /* a re-rated copy leaves its old completion event behind; stale ones are skipped */
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

/* A finished task as the critical path needs it. A node lives while a task that it let start is
 * still running or a node refers to it (or it is the task that ended last), so a streamed run
 * keeps the chains that can still be the critical path, not the whole run. */
typedef struct {
    sim_time start, end;
    int32_t parent, refs; /* parent: node of the task that let this one start (-1: none) */
    uint8_t op;
} sim_cnode;

struct sim_des {
    sim_task *t;      /* task id i is t[i - off] (off > 0 only while streaming) */
    int32_t n, cap, off;
    sim_edge *e;      /* successor lists; free list through next (streaming frees them) */
    int32_t ne, ecap, efree;
    int32_t *scratch; /* sim_des_succ's answer */
    int32_t scap;
    sim_cnode *cn;
    int32_t ncn, cncap, cnfree;
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
    sim_event *heap;
    int32_t hn, hcap;
    uint64_t seq;
    int32_t mark;
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

#define TK(d, id) (&(d)->t[(id) - (d)->off])

/* Streaming: drop retired tasks from the front of the task array and started ones from the
 * front of a queue's program order, once they are at least half of it (amortised O(1)). */
static void compact(sim_des *d, sim_queue *r) {
    int32_t gone = d->base - d->off, live = d->n - d->base;
    if (gone >= 4096 && gone >= live) {
        memmove(d->t, d->t + gone, (size_t)live * sizeof *d->t);
        d->off = d->base;
    }
    if (r->head >= 4096 && r->head >= r->n - r->head) {
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
    free(d->heap);
    free(d->ns);
    for (int i = 0; i < SIM_MAX_REP * KV_Q_COUNT; i++) free(d->q[i].seq);
    free(d);
}

void sim_des_reset(sim_des *d) {
    d->n = d->ne = d->hn = 0;
    d->off = 0, d->efree = -1;
    d->ncn = 0, d->cnfree = -1;
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
}

void sim_des_mark(sim_des *d, int32_t id) { d->mark = id; }

int32_t sim_des_task(sim_des *d, kv_op op, kv_queue queue, int step, int layer, int mb) {
    if ((unsigned)queue >= KV_Q_COUNT) return -1;
    sim_queue *r = &d->q[d->rep * KV_Q_COUNT + queue];
    if (d->stream) compact(d, r);
    if (grow((void **)&d->t, &d->cap, d->n - d->off + 1, sizeof *d->t) ||
        grow((void **)&r->seq, &r->cap, r->n + 1, sizeof *r->seq))
        return -1;
    sim_task *t = &d->t[d->n - d->off];
    /* every field by hand: a memset of the whole record was a tenth of a sweep's time */
    t->bytes = t->flops = t->fixed_s = t->work = 0;
    t->deps_left = 0;
    t->succ_head = t->succ_tail = -1;
    t->nsucc_in = 0;
    t->cpar = t->cnode = -1;
    t->fin = 0;
    t->ver = 0;
    t->op = (uint8_t)op;
    t->queue = (uint8_t)queue;
    t->rep = (uint8_t)d->rep;
    t->res = (uint8_t)kv_queue_res(queue);
    t->step = step, t->layer = layer, t->mb = mb;
    t->crit = -1;
    t->start = t->end = -1;
    r->seq[r->n++] = d->n;
    return d->n++;
}

/* from -> to: appended to from's successor list. A dependency on a task that has finished (a
 * streamed run) is already met: nothing to wait for. */
static int add_edge(sim_des *d, int32_t from, int32_t to) {
    if (from < d->base || TK(d, from)->fin) return 0;
    sim_task *f = TK(d, from);
    TK(d, to)->deps_left++;
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

/* A streamed run added a task that, with the whole graph present, would already have started
 * (ready, heading an idle queue, everything it waits for done): the streamed timeline would
 * differ, so the run says so and the caller runs it again with the whole graph. */
static void check_late(sim_des *d, int32_t id) {
    sim_task *t = TK(d, id);
    const sim_queue *q = &d->q[t->rep * KV_Q_COUNT + t->queue];
    if (d->started && t->deps_left == 0 && q->running < 0 && q->seq[q->head] == id) d->overrun = 1;
}

int32_t sim_des_add(sim_des *d, kv_op op, kv_queue q, int step, int layer, int mb, const int32_t *deps, int ndeps, sim_task **out) {
    int32_t id = sim_des_task(d, op, q, step, layer, mb);
    if (id < 0) return -1;
    for (int i = 0; i < ndeps; i++) {
        if (deps[i] < 0 || deps[i] >= id) return -1;
        if (add_edge(d, deps[i], id)) return -1;
    }
    *out = TK(d, id);
    return id;
}

sim_task *sim_des_get(sim_des *d, int32_t id) { return id >= d->off && id < d->n ? TK(d, id) : NULL; }
int32_t sim_des_count(const sim_des *d) { return d->n; }

kv_status sim_des_dep(sim_des *d, int32_t from, int32_t to) {
    if (from < d->base || to < d->base || from >= d->n || to >= d->n || from == to)
        return kv_errorf(KV_EINVAL, "sim: bad dependency %d -> %d", from, to);
    if (add_edge(d, from, to)) return kv_errorf(KV_ENOMEM, "sim: out of memory for dependencies");
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

/* ---- heap ------------------------------------------------------------------------- */

static int ev_less(const sim_event *a, const sim_event *b) { return a->t < b->t || (a->t == b->t && a->seq < b->seq); }

static int push(sim_des *d, sim_time t, int32_t task, uint32_t ver) {
    if (grow((void **)&d->heap, &d->hcap, d->hn + 1, sizeof *d->heap)) return -1;
    sim_event e = {t, d->seq++, task, ver};
    int32_t i = d->hn++;
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (!ev_less(&e, &d->heap[p])) break;
        d->heap[i] = d->heap[p];
        i = p;
    }
    d->heap[i] = e;
    return 0;
}

static sim_event pop(sim_des *d) {
    sim_event top = d->heap[0], last = d->heap[--d->hn];
    int32_t i = 0;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= d->hn) break;
        if (c + 1 < d->hn && ev_less(&d->heap[c + 1], &d->heap[c])) c++;
        if (!ev_less(&d->heap[c], &last)) break;
        d->heap[i] = d->heap[c];
        i = c;
    }
    if (d->hn) d->heap[i] = last;
    return top;
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
    return push(c, base + sim_from_s(dt), id, TK(c, id)->ver);
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
        TK(d, f->task)->ver++;
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
        TK(d, f->task)->ver++;
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
    t->ver++;
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

static int32_t cnode_new(sim_des *d) {
    int32_t k = d->cnfree;
    if (k >= 0) {
        d->cnfree = d->cn[k].parent;
        return k;
    }
    if (grow((void **)&d->cn, &d->cncap, d->ncn + 1, sizeof *d->cn)) return -1;
    return d->ncn++;
}

/* A node nobody refers to any more goes, and with it the part of its chain only it kept. */
static void cnode_drop(sim_des *d, int32_t k) {
    while (k >= 0 && d->cn[k].refs == 0 && k != d->last_node) {
        int32_t p = d->cn[k].parent;
        d->cn[k].parent = d->cnfree;
        d->cnfree = k;
        k = p;
        if (k >= 0) d->cn[k].refs--;
    }
}

/* With the whole graph kept, the tasks themselves are the nodes (no node is made). */
void sim_des_crit(const sim_des *d, int32_t node, kv_op *op, sim_time *start, sim_time *end, int32_t *parent) {
    if (!d->stream) {
        const sim_task *t = &d->t[node];
        *op = (kv_op)t->op, *start = t->start, *end = t->end, *parent = t->crit;
        return;
    }
    const sim_cnode *c = &d->cn[node];
    *op = (kv_op)c->op, *start = c->start, *end = c->end, *parent = c->parent;
}

int32_t sim_des_crit_last(const sim_des *d) { return d->stream ? d->last_node : d->st.last; }
sim_time sim_des_mark_end(const sim_des *d) { return d->mark_end; }

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
    while (d->base < d->n) {
        sim_task *t = TK(d, d->base);
        if (!t->fin) break;
        if (d->retire) d->retire(d->retire_ctx, t);
        d->base++;
    }
}

/* Pops and runs one event; 0 when the heap is empty or the run stopped. */
static int step_event(sim_des *d) {
    if (d->hn == 0 || d->bad >= 0 || d->nomem) return 0;
    sim_event e = pop(d);
    if (e.task < d->base) return 1; /* stale (a re-rated copy's old completion), its task long gone */
    sim_task *t = TK(d, e.task);
    int qi = t->rep * KV_Q_COUNT + t->queue;
    sim_queue *q = &d->q[qi];
    if (q->running != e.task || e.ver != t->ver) return 1; /* stale: the copy was re-rated */
    sim_des_stats *st = &d->st;
    st->events++;
    sim_time now = d->now = e.t;
    t->end = now;
    t->fin = 1;
    int32_t nd = -1;
    if (d->stream) {
        if ((nd = cnode_new(d)) < 0) {
            d->nomem = 1;
            return 0;
        }
        d->cn[nd] = (sim_cnode){t->start, now, t->cpar, 0, t->op};
        t->cnode = nd;
    }
    if (!is_link(t->res)) st->busy[t->res] += now - t->start;
    q->running = -1;
    d->done++;
    int32_t old_last = d->last_node;
    if (st->last < 0 || now >= d->last_end) st->last = e.task, d->last_end = now, d->last_node = nd;
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

/* The tasks added since the last look, now with their dependencies. */
static void check_new(sim_des *d) {
    for (; d->checked < d->n && !d->overrun; d->checked++) check_late(d, d->checked);
}

void sim_des_pump(sim_des *d) {
    if (!d->stream || d->overrun) return;
    if (!d->started) {
        if (d->n < d->window) return;
        start_run(d);
    }
    check_new(d);
    /* events whose task is a window behind the newest: its successors and its queues' next tasks
     * are (almost always) added by then; check_late catches the rest */
    while (d->hn > 0 && d->heap[0].task + d->window <= d->n && !d->overrun)
        if (!step_event(d)) break;
    retire(d);
}

kv_status sim_des_run(sim_des *d, sim_des_stats *st) {
    if (!d->started) start_run(d);
    if (d->stream) check_new(d);
    while (!d->overrun && step_event(d)) {
    }
    if (d->stream && !d->overrun) retire(d);
    *st = d->st;
    st->makespan = d->now;
    if (d->overrun) return KV_OK; /* the caller looks at sim_des_overrun and runs the whole graph */
    if (d->nomem) return kv_errorf(KV_ENOMEM, "sim: out of memory for events");
    if (d->bad >= 0) {
        sim_task *t = TK(d, d->bad);
        return kv_errorf(KV_EINVAL, "simulated time out of range: %s at step %d layer %d mb %d would take %.3g s (the profile's values are absurd)",
                         kv_op_name((kv_op)t->op), t->step, t->layer, t->mb,
                         is_link(t->res) ? t->fixed_s + t->work / d->link[t->res == KV_RES_H2D ? 0 : 1].rate : t->fixed_s);
    }
    if (d->done != d->n) return kv_errorf(KV_EINVAL, "sim: %d of %d tasks never ran (dependency cycle or order conflict)", d->n - d->done, d->n);
    return KV_OK;
}
