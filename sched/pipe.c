/* sched_pipe: cost models and their GLPK formulations. */
#include "pipe.h"
#include <glpk.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../hwmodel/quant.h"
#include "graph.h"

#define US 1e6

/* ---- the paper's model ------------------------------------------------------------- */

void paper_build(paper_model *pm, const kv_model *m, const hw_profile *p, int batch, int s, int lcap) {
    paper_build_comp(pm, m, p, batch, s, lcap, KV_COMP_NONE);
}

/* The paper's byte counts (h values per token for the activation, 2h for K/V, whatever the KV
 * heads) scaled by the packing ratio of --compress kv (36 bytes per group of 64: x0.281 at
 * h = 5120). The dequantisations are memory-bound kernels (hwmodel/quant.h) priced, like the
 * rest of the paper's model, at the datasheet rate (HBM bandwidth, no hbm_eff, no launch).
 * What the formula still ignores: the weights (the paper's model has no weight term, so
 * --compress weights changes nothing here), the quantisation of the new token's K/V before its
 * write-back (the model has no D2H), and everything else it already ignores. */
void paper_build_comp(paper_model *pm, const kv_model *m, const hw_profile *p, int batch, int s, int lcap, int compress) {
    double b = batch, h = m->hidden, pe = kv_dtype_bytes(m->dtype);
    double vcom = p->link.h2d.bandwidth.value, vgpu = p->gpu.peak_flops.value, hbm = p->gpu.hbm_bw.value;
    int ck = compress & KV_COMP_KV;
    double ra = ck ? kv_store_act_bytes(m, compress) / (double)kv_model_act_bytes_token(m) : 1;
    double rk = ck ? kv_store_kv_bytes(m, compress) / (double)kv_model_kv_bytes_token_layer(m) : 1;
    pm->a = US * b * h * pe * ra / vcom;
    pm->k = US * 2.0 * b * h * pe * rk / vcom;
    pm->r = US * 4.0 * b * h * h / vgpu;
    pm->dkv = 0;
    if (ck) { /* read packed, write fp16 */
        pm->r += US * b * h * pe * (ra + 1) / hbm;
        pm->dkv = US * 2.0 * b * h * pe * (rk + 1) / hbm;
    }
    pm->s = s;
    pm->lcap = lcap < s ? lcap : s;
}

double paper_eval(const paper_model *pm, int l) {
    return pm->a * l + fmax(pm->r * l, pm->k * (pm->s - l)) + pm->dkv * (pm->s - l);
}

double paper_lstar(const paper_model *pm) {
    if (pm->a + pm->r < pm->dkv) return pm->lcap;
    return pm->k * pm->s / (pm->k + pm->r);
}

/* GLPK's return code and the solution status are both checked: a returned 0 alone is not an optimum. */
static kv_status solve_mip(glp_prob *lp, const char *what) {
    /* The LP relaxation first (with its presolver), then branch and bound from that basis: the
     * MIP presolver alone has declared feasible problems infeasible on near-degenerate rows. */
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    sp.presolve = GLP_OFF; /* tiny problems: the presolver costs more than it saves */
    int ret = glp_simplex(lp, &sp);
    if (ret != 0 && ret != GLP_ENOPFS && ret != GLP_ENODFS)
        return kv_errorf(KV_ESOLVER, "%s: GLPK glp_simplex failed (code %d)", what, ret);
    if (ret != 0 || glp_get_status(lp) != GLP_OPT)
        return kv_errorf(KV_ESOLVER, "%s: GLPK found no optimum of the relaxation (status %s)", what,
                         ret == GLP_ENOPFS || glp_get_status(lp) == GLP_NOFEAS ? "infeasible" : "unbounded or undefined");
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.presolve = GLP_OFF;
    parm.msg_lev = GLP_MSG_OFF;
    ret = glp_intopt(lp, &parm);
    if (ret != 0) return kv_errorf(KV_ESOLVER, "%s: GLPK glp_intopt failed (code %d)", what, ret);
    int st = glp_mip_status(lp);
    if (st != GLP_OPT)
        return kv_errorf(KV_ESOLVER, "%s: GLPK found no optimum (status %s)", what,
                         st == GLP_NOFEAS ? "infeasible" : st == GLP_FEAS ? "feasible, not proven optimal" : "undefined");
    return KV_OK;
}

