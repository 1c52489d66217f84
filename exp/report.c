/* exp report: tables and figures of an experiment, from what results.db holds. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../sim/sim.h"
#include "exp.h"

typedef struct {
    int present, fits;
    double decode_s, thr, util_gpu, split0, split_last;
    double busy[KV_OP_COUNT];
    int64_t id;
} res_t;

typedef struct {
    const exp_spec *s;
    exp_run *runs;
    res_t *res;
    int n;
    /* per configuration (model, hw, mode, batch, prompt, gen, compress): its run of each policy,
     * and of kvpr per scheduler (-1: none): find() in constant time, a report linear in runs */
    int *idx;
    int64_t ncfg;
} rep;

#define REP_SLOTS (KV_POL_COUNT + SCHED_COUNT)

static int64_t cfg_of(const exp_spec *s, const exp_run *r) {
    return (((((int64_t)r->model * s->nhws + r->hw) * s->nmodes + r->mode) * s->nbatch + r->batch) * s->nprompt + r->prompt) *
               s->ngen * s->ncomps +
           (int64_t)r->gen * s->ncomps + r->comp;
}

static int slot_of(kv_policy pol, int sched) {
    return pol == KV_POL_KVPR ? (sched >= 0 && sched < SCHED_COUNT ? KV_POL_COUNT + sched : -1) : (int)pol;
}

static kv_status index_runs(rep *R) {
    const exp_spec *s = R->s;
    R->ncfg = (int64_t)s->nmodels * s->nhws * s->nmodes * s->nbatch * s->nprompt * s->ngen * (s->ncomps > 0 ? s->ncomps : 1);
    R->idx = malloc((size_t)(R->ncfg > 0 ? R->ncfg : 1) * REP_SLOTS * sizeof *R->idx);
    if (!R->idx) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t k = 0; k < R->ncfg * REP_SLOTS; k++) R->idx[k] = -1;
    for (int i = 0; i < R->n; i++) {
        int64_t c = cfg_of(s, &R->runs[i]);
        int sl = slot_of(R->runs[i].pol, R->runs[i].sched);
        if (c < 0 || c >= R->ncfg || sl < 0) continue;
        if (R->idx[c * REP_SLOTS + sl] < 0) R->idx[c * REP_SLOTS + sl] = i; /* the first, as the scan found */
    }
    return KV_OK;
}

static kv_status load(rep *R, kv_db *db) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db_handle(db),
                           "SELECT r.id, m.name, m.value FROM runs r LEFT JOIN metrics m ON m.run_id = r.id WHERE r.run_key = ?",
                           -1, &q, NULL) != SQLITE_OK)
        return kv_errorf(KV_EDB, "report: %s", sqlite3_errmsg(db_handle(db)));
    for (int i = 0; i < R->n; i++) {
        char key[512];
        exp_run_key(R->s, &R->runs[i], key, sizeof key);
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, key, -1, SQLITE_TRANSIENT);
        res_t *x = &R->res[i];
        memset(x, 0, sizeof *x);
        x->fits = 1;
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            x->present = 1;
            x->id = sqlite3_column_int64(q, 0);
            const char *nm = (const char *)sqlite3_column_text(q, 1);
            double v = sqlite3_column_double(q, 2);
            if (!nm) continue;
            if (!strcmp(nm, "fits")) x->fits = v > 0;
            else if (!strcmp(nm, "decode_s")) x->decode_s = v;
            else if (!strcmp(nm, "throughput")) x->thr = v;
            else if (!strcmp(nm, "util_gpu")) x->util_gpu = v;
            else if (!strcmp(nm, "split_first")) x->split0 = v;
            else if (!strcmp(nm, "split_last")) x->split_last = v;
            else if (!strncmp(nm, "busy_", 5))
                for (int k = 0; k < KV_OP_COUNT; k++)
                    if (!strcmp(nm + 5, kv_op_name((kv_op)k))) x->busy[k] = v;
        }
        if (rc != SQLITE_DONE) { /* a damaged or locked database: say so rather than print half a table */
            kv_status st = kv_errorf(KV_EDB, "report: reading runs: %s", sqlite3_errmsg(db_handle(db)));
            sqlite3_finalize(q);
            return st;
        }
    }
    sqlite3_finalize(q);
    return KV_OK;
}

static int same_cfg(const exp_run *a, const exp_run *b) {
    return a->model == b->model && a->hw == b->hw && a->mode == b->mode && a->batch == b->batch && a->prompt == b->prompt &&
           a->gen == b->gen && a->comp == b->comp;
}

static int ok(const rep *R, int i) { return i >= 0 && R->res[i].present && R->res[i].fits && R->res[i].decode_s > 0; }

/* The run of config c (an index of any run of it) with policy pol (and scheduler sched). */
static int find(const rep *R, int c, kv_policy pol, int sched) {
    if (R->idx) {
        int64_t k = cfg_of(R->s, &R->runs[c]);
        int sl = slot_of(pol, sched);
        return k >= 0 && k < R->ncfg && sl >= 0 ? R->idx[k * REP_SLOTS + sl] : -1;
    }
    for (int i = 0; i < R->n; i++)
        if (same_cfg(&R->runs[i], &R->runs[c]) && R->runs[i].pol == pol && (pol != KV_POL_KVPR || R->runs[i].sched == sched)) return i;
    return -1;
}

