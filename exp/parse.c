/* exp parse: the experiment file format, line by line so that every error names its line. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "../core/datadir.h"
#include "../core/kv_io.h"
#include "../core/kv_str.h"
#include "exp.h"
#include "../hwmodel/topo.h"

#ifndef KVPR_DATADIR
#define KVPR_DATADIR "."
#endif

kv_status exp_find(const char *name, char *path, size_t n) {
    /* a path, NAME.exp here, or one of the shipped experiments (installed or in the source tree) */
    for (int i = 0; i < 3; i++) {
        if (i == 2 && strchr(name, '/')) break;
        if (i == 0) snprintf(path, n, "%s", name);
        else if (i == 1) snprintf(path, n, "%s.exp", name);
        else snprintf(path, n, "%s/experiments/%s.exp", kv_datadir(), name);
        if (access(path, R_OK) == 0) return KV_OK;
    }
    return kv_errorf(KV_ENOTFOUND, "no experiment '%s' (a file, or one of %s/experiments/*.exp)", name, kv_datadir());
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

#define PERR(...) (kv_errorf(KV_EPARSE, __VA_ARGS__))

/* Splits on blanks into words; returns the count or -1 if more than max. */
static int words(char *s, char **w, int max) {
    int n = 0;
    for (char *t = strtok(s, " \t"); t; t = strtok(NULL, " \t")) {
        if (n == max) return -1;
        w[n++] = t;
    }
    return n;
}

/* A word listed twice would give two runs the same run key (one replacing the other) or, for
 * policies and schedulers, more runs than the sweep was sized for: an error, named. */
static kv_status no_repeat(const char *f, int ln, const char *key, char **w, int k) {
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(w[i], w[j])) return kv_errorf(KV_EINVAL, "%s:%d: '%s' lists '%s' twice", f, ln, key, w[i]);
    return KV_OK;
}

/* At most maxn integers into dst (which holds maxn). */
static kv_status ints(const char *f, int ln, const char *key, char *v, int *dst, int *n, int lo, int hi, int maxn) {
    char *w[EXP_MAXV];
    int k = words(v, w, maxn);
    if (k <= 0) return maxn == 1 ? PERR("%s:%d: '%s' is one integer", f, ln, key) : PERR("%s:%d: '%s' needs 1 to %d integers", f, ln, key, maxn);
    for (int i = 0; i < k; i++) {
        char *e;
        errno = 0;
        long x = strtol(w[i], &e, 10);
        if (*e || errno || x < lo || x > hi)
            return kv_errorf(KV_EINVAL, "%s:%d: '%s' value '%s' is not an integer in [%d, %d]", f, ln, key, w[i], lo, hi);
        dst[i] = (int)x;
        for (int j = 0; j < i; j++)
            if (dst[j] == dst[i]) return kv_errorf(KV_EINVAL, "%s:%d: '%s' lists %d twice", f, ln, key, dst[i]);
    }
    *n = k;
    return KV_OK;
}

static kv_status strs(const char *f, int ln, const char *key, char *v, char dst[][128], int *n) {
    char *w[EXP_MAXV];
    int k = words(v, w, EXP_MAXV);
    if (k <= 0) return PERR("%s:%d: '%s' needs 1 to %d names", f, ln, key, EXP_MAXV);
    kv_status st = no_repeat(f, ln, key, w, k);
    if (st) return st;
    for (int i = 0; i < k; i++)
        if (kv_str_copy(dst[i], 128, w[i])) /* a cut name would be another name */
            return kv_errorf(KV_EINVAL, "%s:%d: '%s' entry '%s' is longer than 127 bytes", f, ln, key, w[i]);
    *n = k;
    return KV_OK;
}

static const char *const filter_keys[] = {"model", "hw", "mode", "batch", "prompt", "gen", "policy", "scheduler", "compress", NULL};