static kv_status write_lp_file(glp_prob *lp, const char *path) {
    if (path && glp_write_lp(lp, NULL, path) != 0) return kv_errorf(KV_EIO, "cannot write LP file %s", path);
    return KV_OK;
}

kv_status paper_solve(const paper_model *pm, const char *write_lp, int *l, double *obj) {
    glp_term_out(GLP_OFF);
    glp_prob *lp = glp_create_prob();
    glp_set_prob_name(lp, "kvpr_paper");
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_cols(lp, 2);
    glp_set_col_name(lp, 1, "l");
    glp_set_col_kind(lp, 1, GLP_IV);
    glp_set_col_bnds(lp, 1, pm->lcap > 0 ? GLP_DB : GLP_FX, 0, pm->lcap);
    glp_set_col_name(lp, 2, "T");
    glp_set_col_bnds(lp, 2, GLP_LO, 0, 0);
    glp_set_obj_coef(lp, 2, 1);
    glp_add_rows(lp, 2);
    int ind[3] = {0, 1, 2};
    /* T >= (a + r - dkv) l + dkv s and T >= (a - k - dkv) l + (k + dkv) s */
    double v1[3] = {0, -(pm->a + pm->r - pm->dkv), 1}, v2[3] = {0, -(pm->a - pm->k - pm->dkv), 1};
    glp_set_row_name(lp, 1, "T_recompute");
    glp_set_mat_row(lp, 1, 2, ind, v1);
    glp_set_row_bnds(lp, 1, GLP_LO, pm->dkv * pm->s, 0);
    glp_set_row_name(lp, 2, "T_transfer");
    glp_set_mat_row(lp, 2, 2, ind, v2);
    glp_set_row_bnds(lp, 2, GLP_LO, (pm->k + pm->dkv) * pm->s, 0);
    kv_status st = write_lp_file(lp, write_lp);
    if (!st) st = solve_mip(lp, "paper LP");
    if (!st) {
        *l = (int)lround(glp_mip_col_val(lp, 1));
        *obj = glp_mip_obj_val(lp);
    }
    glp_delete_prob(lp);
    return st;
}

/* ---- the pipelined model ----------------------------------------------------------- */

static double rec_us(const hw_profile *p, const kv_model *m, int b, int l) { return US * hw_recompute_time(p, m, b, l); }

/* --compress kv on the GPU (the graph's dequant_act, dequant_kv, quant; hwmodel/quant.h): per
 * token, dequantising a stored activation costs dqa and a streamed token's K/V dqk, so the GPU
 * carries dqk s at l = 0 and (dqa - dqk) l + a launch more at l > 0. */
typedef struct {
    double dqa, dqk, launch, quant, dqw;
} pipe_quant;

static pipe_quant quant_costs(const kv_model *m, const hw_profile *p, const kv_plan *pl, double kvb, double actb, double wb_st) {
    pipe_quant q = {0, 0, 0, 0, 0};
    double b = pl->batch, rate = p->gpu.hbm_bw.value * HW_QUANT_HBM_FRAC;
    double kv16 = (double)kv_model_kv_bytes_token_layer(m), act16 = (double)kv_model_act_bytes_token(m);
    if (pl->compress & KV_COMP_KV) {
        q.dqa = US * b * (actb + act16) / rate;
        q.dqk = US * b * (kvb + kv16) / rate;
        q.launch = US * p->gpu.launch.value;
        q.quant = US * hw_quant_gpu_time(p, b * (kvb + kv16) + (pl->keep_act ? b * (actb + act16) : 0));
    }
    if ((pl->compress & KV_COMP_W) && pl->mode == KV_MODE_THROUGHPUT && wb_st > 0)
        q.dqw = US * hw_quant_gpu_time(p, wb_st + (double)kv_model_bytes_layer(m)); /* packed in, fp16 slot out */
    return q;
}

static double rec_gpu_us(const hw_profile *p, const kv_model *m, int b, int l, const pipe_quant *q) {
    return rec_us(p, m, b, l) + (l > 0 ? q->launch + (q->dqa - q->dqk) * l : 0);
}