static void cfg_label(const rep *R, int i, char *b, size_t n) {
    const exp_spec *s = R->s;
    const exp_run *r = &R->runs[i];
    int thr = s->modes[r->mode] == KV_MODE_THROUGHPUT;
    char mb[16] = "";
    if (thr) snprintf(mb, sizeof mb, "x%d", s->nb);
    snprintf(b, n, "%s %s %s b%d%s p%d g%d%s%s", s->models[r->model], s->hws[r->hw], kv_mode_name(s->modes[r->mode]),
             s->batch[r->batch], mb, s->prompt[r->prompt], s->gen[r->gen], s->comps[r->comp] ? " 4-bit " : "",
             s->comps[r->comp] ? kv_compress_name(s->comps[r->comp]) : "");
}

/* only the dimensions the experiment varies: short enough for an axis */
static void short_label(const rep *R, int i, char *b, size_t n) {
    const exp_spec *s = R->s;
    const exp_run *r = &R->runs[i];
    size_t l = 0;
    b[0] = 0;
#define ADD(...) (l += (size_t)snprintf(b + l, l < n ? n - l : 0, __VA_ARGS__))
    if (s->nmodels > 1) ADD("%s ", s->models[r->model]);
    if (s->nhws > 1) ADD("%s ", s->hws[r->hw]);
    if (s->nmodes > 1) ADD("%s ", kv_mode_name(s->modes[r->mode]));
    if (s->nbatch > 1) ADD("b%d ", s->batch[r->batch]);
    if (s->nprompt > 1) ADD("p%d ", s->prompt[r->prompt]);
    if (s->ngen > 1) ADD("g%d ", s->gen[r->gen]);
    if (s->ncomps > 1) ADD("%s%s ", s->comps[r->comp] ? "4-bit " : "fp16", s->comps[r->comp] ? kv_compress_name(s->comps[r->comp]) : "");
#undef ADD
    if (l && l < n) b[l - 1] = 0;
    if (!b[0]) cfg_label(R, i, b, n);
}

static void col_label(const exp_run *r, char *b, size_t n) {
    if (r->pol == KV_POL_KVPR) snprintf(b, n, "kvpr/%s", sched_name((sched_kind)r->sched));
    else snprintf(b, n, "%s", kv_policy_name(r->pol));
}

/* runs per configuration: the first configuration's runs give the columns */
static int ncols(const rep *R) {
    int k = 0;
    while (k < R->n && same_cfg(&R->runs[k], &R->runs[0])) k++;
    return k;
}

static void main_table(const rep *R, FILE *o) {
    int nc = ncols(R);
    char lab[64];
    fprintf(o, "%-52s", "configuration");
    for (int c = 0; c < nc; c++) {
        col_label(&R->runs[c], lab, sizeof lab);
        fprintf(o, " %18s", lab);
    }
    fprintf(o, "   speed-up of kvpr over offload\n");
    for (int i = 0; i < R->n; i += nc) {
        char cl[200];
        cfg_label(R, i, cl, sizeof cl);
        fprintf(o, "%-52s", cl);
        int th = R->s->modes[R->runs[i].mode] == KV_MODE_THROUGHPUT;
        for (int c = 0; c < nc; c++) {
            const res_t *x = &R->res[i + c];
            char cell[64];
            if (!x->present) snprintf(cell, sizeof cell, "not run");
            else if (!x->fits) snprintf(cell, sizeof cell, "does not fit");
            else if (th) snprintf(cell, sizeof cell, "%.1f tok/s", x->thr);
            else snprintf(cell, sizeof cell, "%.3f s", x->decode_s);
            if (x->present && x->fits && R->runs[i + c].pol == KV_POL_KVPR) {
                size_t l = strlen(cell);
                if (x->split_last != x->split0) snprintf(cell + l, sizeof cell - l, " l%.0f-%.0f", x->split0, x->split_last);
                else snprintf(cell + l, sizeof cell - l, " l=%.0f", x->split0);
            }
            fprintf(o, " %18s", cell);
        }
        int off = find(R, i, KV_POL_OFFLOAD, -1);
        for (int c = 0; c < nc; c++)
            if (R->runs[i + c].pol == KV_POL_KVPR && ok(R, off) && ok(R, i + c))
                fprintf(o, "  %.3fx", R->res[off].decode_s / R->res[i + c].decode_s);
        fprintf(o, "\n");
    }
}

/* A claim's value under our runs, for kvpr with scheduler sched; NAN if nothing matches. */
static double claim_value(const rep *R, const exp_claim *c, int sched) {
    int red = !strcmp(c->metric, "latency_reduction") || !strcmp(c->metric, "max_latency_reduction");
    int gain = !strcmp(c->metric, "throughput_gain");
    double best = -HUGE_VAL, sum = 0;
    int n = 0;
    for (int i = 0; i < R->n; i++) {
        const exp_run *r = &R->runs[i];
        if (!exp_match(R->s, r, &c->where) || !ok(R, i)) continue;
        if (red || gain) {
            if (r->pol != KV_POL_KVPR || r->sched != sched) continue;
            int off = find(R, i, KV_POL_OFFLOAD, -1);
            if (!ok(R, off)) continue;
            double v = red ? 100 * (1 - R->res[i].decode_s / R->res[off].decode_s) : 100 * (R->res[i].thr / R->res[off].thr - 1);
            best = fmax(best, v);
            n++;
        } else {
            if (r->pol == KV_POL_KVPR && r->sched != sched) continue;
            const res_t *x = &R->res[i];
            double v = !strcmp(c->metric, "kv_share") ? 100 * x->busy[KV_OP_KV_H2D] / x->decode_s
                       : !strcmp(c->metric, "gpu_util") ? 100 * x->util_gpu
                       : 100 * (x->busy[KV_OP_RECOMPUTE] + x->busy[KV_OP_QKV] + x->busy[KV_OP_ATTN] + x->busy[KV_OP_FFN]) / x->decode_s;
            sum += v;
            n++;
        }
    }
    if (!n) return nan("");
    return red || gain ? best : sum / n;
}

