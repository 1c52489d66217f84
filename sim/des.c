/* sim_des: event heap, in-order queues, links shared by their copies, duplex coupling. */
#include "des.h"
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

struct sim_des {
    sim_task *t;
    int32_t n, cap;
    int32_t *edges; /* (from, to) pairs until run, then the CSR successor array */
    int32_t ne, ecap;
    int32_t *succ;
    int32_t succ_cap;
    sim_queue q[KV_Q_COUNT];
    sim_dir dir[2];
    sim_link link[2];
    sim_event *heap;
    int32_t hn, hcap;
    uint64_t seq;
    int32_t mark;
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

sim_des *sim_des_new(void) {
    sim_des *d = calloc(1, sizeof *d);
    if (d) sim_des_reset(d);
    return d;
}

void sim_des_free(sim_des *d) {
    if (!d) return;
    free(d->t);
    free(d->edges);
    free(d->succ);
    free(d->heap);
    for (int i = 0; i < KV_Q_COUNT; i++) free(d->q[i].seq);
    free(d);
}

void sim_des_reset(sim_des *d) {
    d->n = d->ne = d->hn = 0;
    d->seq = 0;
    for (int i = 0; i < KV_Q_COUNT; i++) d->q[i].n = d->q[i].head = 0, d->q[i].running = -1;
    d->dir[0].n = d->dir[1].n = 0;
    d->link[0] = d->link[1] = (sim_link){1, 1};
    d->mark = -1;
}

void sim_des_mark(sim_des *d, int32_t id) { d->mark = id; }

int32_t sim_des_task(sim_des *d, kv_op op, kv_queue queue, int step, int layer, int mb) {
    if ((unsigned)queue >= KV_Q_COUNT) return -1;
    sim_queue *r = &d->q[queue];
    if (grow((void **)&d->t, &d->cap, d->n + 1, sizeof *d->t) ||
        grow((void **)&r->seq, &r->cap, r->n + 1, sizeof *r->seq))
        return -1;
    sim_task *t = &d->t[d->n];
    /* every field by hand: a memset of the whole record was a tenth of a sweep's time */
    t->bytes = t->flops = t->fixed_s = t->work = 0;
    t->deps_left = t->succ_off = t->nsucc = 0;
    t->ver = 0;
    t->op = (uint8_t)op;
    t->queue = (uint8_t)queue;
    t->res = (uint8_t)kv_queue_res(queue);
    t->step = step, t->layer = layer, t->mb = mb;
    t->crit = -1;
    t->start = t->end = -1;
    r->seq[r->n++] = d->n;
    return d->n++;
}

int32_t sim_des_add(sim_des *d, kv_op op, kv_queue q, int step, int layer, int mb, const int32_t *deps, int ndeps, sim_task **out) {
    int32_t id = sim_des_task(d, op, q, step, layer, mb);
    if (id < 0 || grow((void **)&d->edges, &d->ecap, 2 * (d->ne + ndeps), sizeof *d->edges)) return -1;
    for (int i = 0; i < ndeps; i++) {
        if (deps[i] < 0 || deps[i] >= id) return -1;
        d->edges[2 * d->ne] = deps[i];
        d->edges[2 * d->ne + 1] = id;
        d->ne++;
    }
    *out = &d->t[id];
    return id;
}

sim_task *sim_des_get(sim_des *d, int32_t id) { return &d->t[id]; }
int32_t sim_des_count(const sim_des *d) { return d->n; }

kv_status sim_des_dep(sim_des *d, int32_t from, int32_t to) {
    if (from < 0 || to < 0 || from >= d->n || to >= d->n || from == to)
        return kv_errorf(KV_EINVAL, "sim: bad dependency %d -> %d", from, to);
    if (grow((void **)&d->edges, &d->ecap, 2 * (d->ne + 1), sizeof *d->edges))
        return kv_errorf(KV_ENOMEM, "sim: out of memory for dependencies");
    d->edges[2 * d->ne] = from;
    d->edges[2 * d->ne + 1] = to;
    d->ne++;
    return KV_OK;
}

const int32_t *sim_des_succ(const sim_des *d, int32_t id, int32_t *n) {
    *n = d->t[id].nsucc;
    return d->succ + d->t[id].succ_off;
}

void sim_des_links(sim_des *d, sim_link h2d, sim_link d2h) {
    d->link[0] = h2d;
    d->link[1] = d2h;
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

typedef struct {
    sim_des *d;
    int32_t bad;    /* task whose duration is not a representable time, -1 if none */
    sim_des_stats *st;
} run_ctx;

static int is_link(int res) { return res == KV_RES_H2D || res == KV_RES_D2H; }

/* Schedules a task's completion `dt` seconds after `base`; a duration the clock cannot hold
 * stops the run (reported by sim_des_run) instead of overflowing. */
static int complete_at(run_ctx *c, sim_time base, double dt, int32_t id) {
    if (!sim_time_ok(dt)) {
        c->bad = id;
        return 0;
    }
    return push(c->d, base + sim_from_s(dt), id, c->d->t[id].ver);
}

/* The copies in flight on one direction changed (or the other direction started or stopped):
 * each gets rate / n, times the duplex fraction while the other direction copies. */
static int rerate(run_ctx *c, int dir, sim_time now) {
    sim_des *d = c->d;
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
        d->t[f->task].ver++;
        if (complete_at(c, f->upd, f->rem / r, f->task)) return -1;
    }
    return 0;
}

static int try_start(run_ctx *c, int qi, sim_time now, int32_t why) {
    sim_des *d = c->d;
    sim_queue *q = &d->q[qi];
    if (q->running >= 0 || q->head >= q->n || c->bad >= 0) return 0;
    int32_t id = q->seq[q->head];
    sim_task *t = &d->t[id];
    if (t->deps_left > 0) return 0;
    q->head++;
    q->running = id;
    t->start = now;
    t->crit = why;
    t->ver++;
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
static int end_flow(run_ctx *c, int32_t id, sim_time now) {
    sim_des *d = c->d;
    int dir = d->t[id].res == KV_RES_H2D ? 0 : 1;
    sim_dir *L = &d->dir[dir];
    for (int i = 0; i < L->n; i++)
        if (L->f[i].task == id) {
            L->f[i] = L->f[--L->n];
            break;
        }
    /* the busy time of a link is the union of its copies' lifetimes */
    if (L->n == 0) {
        c->st->busy[dir == 0 ? KV_RES_H2D : KV_RES_D2H] += now - L->since;
        return rerate(c, 1 - dir, now);
    }
    return rerate(c, dir, now);
}

static kv_status build_csr(sim_des *d) {
    if (grow((void **)&d->succ, &d->succ_cap, d->ne + 1, sizeof *d->succ))
        return kv_errorf(KV_ENOMEM, "sim: out of memory");
    for (int32_t i = 0; i < d->n; i++) d->t[i].nsucc = 0, d->t[i].deps_left = 0;
    for (int32_t e = 0; e < d->ne; e++) d->t[d->edges[2 * e]].nsucc++, d->t[d->edges[2 * e + 1]].deps_left++;
    int32_t off = 0;
    for (int32_t i = 0; i < d->n; i++) {
        d->t[i].succ_off = off;
        off += d->t[i].nsucc;
        d->t[i].nsucc = 0;
    }
    for (int32_t e = 0; e < d->ne; e++) {
        sim_task *f = &d->t[d->edges[2 * e]];
        d->succ[f->succ_off + f->nsucc++] = d->edges[2 * e + 1];
    }
    return KV_OK;
}

kv_status sim_des_run(sim_des *d, sim_des_stats *st) {
    kv_status s = build_csr(d);
    if (s) return s;
    memset(st, 0, sizeof *st);
    run_ctx c = {d, -1, st};
    st->last = -1;
    d->dir[0].n = d->dir[1].n = 0;
    for (int q = 0; q < KV_Q_COUNT; q++)
        if (try_start(&c, q, 0, -1)) goto nomem;
    int32_t done = 0;
    sim_time now = 0;
    while (d->hn > 0 && c.bad < 0) {
        sim_event e = pop(d);
        sim_task *t = &d->t[e.task];
        sim_queue *q = &d->q[t->queue];
        if (q->running != e.task || e.ver != t->ver) continue; /* stale: the copy was re-rated */
        st->events++;
        now = e.t;
        t->end = now;
        if (!is_link(t->res)) st->busy[t->res] += now - t->start;
        q->running = -1;
        done++;
        if (st->last < 0 || now >= d->t[st->last].end) st->last = e.task;
        if (is_link(t->res) && end_flow(&c, e.task, now)) goto nomem;
        for (int32_t k = 0; k < t->nsucc; k++) {
            sim_task *u = &d->t[d->succ[t->succ_off + k]];
            if (--u->deps_left == 0 && try_start(&c, u->queue, now, e.task)) goto nomem;
        }
        if (try_start(&c, t->queue, now, e.task)) goto nomem;
        if (e.task == d->mark) {
            memcpy(st->busy_at_mark, st->busy, sizeof st->busy);
            for (int k = 0; k < 2; k++)
                if (d->dir[k].n > 0) st->busy_at_mark[k == 0 ? KV_RES_H2D : KV_RES_D2H] += now - d->dir[k].since;
        }
    }
    st->makespan = now;
    if (c.bad >= 0) {
        sim_task *t = &d->t[c.bad];
        return kv_errorf(KV_EINVAL, "simulated time out of range: %s at step %d layer %d mb %d would take %.3g s (the profile's values are absurd)",
                         kv_op_name((kv_op)t->op), t->step, t->layer, t->mb,
                         is_link(t->res) ? t->fixed_s + t->work / d->link[t->res == KV_RES_H2D ? 0 : 1].rate : t->fixed_s);
    }
    if (done != d->n) return kv_errorf(KV_EINVAL, "sim: %d of %d tasks never ran (dependency cycle or order conflict)", d->n - done, d->n);
    return KV_OK;
nomem:
    return kv_errorf(KV_ENOMEM, "sim: out of memory for events");
}