void pipe_build(pipe_model *pm, const kv_model *m, const hw_profile *p, const kv_plan *pl, int t0, int t1, int lmax,
                int l_ref) {
    memset(pm, 0, sizeof *pm);
    int b = pl->batch, L = kv_plan_layers(pl, m);
    /* --compress kv: what crosses the link is packed (sched/graph.h), so the byte ratio moves */
    double kvb = kv_store_kv_bytes(m, pl->compress), actb = kv_store_act_bytes(m, pl->compress);
    double B = pl->pageable ? p->link.h2d.pageable.value : p->link.h2d.bandwidth.value;
    double Bd = pl->pageable ? p->link.d2h.pageable.value : p->link.d2h.bandwidth.value;
    int smid = pl->prompt + (t0 + t1 - 1) / 2;
    if (l_ref > smid) l_ref = smid;
    double eff_a = hw_table_eval(&p->link.h2d.size_eff, (double)b * (l_ref > 0 ? l_ref : 1) * actb);
    double eff_k = hw_table_eval(&p->link.h2d.size_eff, (double)b * (smid - l_ref > 0 ? smid - l_ref : 1) * kvb);
    pm->eff_a = eff_a, pm->eff_k = eff_k;
    pm->actc = US * b * actb / (B * eff_a);
    double kvc = US * b * kvb / (B * eff_k);
    pm->slope = pm->actc - kvc;
    pm->alpha = US * p->link.h2d.overhead.value;
    pm->nbm = pl->mode == KV_MODE_THROUGHPUT ? pl->nb : 1;
    pm->depth = pl->prefetch;
    pm->layers = L;
    pm->lmax = lmax;
    double wb_st = 0;
    if (pl->mode == KV_MODE_THROUGHPUT) {
        double wb = (double)kv_model_bytes_layer(m);
        if (pl->compress & KV_COMP_W) { /* packed streamed weights (sched/graph.h) */
            kv_plan q = *pl;
            kv_layout ly;
            q.split_steps = NULL;
            if (!kv_layout_resolve(m, &q, &ly) && ly.w_cpu > 0) wb *= ly.w_cpu_st / ly.w_cpu;
        }
        pm->W = US * hw_copy_time(p, HW_H2D, wb, pl->pageable, 0);
        wb_st = pl->compress & KV_COMP_W ? wb : 0;
    }
    pipe_quant qc = quant_costs(m, p, pl, kvb, actb, wb_st);
    /* The write-back of each new token's K/V runs on D2H while H2D streams: H2D loses (1 - duplex)
     * of its progress for the write-back's duration. */
    double wbb = (double)b * (kvb + (pl->keep_act ? actb : 0));
    double wbt = wbb / (Bd * p->link.d2h.duplex.value * hw_table_eval(&p->link.d2h.size_eff, wbb));
    double pen = US * wbt * (1 - p->link.h2d.duplex.value);
    /* Buckets of consecutive steps; each step of a bucket is costed at the bucket's middle context. */
    int T = t1 - t0, nbk = T < PIPE_MAX_BUCKETS ? T : PIPE_MAX_BUCKETS;
    pm->nb_ = nbk;
    for (int k = 0; k < nbk; k++) {
        int a = t0 + (int)((long)T * k / nbk), e = t0 + (int)((long)T * (k + 1) / nbk);
        int s = pl->prompt + (a + e - 1) / 2;
        pm->cnt[k] = e - a;
        hw_layer_cost lc = hw_decode_layer(p, m, b, s);
        /* dequant_kv of all s tokens at l = 0 (rec_gpu_us takes back what l recomputes), the new
         * token's quant, and this micro-batch's share of the layer's dequant_w */
        pm->G[k] = US * lc.total + (qc.dqk > 0 ? qc.launch + qc.dqk * s + qc.quant : 0) + qc.dqw / pm->nbm;
        pm->AF[k] = US * (lc.attn + lc.out + lc.mlp + lc.other / 2);
        pm->A[k] = pm->alpha + kvc * s + pen;
    }
    /* Recompute: exact at the breakpoints, secants between; segment 0 is l = 0 (no copy, no kernel).
     * Breakpoints grow by ~1.25x: the GEMM efficiency and the memory floor bend the curve. */
    pm->nseg = 1;
    pm->lo[0] = pm->hi[0] = 0;
    pm->c0[0] = pm->c1[0] = 0;
    int lo = 1;
    while (lo <= lmax && pm->nseg < PIPE_MAX_SEG) {
        int hi = (int)ceil(lo * 1.25);
        if (hi < lo + 1) hi = lo + 1;
        if (hi > lmax || pm->nseg == PIPE_MAX_SEG - 1) hi = lmax;
        double r0 = rec_gpu_us(p, m, b, lo, &qc), r1 = rec_gpu_us(p, m, b, hi, &qc);
        int k = pm->nseg++;
        pm->lo[k] = lo, pm->hi[k] = hi;
        pm->c1[k] = hi > lo ? (r1 - r0) / (hi - lo) : 0;
        pm->c0[k] = r0 - pm->c1[k] * lo;
        /* a linear stretch leaves an intercept of rounding noise: keep it out of the LP */
        if (fabs(pm->c0[k]) < 1e-9 * fabs(r0)) pm->c0[k] = 0;
        if (hi == lmax) break;
        lo = hi;
    }
    /* Merge neighbours that lie on one line (the roofline's two sides are straight): fewer
     * binaries, the same function. */
    int w = 1;
    for (int k = 1; k < pm->nseg; k++) {
        if (w > 1) {
            int j = w - 1;
            double pred = pm->c0[j] + pm->c1[j] * pm->hi[k], real = pm->c0[k] + pm->c1[k] * pm->hi[k];
            if (fabs(pred - real) <= 1e-9 * fabs(real)) {
                pm->hi[j] = pm->hi[k];
                continue;
            }
        }
        pm->lo[w] = pm->lo[k], pm->hi[w] = pm->hi[k], pm->c0[w] = pm->c0[k], pm->c1[w] = pm->c1[k];
        w++;
    }
    pm->nseg = w;
}