static void claims_table(const rep *R, FILE *o) {
    const exp_spec *s = R->s;
    if (!s->nclaims) return;
    int has_kvpr = 0;
    for (int i = 0; i < s->npols; i++) has_kvpr |= s->pols[i] == KV_POL_KVPR;
    fprintf(o, "\n%-64s %8s", "published claim (paper)", "paper");
    for (int k = 0; k < (has_kvpr ? s->nscheds : 1); k++) fprintf(o, " %11s %8s", has_kvpr ? sched_name(s->scheds[k]) : "ours", "diff");
    fprintf(o, "\n");
    for (int i = 0; i < s->nclaims; i++) {
        const exp_claim *c = &s->claims[i];
        char t[80];
        snprintf(t, sizeof t, "%.63s", c->text[0] ? c->text : c->metric);
        fprintf(o, "%-64s %7.1f%%", t, c->value);
        for (int k = 0; k < (has_kvpr ? s->nscheds : 1); k++) {
            double v = claim_value(R, c, has_kvpr ? (int)s->scheds[k] : -1);
            if (isnan(v)) fprintf(o, " %11s %8s", "n/a", "");
            else fprintf(o, " %10.1f%% %+7.1f", v, v - c->value);
        }
        fprintf(o, "\n");
    }
    fprintf(o, "(ours: over the matching configurations, the largest reduction or gain, the mean share; diff in points)\n");
}

/* What a figure of mode `mode` holds, for its title's second line: the hardware, the mode and
 * every dimension that one value covers (the others are on the x axis), so that a figure read
 * on its own says what it shows. */
static void fig_subtitle(const exp_spec *s, int mode, char *b, size_t n) {
    size_t l = 0;
#define ADD(...) (l += (size_t)snprintf(b + l, l < n ? n - l : 0, __VA_ARGS__))
    ADD("%s", s->nhws == 1 ? "" : "hardware ");
    for (int h = 0; h < s->nhws; h++) ADD("%s%s", h ? ", " : "", s->hws[h]);
    ADD("; %s", mode ? "throughput" : "latency");
    if (mode) ADD(" (%d micro-batches)", s->nb);
    if (s->nmodels == 1) ADD("; %s", s->models[0]);
    if (s->nbatch == 1) ADD("; batch %d", s->batch[0]);
    if (s->nprompt == 1) ADD("; prompt %d", s->prompt[0]);
    if (s->ngen == 1) ADD("; gen %d", s->gen[0]);
#undef ADD
}

/* the figure's title: the experiment's, and below it what the figure holds */
static void fig_title(FILE *gp, const exp_spec *s, int mode, const char *what) {
    char sub[600], t[900];
    fig_subtitle(s, mode, sub, sizeof sub);
    snprintf(t, sizeof t, "%s%s%s", what, what[0] ? ": " : "", s->title[0] ? s->title : s->name);
    /* two lines: the line break is ours, outside the escaped literals (gnuplot joins strings with '.') */
    fprintf(gp, "set title ");
    exp_gp_str(gp, t);
    fprintf(gp, ".\"\\n\".");
    exp_gp_str(gp, sub);
    fprintf(gp, " noenhanced\n");
}

/* Bars: one cluster per configuration, one bar per policy/scheduler. More configurations than
 * fit one readable panel are split into panels stacked vertically (facets), each with its own
 * axis labels; the legend sits above the plot, never over bars. A figure holds at most
 * PANELS_PER_FIG panels (Cairo draws no image taller than 32767 pixels, and a taller one is not
 * read anyway): the rest go to NAME-MODE-2, -3, ... */
#define BARS_PER_PANEL 12
#define PANELS_PER_FIG 24
/* A configuration none of whose runs fits has no bar (its table row says so): a panel of only
 * those would be an empty histogram, which gnuplot refuses. */
static int bars_row(const rep *R, int i, int nc, int mode) {
    if ((int)R->s->modes[R->runs[i].mode] != mode) return 0;
    for (int c = 0; c < nc; c++)
        if (ok(R, i + c)) return 1;
    return 0;
}