static kv_status filters(const char *f, int ln, char *v, exp_filters *out) {
    char *w[EXP_MAXF + 1];
    int k = words(v, w, EXP_MAXF);
    if (k < 0) return PERR("%s:%d: at most %d filters", f, ln, EXP_MAXF);
    out->n = 0;
    for (int i = 0; i < k; i++) {
        char *eq = strchr(w[i], '=');
        if (!eq) return PERR("%s:%d: filter '%s' is not key=value", f, ln, w[i]);
        *eq = 0;
        int ok = 0;
        for (const char *const *a = filter_keys; *a; a++) ok |= !strcmp(*a, w[i]);
        if (!ok) return PERR("%s:%d: unknown filter key '%s' (model, hw, mode, batch, prompt, gen, policy, scheduler)", f, ln, w[i]);
        snprintf(out->f[out->n].key, sizeof out->f[0].key, "%s", w[i]);
        if (kv_str_copy(out->f[out->n].val, sizeof out->f[0].val, eq + 1))
            return kv_errorf(KV_EINVAL, "%s:%d: filter value '%s' is longer than 127 bytes", f, ln, eq + 1);
        out->n++;
    }
    return KV_OK;
}

static const char *const metrics[] = {"latency_reduction", "max_latency_reduction", "throughput_gain", "kv_share",
                                      "gpu_compute_share", "gpu_util", NULL};

/* claim METRIC [key=value ...] = NUMBER   # text */
static kv_status claim(const char *f, int ln, char *rest, const char *comment, exp_spec *s) {
    if (s->nclaims == 32) return PERR("%s:%d: at most 32 claims", f, ln);
    exp_claim *c = &s->claims[s->nclaims];
    memset(c, 0, sizeof *c);
    c->line = ln;
    /* the value follows the last " = " (filters are key=value without blanks) */
    char *eq = NULL;
    for (char *q = strstr(rest, " = "); q; q = strstr(q + 1, " = ")) eq = q + 1;
    if (!eq) return PERR("%s:%d: a claim reads 'claim METRIC [key=value ...] = NUMBER # text'", f, ln);
    *eq = 0;
    char *val = trim(eq + 1), *e;
    errno = 0;
    c->value = strtod(val, &e);
    if (!*val || *trim(e) || errno || !isfinite(c->value)) return kv_errorf(KV_EINVAL, "%s:%d: claim value '%s' is not a number", f, ln, val);
    char *head = trim(rest);
    char *m = strtok(head, " \t");
    if (!m) return PERR("%s:%d: a claim needs a metric: 'claim METRIC [key=value ...] = NUMBER # text'", f, ln);
    int ok = 0;
    for (const char *const *a = metrics; *a; a++) ok |= !strcmp(*a, m);
    if (!ok)
        return PERR("%s:%d: unknown claim metric '%s' (latency_reduction, max_latency_reduction, throughput_gain, kv_share, "
                    "gpu_compute_share, gpu_util)", f, ln, m);
    snprintf(c->metric, sizeof c->metric, "%s", m);
    char *fl = strtok(NULL, "");
    kv_status st = filters(f, ln, fl ? fl : (char[]){0}, &c->where);
    if (st) return st;
    kv_str_copy(c->text, sizeof c->text, comment ? comment : ""); /* display text: cut whole characters */
    s->nclaims++;
    return KV_OK;
}

kv_status exp_parse(const char *path, exp_spec *s) {
    char *text;
    size_t len;
    kv_status st = kv_io_read_all(path, 1 << 20, &text, &len);
    if (st) return st == KV_ENOTFOUND ? kv_errorf(st, "cannot read experiment %s", path) : st;
    if (strlen(text) != len) st = kv_errorf(KV_EPARSE, "%s: not a text file (it holds a NUL byte)", path);
    else st = exp_parse_text(text, path, s);
    free(text);
    return st;
}

/* Takes the next line of *p into line (n bytes); returns 0 at the end, -1 if it is too long. */
static int next_line(const char **p, char *line, size_t n) {
    if (!**p) return 0;
    const char *e = strchr(*p, '\n');
    size_t len = e ? (size_t)(e - *p) : strlen(*p);
    if (len >= n) return -1;
    memcpy(line, *p, len);
    line[len] = 0;
    *p += len + (e ? 1 : 0);
    return 1;
}