static double pipe_rec(const pipe_model *pm, int l) {
    for (int k = 0; k < pm->nseg; k++)
        if (l >= pm->lo[k] && l <= pm->hi[k]) return pm->c0[k] + pm->c1[k] * l;
    return 0;
}

double pipe_eval(const pipe_model *pm, int l) {
    double R = pipe_rec(pm, l), act_alpha = l > 0 ? pm->alpha : 0, tot = 0;
    int nb = pm->nbm;
    for (int k = 0; k < pm->nb_; k++) {
        double link = pm->W + nb * (pm->A[k] + act_alpha + pm->slope * l);
        double gpu = nb * (R + pm->G[k]);
        double P = fmax(link, gpu);
        if (pm->depth >= 2) P = fmax(P, (link + nb * pm->AF[k]) / pm->depth);
        else {
            P = fmax(P, link + nb * pm->AF[k]);
            P = fmax(P, pm->W + nb * (act_alpha + pm->actc * l + R + pm->AF[k]));
        }
        tot += pm->cnt[k] * pm->layers * P;
    }
    return tot;
}

kv_status pipe_solve(const pipe_model *pm, const char *write_lp, int *l, double *obj, int *rows, int *cols, int *ints) {
    glp_term_out(GLP_OFF);
    glp_prob *lp = glp_create_prob();
    glp_set_prob_name(lp, "kvpr_pipelined");
    glp_set_obj_dir(lp, GLP_MIN);
    int S = pm->nseg, K = pm->nb_, nb = pm->nbm;
    /* columns: l, z_0..z_{S-1}, y_0..y_{S-1}, P_0..P_{K-1} */
    int cl = 1, cz = 2, cy = 2 + S, cp = 2 + 2 * S, ncol = 1 + 2 * S + K;
    glp_add_cols(lp, ncol);
    char nm[32];
    glp_set_col_name(lp, cl, "l");
    glp_set_col_kind(lp, cl, GLP_IV);
    glp_set_col_bnds(lp, cl, pm->lmax > 0 ? GLP_DB : GLP_FX, 0, pm->lmax);
    for (int k = 0; k < S; k++) {
        snprintf(nm, sizeof nm, "z%d", k);
        glp_set_col_name(lp, cz + k, nm);
        glp_set_col_kind(lp, cz + k, GLP_BV);
        snprintf(nm, sizeof nm, "y%d", k);
        glp_set_col_name(lp, cy + k, nm);
        glp_set_col_bnds(lp, cy + k, GLP_LO, 0, 0);
    }
    for (int k = 0; k < K; k++) {
        snprintf(nm, sizeof nm, "P%d", k);
        glp_set_col_name(lp, cp + k, nm);
        glp_set_col_bnds(lp, cp + k, GLP_LO, 0, 0);
        glp_set_obj_coef(lp, cp + k, pm->cnt[k] * pm->layers);
    }
    int ind[2 * PIPE_MAX_SEG + 4];
    double val[2 * PIPE_MAX_SEG + 4];
    int r;
#define ROW(name, type, lb, ub, n)                      \
    r = glp_add_rows(lp, 1);                            \
    glp_set_row_name(lp, r, name);                      \
    glp_set_mat_row(lp, r, n, ind, val);                \
    glp_set_row_bnds(lp, r, type, lb, ub)
    int n = 0;
    for (int k = 0; k < S; k++) ind[++n] = cz + k, val[n] = 1;
    ROW("one_segment", GLP_FX, 1, 1, n);
    n = 0;
    ind[++n] = cl, val[n] = 1;
    for (int k = 0; k < S; k++) ind[++n] = cy + k, val[n] = -1;
    ROW("l_is_sum", GLP_FX, 0, 0, n);
    for (int k = 0; k < S; k++) { /* lo_k z_k <= y_k <= hi_k z_k */
        ind[1] = cy + k, val[1] = 1, ind[2] = cz + k, val[2] = -pm->lo[k];
        snprintf(nm, sizeof nm, "seg%d_lo", k);
        ROW(nm, GLP_LO, 0, 0, 2);
        val[2] = -pm->hi[k];
        snprintf(nm, sizeof nm, "seg%d_hi", k);
        ROW(nm, GLP_UP, 0, 0, 2);
    }
    for (int k = 0; k < K; k++) {
        /* link: P - nb*slope*l + nb*alpha*z0 >= W + nb*(A + alpha)   (act overhead only when l > 0) */
        n = 0;
        ind[++n] = cp + k, val[n] = 1;
        ind[++n] = cl, val[n] = -nb * pm->slope;
        ind[++n] = cz, val[n] = nb * pm->alpha;
        snprintf(nm, sizeof nm, "link%d", k);
        ROW(nm, GLP_LO, pm->W + nb * (pm->A[k] + pm->alpha), 0, n);
        /* gpu: P - nb*sum(c0 z + c1 y) >= nb*G */
        n = 0;
        ind[++n] = cp + k, val[n] = 1;
        for (int s = 0; s < S; s++) {
            ind[++n] = cz + s, val[n] = -nb * pm->c0[s];
            ind[++n] = cy + s, val[n] = -nb * pm->c1[s];
        }
        snprintf(nm, sizeof nm, "gpu%d", k);
        ROW(nm, GLP_LO, nb * pm->G[k], 0, n);
        if (pm->depth >= 2) { /* buffer cycle: D*P >= link + attn + ffn */
            n = 0;
            ind[++n] = cp + k, val[n] = pm->depth;
            ind[++n] = cl, val[n] = -nb * pm->slope;
            ind[++n] = cz, val[n] = nb * pm->alpha;
            snprintf(nm, sizeof nm, "cycle%d", k);
            ROW(nm, GLP_LO, pm->W + nb * (pm->A[k] + pm->alpha + pm->AF[k]), 0, n);
        } else { /* no prefetch: the layer's chain is serial */
            n = 0;
            ind[++n] = cp + k, val[n] = 1;
            ind[++n] = cl, val[n] = -nb * pm->slope;
            ind[++n] = cz, val[n] = nb * pm->alpha;
            snprintf(nm, sizeof nm, "serial_kv%d", k);
            ROW(nm, GLP_LO, pm->W + nb * (pm->A[k] + pm->alpha + pm->AF[k]), 0, n);
            /* P - nb*actc*l - nb*sum(c0 z + c1 y) + nb*alpha*z0 >= W + nb*(alpha + attn + ffn) */
            n = 0;
            ind[++n] = cp + k, val[n] = 1;
            ind[++n] = cl, val[n] = -nb * pm->actc;
            for (int s = 0; s < S; s++) {
                ind[++n] = cz + s, val[n] = -nb * pm->c0[s] + (s == 0 ? nb * pm->alpha : 0);
                ind[++n] = cy + s, val[n] = -nb * pm->c1[s];
            }
            snprintf(nm, sizeof nm, "serial_rec%d", k);
            ROW(nm, GLP_LO, pm->W + nb * (pm->alpha + pm->AF[k]), 0, n);
        }
    }
#undef ROW
    kv_status st = write_lp_file(lp, write_lp);
    if (!st) st = solve_mip(lp, "pipelined MIP");
    if (!st) {
        *l = (int)lround(glp_mip_col_val(lp, cl));
        *obj = glp_mip_obj_val(lp);
        if (rows) *rows = glp_get_num_rows(lp);
        if (cols) *cols = glp_get_num_cols(lp);
        if (ints) *ints = glp_get_num_int(lp);
    }
    glp_delete_prob(lp);
    return st;
}