static kv_status fig_bars(const rep *R, const char *dir) {
    int nc = ncols(R);
    for (int mode = 0; mode < 2; mode++) {
        int rows = 0;
        size_t maxlab = 8;
        for (int i = 0; i < R->n; i += nc) {
            if (!bars_row(R, i, nc, mode)) continue;
            char cl[200];
            short_label(R, i, cl, sizeof cl);
            if (strlen(cl) > maxlab) maxlab = strlen(cl);
            rows++;
        }
        if (!rows) continue;
        int npan_all = (rows + BARS_PER_PANEL - 1) / BARS_PER_PANEL, per = (rows + npan_all - 1) / npan_all;
        int nfig = (npan_all + PANELS_PER_FIG - 1) / PANELS_PER_FIG;
        int i = 0;
        for (int fg = 0; fg < nfig; fg++) {
            int npan = fg < nfig - 1 ? PANELS_PER_FIG : npan_all - fg * PANELS_PER_FIG;
            char name[128];
            if (fg) snprintf(name, sizeof name, "%s-%s-%d", R->s->name, mode ? "throughput" : "latency", fg + 1);
            else snprintf(name, sizeof name, "%s-%s", R->s->name, mode ? "throughput" : "latency");
            exp_fig F;
            kv_status st = exp_fig_open(&F, dir, name, 1);
            if (st) return st;
            int k = 0; /* rows in this figure: its panels' */
            for (; i < R->n && k < npan * per; i += nc) {
                if (!bars_row(R, i, nc, mode)) continue;
                if (k % per == 0) { /* each panel a gnuplot index of its own, with its header */
                    if (k) fprintf(F.dat, "\n\n");
                    fprintf(F.dat, "config");
                    for (int c = 0; c < nc; c++) {
                        char lab[64];
                        col_label(&R->runs[c], lab, sizeof lab);
                        fputc(' ', F.dat);
                        exp_dat_str(F.dat, lab);
                    }
                    fprintf(F.dat, "\n");
                }
                char cl[200];
                short_label(R, i, cl, sizeof cl);
                exp_dat_str(F.dat, cl);
                for (int c = 0; c < nc; c++) {
                    const res_t *x = &R->res[i + c];
                    if (!ok(R, i + c)) fprintf(F.dat, " NaN");
                    else fprintf(F.dat, " %.6g", mode ? x->thr : x->decode_s);
                }
                fprintf(F.dat, "\n");
                k++;
            }
            npan = (k + per - 1) / per;
            /* rotated labels hang down and to the left of their tic: room below for the longest */
            int bm = 3 + (int)(0.3 * (double)maxlab);
            int panel_h = 330 + 9 * bm, w = 360 + per * (40 + 18 * nc);
            if (w < 800) w = 800;
            for (int fmt = 0; fmt < 2; fmt++) {
                exp_fig_terminal(&F, fmt, w, 90 + npan * panel_h);
                fprintf(F.gp, "set style data histograms\nset style histogram clustered gap 1\n"
                              "set style fill solid 0.85 border -1\nset xtics rotate by 35 right noenhanced font ',9'\n"
                              "set key outside top center horizontal noenhanced\nset grid ytics\nset ylabel '%s'\nset yrange [0:*]\n"
                              "set bmargin %d\nset rmargin 4\nset lmargin 12\n",
                        mode ? "decode throughput (tokens/s)" : "decode time (s)", bm);
                if (npan > 1) fprintf(F.gp, "set multiplot layout %d,1\n", npan);
                for (int pn = 0; pn < npan; pn++) {
                    if (pn == 0 || npan == 1) fig_title(F.gp, R->s, mode, "");
                    else fprintf(F.gp, "unset title\n");
                    fprintf(F.gp, "plot for [c=2:%d] ", nc + 1);
                    exp_gp_str(F.gp, F.dat_path);
                    fprintf(F.gp, " index %d using c:xtic(1) title columnheader(c)\n", pn);
                }
                if (npan > 1) fprintf(F.gp, "unset multiplot\n");
            }
            if ((st = exp_fig_close(&F))) return st;
        }
    }
    return KV_OK;
}

/* Breakdown: per configuration and policy, where decode time goes: one stacked bar per busy
 * resource (the host-to-device link, the GPU, the CPU when used), each op's share of decode time
 * a segment. Within one resource ops do not overlap, so a bar is at most 100 %; the rest of it is
 * the time that resource waits. */
