/* sim_des: event heap, in-order resources, link coupling, memory accounting. */
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
    /* the in-flight copy of a link direction */
    double rem, rate;
    sim_time upd;
    uint32_t ver;
} sim_res;

struct sim_des {
    sim_task *t;
    int32_t n, cap;
    int32_t *edges; /* (from, to) pairs until run, then the CSR successor array */
    int32_t ne, ecap;
    int32_t *succ;
    int32_t succ_cap;
    sim_res r[KV_RES_COUNT];
    sim_link link[2];
    sim_event *heap;
    int32_t hn, hcap;
    uint64_t seq;
    double mem_cap, mem_resident;
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
    for (int i = 0; i < KV_RES_COUNT; i++) free(d->r[i].seq);
    free(d);
}

void sim_des_reset(sim_des *d) {
    d->n = d->ne = d->hn = 0;
    d->seq = 0;
    for (int i = 0; i < KV_RES_COUNT; i++) d->r[i].n = d->r[i].head = 0, d->r[i].running = -1;
    d->link[0] = d->link[1] = (sim_link){1, 1};
    d->mem_cap = 1e300;
    d->mem_resident = 0;
}

int32_t sim_des_task(sim_des *d, kv_op op, kv_resource res, int step, int layer, int mb) {
    sim_res *r = &d->r[res];
    if (grow((void **)&d->t, &d->cap, d->n + 1, sizeof *d->t) ||
        grow((void **)&r->seq, &r->cap, r->n + 1, sizeof *r->seq))
        return -1;
    sim_task *t = &d->t[d->n];
    memset(t, 0, sizeof *t);
    t->op = (uint8_t)op;
    t->res = (uint8_t)res;
    t->step = step, t->layer = layer, t->mb = mb;
    t->crit = -1;
    t->start = t->end = -1;
    r->seq[r->n++] = d->n;
    return d->n++;
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

void sim_des_memory(sim_des *d, double capacity, double resident) {
    d->mem_cap = capacity;
    d->mem_resident = resident;
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
    double mem;
    double peak;
    int32_t failed; /* task that did not fit, -1 if none */
    int oom;
} run_ctx;

static int is_link(int res) { return res == KV_RES_H2D || res == KV_RES_D2H; }

static double link_rate(sim_des *d, int res) {
    int other = res == KV_RES_H2D ? KV_RES_D2H : KV_RES_H2D;
    double r = d->link[res].rate;
    return d->r[other].running >= 0 ? r * d->link[res].duplex : r;
}

/* The other direction started or stopped: re-rate this direction's in-flight copy. */
static int rerate(run_ctx *c, int res, sim_time now) {
    sim_des *d = c->d;
    sim_res *r = &d->r[res];
    if (r->running < 0) return 0;
    double nr = link_rate(d, res);
    if (nr == r->rate) return 0;
    if (now > r->upd) {
        r->rem -= r->rate * sim_to_s(now - r->upd);
        if (r->rem < 0) r->rem = 0;
        r->upd = now;
    }
    r->rate = nr;
    r->ver++;
    return push(d, r->upd + sim_from_s(r->rem / r->rate), r->running, r->ver);
}

static int try_start(run_ctx *c, int res, sim_time now, int32_t why) {
    sim_des *d = c->d;
    sim_res *r = &d->r[res];
    if (r->running >= 0 || r->head >= r->n) return 0;
    int32_t id = r->seq[r->head];
    sim_task *t = &d->t[id];
    if (t->deps_left > 0) return 0;
    c->mem += t->mem_alloc;
    if (c->mem > d->mem_cap && t->mem_alloc > 0) {
        c->failed = id;
        c->oom = 1;
        return 0;
    }
    if (c->mem > c->peak) c->peak = c->mem;
    r->head++;
    r->running = id;
    t->start = now;
    t->crit = why;
    if (is_link(res)) {
        r->rem = t->work;
        r->upd = now + sim_from_s(t->fixed_s);
        r->rate = link_rate(d, res);
        r->ver++;
        if (push(d, r->upd + sim_from_s(r->rem / r->rate), id, r->ver)) return -1;
        return rerate(c, res == KV_RES_H2D ? KV_RES_D2H : KV_RES_H2D, now);
    }
    r->ver++;
    return push(d, now + sim_from_s(t->fixed_s), id, r->ver);
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
    run_ctx c = {d, d->mem_resident, d->mem_resident, -1, 0};
    memset(st, 0, sizeof *st);
    st->last = -1;
    if (d->mem_resident > d->mem_cap)
        return kv_errorf(KV_ENOFIT, "does not fit in GPU memory: %.2f GiB resident (weights/caches) > %.2f GiB capacity",
                         d->mem_resident / 1073741824.0, d->mem_cap / 1073741824.0);
    for (int r = 0; r < KV_RES_COUNT; r++)
        if (try_start(&c, r, 0, -1)) goto nomem;
    int32_t done = 0;
    sim_time now = 0;
    while (d->hn > 0 && !c.oom) {
        sim_event e = pop(d);
        sim_task *t = &d->t[e.task];
        sim_res *r = &d->r[t->res];
        if (r->running != e.task || e.ver != r->ver) continue; /* stale: the copy was re-rated */
        st->events++;
        now = e.t;
        t->end = now;
        st->busy[t->res] += now - t->start;
        r->running = -1;
        c.mem -= t->mem_free;
        done++;
        if (st->last < 0 || now >= d->t[st->last].end) st->last = e.task;
        if (is_link(t->res) && rerate(&c, t->res == KV_RES_H2D ? KV_RES_D2H : KV_RES_H2D, now)) goto nomem;
        for (int32_t k = 0; k < t->nsucc; k++) {
            sim_task *u = &d->t[d->succ[t->succ_off + k]];
            if (--u->deps_left == 0 && try_start(&c, u->res, now, e.task)) goto nomem;
        }
        if (try_start(&c, t->res, now, e.task)) goto nomem;
    }
    st->makespan = now;
    st->mem_peak = c.peak;
    if (c.oom) {
        sim_task *t = &d->t[c.failed];
        return kv_errorf(KV_ENOFIT,
                         "does not fit in GPU memory: %s at step %d layer %d mb %d needs %.1f MiB with %.2f GiB in use "
                         "of %.2f GiB",
                         kv_op_name((kv_op)t->op), t->step, t->layer, t->mb, t->mem_alloc / 1048576.0,
                         (c.mem - t->mem_alloc) / 1073741824.0, d->mem_cap / 1073741824.0);
    }
    if (done != d->n) return kv_errorf(KV_EINVAL, "sim: %d of %d tasks never ran (dependency cycle or order conflict)", d->n - done, d->n);
    return KV_OK;
nomem:
    return kv_errorf(KV_ENOMEM, "sim: out of memory for events");
}