kv_status exp_parse_text(const char *text, const char *path, exp_spec *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->nb = 8, s->prefetch = 2, s->fig_bars = 1, s->ncomps = 1;
    s->modes[0] = KV_MODE_LATENCY, s->nmodes = 1;
    s->pols[0] = KV_POL_OFFLOAD, s->pols[1] = KV_POL_KVPR, s->npols = 2;
    s->scheds[0] = SCHED_PIPELINED, s->nscheds = 1;
    char line[1024];
    int ln = 0, got;
    kv_status st = KV_OK;
    unsigned seen = 0;
    const char *p = text;
    while ((got = next_line(&p, line, sizeof line))) {
        ln++;
        if (got < 0) {
            st = PERR("%s:%d: line longer than %zu characters", path, ln, sizeof line - 2);
            break;
        }
        char *hash = strchr(line, '#'), *comment = NULL;
        if (hash) *hash = 0, comment = trim(hash + 1);
        char *t = trim(line);
        if (!*t) continue;
        if (!strncmp(t, "claim", 5) && isspace((unsigned char)t[5])) {
            if ((st = claim(path, ln, t + 6, comment, s))) break;
            continue;
        }
        char *eq = strchr(t, '=');
        if (!eq) {
            st = PERR("%s:%d: expected 'key = value', got '%s'", path, ln, t);
            break;
        }
        *eq = 0;
        char *k = trim(t), *v = trim(eq + 1), *w[EXP_MAXV];
        int n;
        static const char *const keys[] = {"name", "title", "models", "hardware", "mode", "batch", "prompt", "gen", "policies",
                                           "schedulers", "nb", "prefetch", "keep_act", "figures", "sweep", "timeline", "compress", "gpus",
                                           "sweep_splits", NULL};
        int idx = -1;
        for (int i = 0; keys[i]; i++)
            if (!strcmp(keys[i], k)) idx = i;
        if (idx < 0) {
            st = PERR("%s:%d: unknown key '%s'", path, ln, k);
            break;
        }
        if (seen & (1u << idx)) {
            st = PERR("%s:%d: '%s' given twice", path, ln, k);
            break;
        }
        seen |= 1u << idx;
        s->key_line[idx] = ln;
        if (!*v && idx != 14 && idx != 15) {
            st = PERR("%s:%d: '%s' has no value", path, ln, k);
            break;
        }
        switch (idx) {
        case 0:
            /* the name becomes file names under --plots and run keys: a plain name, never cut */
            if (!kv_str_is_name(v, EXP_NAME_MAX))
                st = kv_errorf(KV_EINVAL, "%s:%d: name '%s' must be 1 to %d characters of A-Z a-z 0-9 . _ - and not start with '.'",
                               path, ln, v, EXP_NAME_MAX);
            else snprintf(s->name, sizeof s->name, "%s", v);
            break;
        case 1:
            if (kv_str_copy(s->title, sizeof s->title, v))
                st = kv_errorf(KV_EINVAL, "%s:%d: 'title' is longer than %zu bytes", path, ln, sizeof s->title - 1);
            break;
        case 2: st = strs(path, ln, k, v, s->models, &s->nmodels); break;
        case 3: st = strs(path, ln, k, v, s->hws, &s->nhws); break;
        case 4:
            n = words(v, w, 2);
            if (n <= 0) { st = PERR("%s:%d: 'mode' is latency, throughput or both", path, ln); break; }
            if ((st = no_repeat(path, ln, k, w, n))) break;
            for (int i = 0; i < n && !st; i++)
                if ((st = kv_mode_parse(w[i], &s->modes[i]))) kv_errctx(st, "%s:%d: ", path, ln);
            s->nmodes = n;
            break;
        case 5: st = ints(path, ln, k, v, s->batch, &s->nbatch, 1, 1 << 16, EXP_MAXV); break;
        case 6: st = ints(path, ln, k, v, s->prompt, &s->nprompt, 1, 1 << 20, EXP_MAXV); break;
        case 7: st = ints(path, ln, k, v, s->gen, &s->ngen, 2, 1 << 20, EXP_MAXV); break;
        case 8:
            n = words(v, w, KV_POL_COUNT);
            if (n <= 0) { st = PERR("%s:%d: 'policies' lists 1 to %d policies", path, ln, KV_POL_COUNT); break; }
            if ((st = no_repeat(path, ln, k, w, n))) break;
            for (int i = 0; i < n && !st; i++)
                if ((st = kv_policy_parse(w[i], &s->pols[i]))) kv_errctx(st, "%s:%d: ", path, ln);
            for (int i = 0; i < n && !st; i++) /* two spellings of one policy */
                for (int j = 0; j < i && !st; j++)
                    if (s->pols[i] == s->pols[j]) st = kv_errorf(KV_EINVAL, "%s:%d: 'policies' lists '%s' twice", path, ln, kv_policy_name(s->pols[i]));
            s->npols = n;
            break;
        case 9:
            n = words(v, w, SCHED_COUNT);
            if (n <= 0) { st = PERR("%s:%d: 'schedulers' lists 1 to %d schedulers", path, ln, SCHED_COUNT); break; }
            if ((st = no_repeat(path, ln, k, w, n))) break;
            for (int i = 0; i < n && !st; i++)
                if ((st = sched_parse(w[i], &s->scheds[i]))) kv_errctx(st, "%s:%d: ", path, ln);
            for (int i = 0; i < n && !st; i++)
                for (int j = 0; j < i && !st; j++)
                    if (s->scheds[i] == s->scheds[j]) st = kv_errorf(KV_EINVAL, "%s:%d: 'schedulers' lists '%s' twice", path, ln, sched_name(s->scheds[i]));
            s->nscheds = n;
            break;
        case 10: st = ints(path, ln, k, v, &s->nb, &n, 1, 256, 1); break;
        case 11: st = ints(path, ln, k, v, &s->prefetch, &n, 1, 16, 1); break;
        case 12:
            if (!strcmp(v, "yes")) s->keep_act = 1;
            else if (!strcmp(v, "no")) s->keep_act = 0;
            else st = PERR("%s:%d: 'keep_act' is yes or no", path, ln);
            break;
        case 13:
            s->fig_bars = s->fig_heatmap = s->fig_breakdown = 0;
            n = words(v, w, 4);
            if (n < 0) { st = PERR("%s:%d: 'figures' lists bars, heatmap, breakdown", path, ln); break; }
            for (int i = 0; i < n && !st; i++) {
                if (!strcmp(w[i], "bars")) s->fig_bars = 1;
                else if (!strcmp(w[i], "heatmap")) s->fig_heatmap = 1;
                else if (!strcmp(w[i], "breakdown")) s->fig_breakdown = 1;
                else st = PERR("%s:%d: unknown figure '%s' (bars, heatmap, breakdown; sweep and timeline have their own keys)", path, ln, w[i]);
            }
            break;
        case 14: st = filters(path, ln, v, &s->sweep); s->has_sweep = 1; break;
        case 15: st = filters(path, ln, v, &s->timeline); s->has_timeline = 1; break;
        case 16:
            n = words(v, w, 4);
            if (n <= 0) { st = PERR("%s:%d: 'compress' lists none, kv, weights, both", path, ln); break; }
            if ((st = no_repeat(path, ln, k, w, n))) break;
            for (int i = 0; i < n && !st; i++)
                if ((st = kv_compress_parse(w[i], &s->comps[i]))) kv_errctx(st, "%s:%d: ", path, ln);
            s->ncomps = n;
            break;
        case 17: st = ints(path, ln, k, v, s->gpus, &s->ngpus, 1, HW_TOPO_MAX_GPUS, EXP_MAXV); break;
        case 18: st = ints(path, ln, k, v, &s->sweep_splits, &n, 1, 1 << 20, 1); break;
        }
        if (st) break;
    }
    if (st) return st;
    static const char *const need[] = {"name", "models", "hardware", "batch", "prompt", "gen"};
    static const int need_idx[] = {0, 2, 3, 5, 6, 7};
    for (int i = 0; i < 6; i++)
        if (!(seen & (1u << need_idx[i]))) return PERR("%s: missing required key '%s'", path, need[i]);
    if (s->ngpus && (s->ncomps > 1 || s->nmodes > 1 || s->nbatch > 1 || s->nprompt > 1 || s->ngen > 1 || s->nclaims || s->has_sweep || s->has_timeline ||
                    s->sweep_splits))
        return PERR("%s:%d: with 'gpus', give one mode, batch, prompt, gen and compress, and no claims, sweep, sweep_splits or timeline", path, s->key_line[17]);
    for (int i = 0; i < s->nclaims; i++)
        if ((!strcmp(s->claims[i].metric, "kv_share") || !strcmp(s->claims[i].metric, "gpu_compute_share") ||
             !strcmp(s->claims[i].metric, "gpu_util"))) {
            int has = 0;
            for (int j = 0; j < s->claims[i].where.n; j++) has |= !strcmp(s->claims[i].where.f[j].key, "policy");
            if (!has) return PERR("%s:%d: claim '%s' needs a policy=... filter", path, s->claims[i].line, s->claims[i].metric);
        }
    return KV_OK;
}