static kv_status fig_breakdown(const rep *R, const char *dir) {
    int nc = ncols(R);
    static const kv_resource res[] = {KV_RES_H2D, KV_RES_D2H, KV_RES_GPU, KV_RES_CPU};
    static const char *const resname[] = {"H2D link", "D2H link", "GPU", "CPU"};
    /* which op runs on which resource: the op's spans say so, but a stored run keeps only busy
     * times per op; the op list fixes it */
    static const int op_res[KV_OP_COUNT] = {
        [KV_OP_W_H2D] = KV_RES_H2D, [KV_OP_WKV_H2D] = KV_RES_H2D, [KV_OP_ACT_H2D] = KV_RES_H2D, [KV_OP_KV_H2D] = KV_RES_H2D,
        [KV_OP_RECOMPUTE] = KV_RES_GPU, [KV_OP_QKV] = KV_RES_GPU, [KV_OP_ATTN] = KV_RES_GPU, [KV_OP_FFN] = KV_RES_GPU,
        [KV_OP_KV_D2H] = KV_RES_D2H, [KV_OP_Q_D2H] = KV_RES_D2H, [KV_OP_CPU_ATTN] = KV_RES_CPU, [KV_OP_O_H2D] = KV_RES_H2D,
        [KV_OP_HID_H2D] = KV_RES_H2D, [KV_OP_HID_D2H] = KV_RES_D2H, [KV_OP_ACT_D2H] = KV_RES_D2H, [KV_OP_HEAD] = KV_RES_GPU,
        [KV_OP_DQ_W] = KV_RES_GPU, [KV_OP_DQ_ACT] = KV_RES_GPU, [KV_OP_DQ_KV] = KV_RES_GPU, [KV_OP_QUANT] = KV_RES_GPU};
    int used[4] = {0}, opused[KV_OP_COUNT] = {0};
    for (int i = 0; i < R->n; i++)
        if (ok(R, i))
            for (int k = 0; k < KV_OP_COUNT; k++)
                if (R->res[i].busy[k] > 0) used[op_res[k]] = 1, opused[k] = 1;
    char name[128];
    snprintf(name, sizeof name, "%s-breakdown", R->s->name);
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, name, 1);
    if (st) return st;
    int bars = 0;
    size_t maxlab = 8;
    fprintf(F.dat, "bar");
    for (int k = 0; k < KV_OP_COUNT; k++) fprintf(F.dat, " \"%s\"", kv_op_name((kv_op)k));
    fprintf(F.dat, "\n");
    for (int i = 0; i < R->n; i += nc) {
        for (int c = 0; c < nc; c++) {
            if (!ok(R, i + c)) continue;
            const res_t *x = &R->res[i + c];
            for (int ri = 0; ri < 4; ri++) {
                if (!used[res[ri]]) continue;
                char lab[64], cl[200], full[300];
                col_label(&R->runs[i + c], lab, sizeof lab);
                short_label(R, i, cl, sizeof cl);
                if (R->n > nc) snprintf(full, sizeof full, "%s %s: %s", cl, lab, resname[ri]);
                else snprintf(full, sizeof full, "%s: %s", lab, resname[ri]);
                if (strlen(full) > maxlab) maxlab = strlen(full);
                exp_dat_str(F.dat, full);
                for (int k = 0; k < KV_OP_COUNT; k++)
                    fprintf(F.dat, " %.6g", op_res[k] == (int)res[ri] ? 100 * x->busy[k] / x->decode_s : 0.0);
                fprintf(F.dat, "\n");
                bars++;
            }
            fprintf(F.dat, "\"\"");
            for (int k = 0; k < KV_OP_COUNT; k++) fprintf(F.dat, " 0");
            fprintf(F.dat, "\n");
        }
    }
    if (!bars) {
        exp_fig_abort(&F);
        return KV_OK;
    }
    int bm = 3 + (int)(0.3 * (double)maxlab);
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 500 + 28 * bars > 900 ? 500 + 28 * bars : 900, 560 + 9 * bm);
        fig_title(F.gp, R->s, (int)R->s->modes[0], "");
        fprintf(F.gp, "set style data histograms\nset style histogram rowstacked\nset boxwidth 0.8\n"
                      "set style fill solid 0.9 border -1\nset xtics rotate by 35 right noenhanced font ',9'\n"
                      "set key outside right top vertical noenhanced\nset grid ytics\nset ylabel 'busy time of each op on its resource (%% of decode time)'\n"
                      "set yrange [0:105]\nset bmargin %d\nset lmargin 20\n",
                bm);
        fprintf(F.gp, "plot ");
        int first = 1;
        for (int k = 0; k < KV_OP_COUNT; k++) {
            if (!opused[k]) continue;
            fprintf(F.gp, "%s", first ? "" : ", ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " using %d:xtic(1) lc rgb '%s' title '%s'", k + 2, exp_op_color(k), kv_op_name((kv_op)k));
            first = 0;
        }
        fprintf(F.gp, "\n");
    }
    return exp_fig_close(&F);
}

/* the decode time of every split of the sweep configuration(s), each scheduler's choice marked */
/* The sweep stored with run id: 1 if every split 0..lmax is there (into ts), else 0. */
static int stored_sweep(kv_db *db, int64_t id, double *ts, int lmax) {
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db_handle(db), "SELECT name, value FROM metrics WHERE run_id = ? AND name LIKE 'sweep\\_l\\_%' ESCAPE '\\'",
                           -1, &q, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_int64(q, 1, id);
    int got = 0;
    for (int l = 0; l <= lmax; l++) ts[l] = nan("");
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *nm = (const char *)sqlite3_column_text(q, 0);
        int l;
        char tail;
        if (nm && sscanf(nm, "sweep_l_%d%c", &l, &tail) == 1 && l >= 0 && l <= lmax && isnan(ts[l])) ts[l] = sqlite3_column_double(q, 1), got++;
    }
    sqlite3_finalize(q);
    return got == lmax + 1;
}

static kv_status fig_sweep(const rep *R, kv_db *db, const char *dir) {
    int done = 0;
    kv_status st = KV_OK;
    sim_ctx *sx = sim_new();
    if (sx) sim_stream(sx, SIM_STREAM_LARGE, 0); /* only results are read: the graph streams */
    if (!sx) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < R->n && done < 2 && !st; i++) {
        const exp_run *r = &R->runs[i];
        if (r->pol != KV_POL_KVPR || !exp_match(R->s, r, &R->s->sweep) || !ok(R, i)) continue;
        int first = find(R, i, KV_POL_KVPR, (int)R->s->scheds[0]);
        if (first != i) continue; /* once per configuration */
        kv_model m;
        hw_profile p;
        kv_plan pl;
        int *steps;
        if (exp_plan(R->s, r, &m, &p, &pl, &steps)) continue;
        free(steps);
        pl.split_steps = NULL;
        int lmax = sched_lmax(&m, &p, &pl);
        if (lmax < 0) continue;
        double *ts = malloc(sizeof(double) * (size_t)(lmax + 1));
        sim_result sr;
        int bad = !ts;
        /* stored by 'kvpr run' with the run (metrics sweep_l_L); simulated here only when missing */
        if (!bad && stored_sweep(db, R->res[i].id, ts, lmax) == 0)
            for (int l = 0; l <= lmax && !bad; l++) {
                pl.split = l;
                bad = sim_run(sx, &m, &p, &pl, &sr) != KV_OK;
                if (!bad) ts[l] = sr.decode_s;
            }
        if (!bad) {
            exp_mark mk[SCHED_COUNT];
            int nm = 0;
            for (int k = 0; k < R->s->nscheds; k++) {
                int j = find(R, i, KV_POL_KVPR, (int)R->s->scheds[k]);
                if (ok(R, j)) mk[nm++] = (exp_mark){sched_name(R->s->scheds[k]), (int)R->res[j].split0, R->res[j].decode_s};
            }
            char name[128], cl[200];
            snprintf(name, sizeof name, "%s-sweep%d", R->s->name, done + 1);
            cfg_label(R, i, cl, sizeof cl);
            st = exp_plot_sweep(dir, name, cl, ts, lmax + 1, mk, nm);
            done++;
        }
        free(ts);
    }
    sim_free(sx);
    return st;
}

