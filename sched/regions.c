/* regions: the search over a grid of prompt lengths x sequences (see regions.h). */
#include "regions.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const int DEF_PROMPTS[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
static const int DEF_SEQS[] = {1, 4, 16, 64, 256};

int regions_default_prompts(const int **out) {
    *out = DEF_PROMPTS;
    return (int)(sizeof DEF_PROMPTS / sizeof DEF_PROMPTS[0]);
}

int regions_default_seqs(const int **out) {
    *out = DEF_SEQS;
    return (int)(sizeof DEF_SEQS / sizeof DEF_SEQS[0]);
}

void regions_fmt_tokens(char *b, size_t n, int t) {
    if (t >= 1024 && t % 1024 == 0) snprintf(b, n, "%dk", t / 1024);
    else snprintf(b, n, "%d", t);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kv_status check_list(const char *what, const int *v, int n) {
    if (n < 1 || n > REGIONS_MAX) return kv_errorf(KV_EINVAL, "regions: %d %s (1 to %d)", n, what, REGIONS_MAX);
    for (int i = 0; i < n; i++)
        if (v[i] < 1) return kv_errorf(KV_EINVAL, "regions: %s must be >= 1, got %d", what, v[i]);
    return KV_OK;
}

/* The winner and its lead over the best simulated candidate of any other policy. */
static void fill_cell(regions_cell *c, const search_result *r, search_objective obj) {
    const search_cand *w = &r->c[0];
    c->fits = 1;
    c->policy = w->plan.policy;
    c->gbs = w->plan.batch, c->nb = w->plan.nb;
    c->split = w->plan.policy == KV_POL_KVPR ? (w->plan.split_steps ? w->plan.split_steps[0] : w->plan.split) : 0;
    c->split_how = w->split_how ? w->split_how : "-";
    c->percent = w->plan.percent;
    c->value = w->value;
    c->generation_tok_s = w->generation_tok_s, c->decode_tok_s = w->decode_tok_s, c->token_s = w->token_s;
    c->bound = w->bound;
    c->bound_util = w->util[w->bound];
    for (int pol = 0; pol < KV_POL_COUNT; pol++) {
        if (pol == (int)c->policy || !r->has[pol]) continue;
        const search_cand *b = &r->best[pol];
        /* ties (equal values) go to the lower policy number: the order the search ranks them in */
        int better = !c->has_runner || (obj == SEARCH_LATENCY ? b->value < c->runner_value : b->value > c->runner_value);
        if (better) c->has_runner = 1, c->runner = (kv_policy)pol, c->runner_value = b->value;
    }
    if (c->has_runner && c->value > 0 && c->runner_value > 0)
        c->lead = obj == SEARCH_LATENCY ? c->runner_value / c->value : c->value / c->runner_value;
}

kv_status regions_run(const kv_model *m, const hw_profile *p, const search_opts *base, const int *prompts, int np, const int *seqs,
                      int ns, regions_grid *g) {
    memset(g, 0, sizeof *g);
    kv_status st;
    if ((st = check_list("prompt lengths", prompts, np)) || (st = check_list("sequence counts", seqs, ns))) return st;
    g->cells = calloc((size_t)np * (size_t)ns, sizeof *g->cells);
    if (!g->cells) return kv_errorf(KV_ENOMEM, "regions: out of memory");
    snprintf(g->model, sizeof g->model, "%s", m->name);
    snprintf(g->hw, sizeof g->hw, "%s", p->name);
    g->objective = base->objective, g->gen = base->gen;
    g->np = np, g->ns = ns;
    memcpy(g->prompts, prompts, sizeof(int) * (size_t)np);
    memcpy(g->seqs, seqs, sizeof(int) * (size_t)ns);
    double t0 = now_s();
    for (int ip = 0; ip < np && !st; ip++)
        for (int is = 0; is < ns && !st; is++) {
            search_opts o = *base;
            o.prompt = prompts[ip], o.sequences = seqs[is];
            o.top = 1; /* the winner; the best of every policy is kept apart from the ranking */
            search_result r;
            g->searches++;
            st = search_run(m, p, &o, &r);
            if (st == KV_ENOFIT) {
                g->nofit++;
                kv_errclear();
                st = KV_OK;
                continue;
            }
            if (st) {
                st = kv_errctx(st, "regions, %s on %s, prompt %d, %d sequences: ", m->name, p->name, prompts[ip], seqs[is]);
                break;
            }
            fill_cell(&g->cells[ip * ns + is], &r, o.objective);
            search_result_free(&r);
        }
    g->wall_s = now_s() - t0;
    if (st) regions_free(g);
    return st;
}

void regions_free(regions_grid *g) {
    free(g->cells);
    g->cells = NULL;
}