kv_status exp_runs(const exp_spec *s, exp_run **runs, int *n) {
    long per = 0; /* counted the way the loop below fills, whatever the lists hold */
    for (int i = 0; i < s->npols; i++) per += s->pols[i] == KV_POL_KVPR ? s->nscheds : 1;
    long total = (long)s->nmodels * s->nhws * s->nmodes * s->nbatch * s->nprompt * s->ngen * s->ncomps * per;
    if (total > 1000000) return kv_errorf(KV_EINVAL, "%s: %ld runs is too many for one experiment (limit 1000000)", s->path, total);
    exp_run *r = malloc((size_t)(total ? total : 1) * sizeof *r);
    if (!r) return kv_errorf(KV_ENOMEM, "out of memory");
    int k = 0;
    for (int a = 0; a < s->nmodels; a++)
        for (int b = 0; b < s->nhws; b++)
            for (int c = 0; c < s->nmodes; c++)
                for (int d = 0; d < s->nbatch; d++)
                    for (int e = 0; e < s->nprompt; e++)
                        for (int f = 0; f < s->ngen; f++)
                            for (int x = 0; x < s->ncomps; x++)
                                for (int g = 0; g < s->npols; g++) {
                                    int ns = s->pols[g] == KV_POL_KVPR ? s->nscheds : 1;
                                    for (int h = 0; h < ns; h++)
                                        r[k++] = (exp_run){a, b, c, d, e, f, s->pols[g] == KV_POL_KVPR ? (int)s->scheds[h] : -1, s->pols[g], x};
                                }
    *runs = r;
    *n = k;
    return KV_OK;
}