/* heat-maps of kvpr's speed-up over hardware x model, with the split l/s: one panel (and one
 * table) per configuration (mode, batch, prompt, gen) and scheduler, so that a sweep over several
 * never shows one of them under a title that does not say which. */
#define HEAT_MAX_PANELS 24
static kv_status heat(const rep *R, const char *dir, FILE *o) {
    const exp_spec *s = R->s;
    int npan = s->nmodes * s->nbatch * s->nprompt * s->ngen * s->nscheds, drawn = npan < HEAT_MAX_PANELS ? npan : HEAT_MAX_PANELS;
    char name[128];
    snprintf(name, sizeof name, "%s-heatmap", s->name);
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, name, 1);
    if (st) return st;
    char (*titles)[200] = calloc((size_t)drawn, sizeof *titles);
    if (!titles) {
        exp_fig_abort(&F);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int pan = 0;
    for (int mo = 0; mo < s->nmodes; mo++)
        for (int ba = 0; ba < s->nbatch; ba++)
            for (int pr = 0; pr < s->nprompt; pr++)
                for (int ge = 0; ge < s->ngen; ge++)
                    for (int sc = 0; sc < s->nscheds; sc++, pan++) {
                        char mb[16] = "", cfg[160];
                        if (s->modes[mo] == KV_MODE_THROUGHPUT) snprintf(mb, sizeof mb, "x%d", s->nb);
                        snprintf(cfg, sizeof cfg, "kvpr/%s, %s b%d%s p%d g%d", sched_name(s->scheds[sc]), kv_mode_name(s->modes[mo]),
                                 s->batch[ba], mb, s->prompt[pr], s->gen[ge]);
                        fprintf(o, "\n%-26s %-20s %8s %8s %10s %9s %6s   (%s)\n", "hardware", "model", "H2D GB/s", "TFLOP/s",
                                "B/F B/kFLOP", "speed-up", "l/s", cfg);
                        if (pan < drawn) snprintf(titles[pan], sizeof titles[0], "speed-up over offloading: %s", cfg);
                        for (int h = 0; h < s->nhws; h++) {
                            for (int m = 0; m < s->nmodels; m++) {
                                double v = nan(""), ls = nan("");
                                /* the cell's kvpr runs (one per compress value): the last in run order
                                 * that has an offloading run to compare with */
                                int best = -1;
                                for (int co = 0; co < (s->ncomps > 0 ? s->ncomps : 1); co++) {
                                    exp_run key = {.model = m, .hw = h, .mode = mo, .batch = ba, .prompt = pr, .gen = ge, .comp = co};
                                    int64_t k = cfg_of(s, &key);
                                    int sl = slot_of(KV_POL_KVPR, (int)s->scheds[sc]);
                                    int i = sl >= 0 && k < R->ncfg ? R->idx[k * REP_SLOTS + sl] : -1;
                                    if (i > best && ok(R, i) && ok(R, find(R, i, KV_POL_OFFLOAD, -1))) best = i;
                                }
                                if (best >= 0) {
                                    int off = find(R, best, KV_POL_OFFLOAD, -1);
                                    v = R->res[off].decode_s / R->res[best].decode_s, ls = R->res[best].split0 / s->prompt[pr];
                                }
                                hw_profile p;
                                double bw = 0, tf = 0;
                                if (hw_profile_resolve(s->hws[h], &p) == KV_OK) bw = p.link.h2d.bandwidth.value / 1e9, tf = p.gpu.peak_flops.value / 1e12;
                                fprintf(o, "%-26s %-20s %8.1f %8.0f %10.3f ", s->hws[h], s->models[m], bw, tf, bw / tf); /* GB/s per TFLOP/s = B/kFLOP */
                                if (isnan(v)) fprintf(o, "%9s %6s\n", "n/a", "");
                                else fprintf(o, "%8.3fx %6.2f\n", v, ls);
                                if (pan >= drawn) continue;
                                if (isnan(v)) fprintf(F.dat, "%d %d NaN \"does not fit\"\n", m, h);
                                else fprintf(F.dat, "%d %d %.6g \"%.2fx\"\n", m, h, v, v);
                            }
                            if (pan < drawn) fprintf(F.dat, "\n");
                        }
                        if (pan < drawn) fprintf(F.dat, "\n"); /* two blank lines: the next panel is the next gnuplot index */
                    }
    if (npan > drawn)
        fprintf(o, "(the heat-map figure draws the first %d of %d configurations and schedulers; the tables above list all)\n", drawn, npan);
    int cols = drawn <= 1 ? 1 : drawn <= 4 ? 2 : drawn <= 9 ? 3 : 4, rows = (drawn + cols - 1) / cols;
    int pw = 420 + 150 * s->nmodels, ph = 240 + 40 * s->nhws;
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, pw * cols, ph * rows);
        fprintf(F.gp, "set view map\nset palette defined (0 'white', 0.5 'orange', 1 'red')\nset cbrange [1:2]\n"
                      "set cblabel 'speed-up'\nset xtics (");
        for (int m = 0; m < s->nmodels; m++) {
            fprintf(F.gp, "%s", m ? ", " : "");
            exp_gp_str(F.gp, s->models[m]);
            fprintf(F.gp, " %d", m);
        }
        fprintf(F.gp, ") noenhanced\nset ytics (");
        for (int h = 0; h < s->nhws; h++) {
            fprintf(F.gp, "%s", h ? ", " : "");
            exp_gp_str(F.gp, s->hws[h]);
            fprintf(F.gp, " %d", h);
        }
        fprintf(F.gp, ") noenhanced\nset xrange [-0.5:%g]\nset yrange [-0.5:%g]\nset lmargin 28\n", s->nmodels - 0.5, s->nhws - 0.5);
        fprintf(F.gp, "set multiplot layout %d,%d\n", rows, cols);
        for (int k = 0; k < drawn; k++) {
            fprintf(F.gp, "set title ");
            exp_gp_str(F.gp, titles[k]);
            fprintf(F.gp, " noenhanced\nplot ");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 1:2:3 with image notitle, ", k);
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " index %d using 1:2:4 with labels notitle\n", k);
        }
        fprintf(F.gp, "unset multiplot\n");
    }
    free(titles);
    return exp_fig_close(&F);
}

/* one decode step (the middle one) of the timeline configuration, per policy: bars per resource */
static kv_status fig_timeline(const rep *R, kv_db *db, const char *dir) {
    int c = -1;
    for (int i = 0; i < R->n && c < 0; i++)
        if (exp_match(R->s, &R->runs[i], &R->s->timeline) && ok(R, i)) c = i;
    if (c < 0) return KV_OK;
    int nc = ncols(R), base = c - (c % nc);
    char name[128];
    snprintf(name, sizeof name, "%s-timeline", R->s->name);
    exp_fig F;
    kv_status st = exp_fig_open(&F, dir, name, 1);
    if (st) return st;
    int step = R->s->gen[R->runs[c].gen] / 2 - 1, rows = 0;
    if (step < 0) step = 0;
    int labrow[64];
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db_handle(db),
                           "SELECT op, resource, start_ps, end_ps FROM spans WHERE run_id = ? AND step = ? ORDER BY start_ps", -1, &q,
                           NULL) != SQLITE_OK) {
        st = kv_errorf(KV_EDB, "report: reading spans: %s", sqlite3_errmsg(db_handle(db)));
        exp_fig_abort(&F);
        return st;
    }
    for (int k = 0; k < nc && rows < 64; k++) {
        int i = base + k;
        if (!ok(R, i)) continue;
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, R->res[i].id);
        sqlite3_bind_int(q, 2, step);
        int64_t t0 = -1;
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            const char *op = (const char *)sqlite3_column_text(q, 0), *res = (const char *)sqlite3_column_text(q, 1);
            int64_t a = sqlite3_column_int64(q, 2), b = sqlite3_column_int64(q, 3);
            if (t0 < 0) t0 = a;
            int ri = 0, oi = 0;
            for (int x = 0; x < KV_RES_COUNT; x++) if (res && !strcmp(res, kv_res_name((kv_resource)x))) ri = x;
            for (int x = 0; x < KV_OP_COUNT; x++) if (op && !strcmp(op, kv_op_name((kv_op)x))) oi = x;
            double y = rows * 5 + ri;
            fprintf(F.dat, "%.6f %.1f %.6f %.6f %.2f %.2f %d\n", (a - t0) / 1e9, y, (a - t0) / 1e9, (b - t0) / 1e9, y - 0.4, y + 0.4, oi + 1);
        }
        if (rc != SQLITE_DONE) {
            st = kv_errorf(KV_EDB, "report: reading spans: %s", sqlite3_errmsg(db_handle(db)));
            break;
        }
        labrow[rows++] = i;
    }
    sqlite3_finalize(q);
    if (st || !rows) {
        exp_fig_abort(&F);
        return st;
    }
    char cl[200];
    cfg_label(R, c, cl, sizeof cl);
    for (int fmt = 0; fmt < 2; fmt++) {
        exp_fig_terminal(&F, fmt, 1100, 160 + 110 * rows);
        char title[300];
        snprintf(title, sizeof title, "decode step %d of %s, per policy", step, cl);
        fprintf(F.gp, "set title ");
        exp_gp_str(F.gp, title);
        fprintf(F.gp, " noenhanced\nset xlabel 'time in the step (ms)'\nset ytics (");
        for (int r = 0; r < rows; r++)
            for (int x = 0; x < KV_RES_COUNT; x++) {
                char lab[64], t[100];
                col_label(&R->runs[labrow[r]], lab, sizeof lab);
                snprintf(t, sizeof t, "%s %s", lab, kv_res_name((kv_resource)x));
                fprintf(F.gp, "%s", r || x ? ", " : "");
                exp_gp_str(F.gp, t);
                fprintf(F.gp, " %d", r * 5 + x);
            }
        fprintf(F.gp, ") noenhanced\nset grid xtics\nset style fill solid 0.9 border -1\nset key outside right noenhanced\n"
                      "set lmargin 26\nset yrange [-1:%d]\nplot ",
                rows * 5 - 1);
        for (int k = 0; k < KV_OP_COUNT; k++) {
            fprintf(F.gp, "%s", k ? ", " : "");
            exp_gp_str(F.gp, F.dat_path);
            fprintf(F.gp, " using 1:($7==%d?$2:1/0):3:4:5:6 with boxxyerror lc rgb '%s' title '%s'", k + 1, exp_op_color(k), kv_op_name((kv_op)k));
        }
        fprintf(F.gp, "\n");
    }
    return exp_fig_close(&F);
}