void exp_run_key(const exp_spec *s, const exp_run *r, char *key, size_t n) {
    snprintf(key, n, "exp/%s/%s/%s/%s/%d/%d/%d/%s/%s", s->name, s->models[r->model], s->hws[r->hw],
             kv_mode_name(s->modes[r->mode]), s->batch[r->batch], s->prompt[r->prompt], s->gen[r->gen],
             kv_policy_name(r->pol), r->sched >= 0 ? sched_name((sched_kind)r->sched) : "-");
    /* compressed runs get a suffix, so the keys of uncompressed runs stay what they were */
    size_t l = strlen(key);
    if (s->comps[r->comp] && l < n) snprintf(key + l, n - l, "/compress-%s", kv_compress_name(s->comps[r->comp]));
}

/* Does any run match f? A filter that matches nothing is a typo (a model not in the sweep, a
 * batch spelled differently): silently drawing nothing or claiming "n/a" would hide it. */
static kv_status filter_hits(const exp_spec *s, const exp_run *r, int n, const exp_filters *f, int ln, const char *what) {
    for (int i = 0; i < n; i++)
        if (exp_match(s, &r[i], f)) return KV_OK;
    char buf[512] = "";
    size_t k = 0;
    for (int i = 0; i < f->n && k < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s=%s", i ? " " : "", f->f[i].key, f->f[i].val);
    return kv_errorf(KV_EINVAL, "%s:%d: %s filter '%s' matches no run of the experiment", s->path, ln, what, buf);
}

kv_status exp_check(const exp_spec *s) {
    kv_status st;
    for (int i = 0; i < s->nmodels; i++) {
        kv_model m;
        if ((st = kv_model_resolve(s->models[i], &m))) return kv_errctx(st, "%s:%d: ", s->path, s->key_line[2]);
    }
    for (int i = 0; i < s->nhws; i++) {
        hw_profile p;
        hw_topo t; /* with 'gpus', hardware names host topologies, each naming its GPU profile */
        if (s->ngpus && (st = hw_topo_resolve(s->hws[i], &t))) return kv_errctx(st, "%s:%d: ", s->path, s->key_line[3]);
        if ((st = hw_profile_resolve(s->ngpus ? t.profile : s->hws[i], &p))) return kv_errctx(st, "%s:%d: ", s->path, s->key_line[3]);
    }
    if (s->ngpus) return KV_OK;
    exp_run *r;
    int n;
    if ((st = exp_runs(s, &r, &n))) return st;
    if (s->has_sweep && s->sweep.n) st = filter_hits(s, r, n, &s->sweep, s->key_line[14], "sweep");
    if (!st && s->has_timeline && s->timeline.n) st = filter_hits(s, r, n, &s->timeline, s->key_line[15], "timeline");
    for (int i = 0; i < s->nclaims && !st; i++) st = filter_hits(s, r, n, &s->claims[i].where, s->claims[i].line, "claim");
    free(r);
    return st;
}