/* a CSV field (RFC 4180): quoted when it holds a separator, a quote or a line break */
static void csv_str(FILE *o, const char *v) {
    if (!strpbrk(v, ",\"\r\n")) {
        fputs(v, o);
        return;
    }
    fputc('"', o);
    for (; *v; v++) {
        if (*v == '"') fputc('"', o);
        fputc(*v, o);
    }
    fputc('"', o);
}

static void csv_num(FILE *o, int have, double v) {
    if (have) fprintf(o, ",%.10g", v);
    else fputc(',', o);
}

/* One row per run, every dimension its own column: what pandas' read_csv and a spreadsheet want
 * (the text tables pack several into one label). Empty cells are values we do not have. */
static void csv_runs(const rep *R, FILE *o) {
    const exp_spec *s = R->s;
    fprintf(o, "experiment,model,hardware,mode,batch,nb,prompt,gen,policy,scheduler,status,decode_s,throughput_tok_s,util_gpu,"
               "split_first,split_last,speedup_vs_offload%s\n", s->ncomps > 1 ? ",compress" : ""); /* the column only where it varies */
    for (int i = 0; i < R->n; i++) {
        const exp_run *r = &R->runs[i];
        const res_t *x = &R->res[i];
        int thr = s->modes[r->mode] == KV_MODE_THROUGHPUT, good = ok(R, i), off = find(R, i, KV_POL_OFFLOAD, -1);
        csv_str(o, s->name);
        fputc(',', o);
        csv_str(o, s->models[r->model]);
        fputc(',', o);
        csv_str(o, s->hws[r->hw]);
        fprintf(o, ",%s,%d,%d,%d,%d,%s,%s,%s", kv_mode_name(s->modes[r->mode]), s->batch[r->batch], thr ? s->nb : 1,
                s->prompt[r->prompt], s->gen[r->gen], kv_policy_name(r->pol), r->sched >= 0 ? sched_name((sched_kind)r->sched) : "",
                !x->present ? "not run" : !x->fits ? "does not fit" : "ok");
        csv_num(o, good, x->decode_s);
        csv_num(o, good && thr, x->thr);
        csv_num(o, good, x->util_gpu);
        csv_num(o, good && r->pol == KV_POL_KVPR, x->split0);
        csv_num(o, good && r->pol == KV_POL_KVPR, x->split_last);
        csv_num(o, good && ok(R, off), good && ok(R, off) ? R->res[off].decode_s / x->decode_s : 0);
        if (s->ncomps > 1) fprintf(o, ",%s", kv_compress_name(s->comps[r->comp]));
        fputc('\n', o);
    }
}

/* The experiment's runs and what results.db holds of them, read-only: a report must work on a
 * database it may not write (a shared or archived one). */
static kv_status rep_load(const exp_spec *s, const char *dbpath, rep *R, kv_db **db) {
    *R = (rep){.s = s};
    *db = NULL;
    kv_status st = exp_runs(s, &R->runs, &R->n);
    if (st) return st;
    R->res = calloc((size_t)(R->n ? R->n : 1), sizeof *R->res);
    int ms = 30000;
    if (!R->res) st = kv_errorf(KV_ENOMEM, "out of memory");
    if (!st) st = db_timeout_from_env(30000, &ms);
    if (!st) st = index_runs(R);
    if (!st) st = db_open_ro(dbpath, ms, db);
    if (!st) st = load(R, *db);
    return st;
}

static void rep_free(rep *R, kv_db *db) {
    db_close(db);
    free(R->runs);
    free(R->res);
    free(R->idx);
}

kv_status exp_report_csv(const exp_spec *s, const char *dbpath, FILE *o) {
    if (s->ngpus) return exp_servers_report(s, dbpath, NULL, 1, o); /* several GPUs per host: exp/servers.c */
    rep R;
    kv_db *db;
    kv_status st = rep_load(s, dbpath, &R, &db);
    if (!st) csv_runs(&R, o);
    rep_free(&R, db);
    return st;
}

kv_status exp_report(const exp_spec *s, const char *dbpath, const char *dir, FILE *o) {
    rep R;
    kv_db *db;
    if (!dir) dir = "plots";
    if (s->ngpus) return exp_servers_report(s, dbpath, exp_plot_dir(dir) ? NULL : dir, 0, o);
    kv_status st = rep_load(s, dbpath, &R, &db);
    if (!st) st = exp_plot_dir(dir);
    if (!st) {
        int missing = 0;
        for (int i = 0; i < R.n; i++) missing += !R.res[i].present;
        fprintf(o, "== %s: %s\n", s->name, s->title);
        if (missing) fprintf(o, "(%d of %d runs are not in %s yet: run the missing shards and merge them)\n", missing, R.n, dbpath);
        main_table(&R, o);
        claims_table(&R, o);
        if (s->fig_heatmap) st = heat(&R, dir, o);
        if (!st && s->fig_bars) st = fig_bars(&R, dir);
        if (!st && s->fig_breakdown) st = fig_breakdown(&R, dir);
        if (!st && s->has_sweep) st = fig_sweep(&R, db, dir);
        if (!st && s->has_timeline) st = fig_timeline(&R, db, dir);
    }
    rep_free(&R, db);
    return st;
}
