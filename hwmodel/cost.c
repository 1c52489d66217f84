/* hw_cost: the cost functions shared by the scheduler and the simulator. */
#include "cost.h"
#include <math.h>

/* What streaming kernels reach of the datasheet HBM bandwidth (a profile field with provenance). */
static double hbm(const hw_profile *p) { return p->gpu.hbm_bw.value * p->gpu.hbm_eff.value; }

static const hw_link_dir *dir_of(const hw_profile *p, hw_dir d) {
    return d == HW_H2D ? &p->link.h2d : &p->link.d2h;
}

double hw_copy_time(const hw_profile *p, hw_dir dir, double bytes, int pageable, int duplex) {
    const hw_link_dir *d = dir_of(p, dir);
    if (bytes <= 0) return 0;
    double bw = (pageable ? d->pageable.value : d->bandwidth.value) * hw_table_eval(&d->size_eff, bytes);
    if (duplex) bw *= d->duplex.value;
    return d->overhead.value + bytes / bw;
}

double hw_copy_bw(const hw_profile *p, hw_dir dir, double bytes, int pageable, int duplex) {
    double t = hw_copy_time(p, dir, bytes, pageable, duplex);
    return t > 0 ? bytes / t : 0;
}

double hw_gemm_time(const hw_profile *p, double M, double K, double N, int elem) {
    if (M <= 0 || K <= 0 || N <= 0) return 0;
    double flops = 2.0 * M * K * N;
    double t = flops / (p->gpu.peak_flops.value * hw_table_eval(&p->gpu.gemm_eff, M));
    if (p->gpu.memory_floor) {
        double bytes = (M * K + K * N + M * N) * elem;
        t = p->gpu.gemm_additive ? t + bytes / hbm(p) : fmax(t, bytes / hbm(p));
    }
    return t + p->gpu.launch.value;
}

double hw_attn_time(const hw_profile *p, const kv_model *m, int batch, int ctx) {
    double kv = (double)batch * (ctx + 1) * (double)kv_model_kv_bytes_token_layer(m);
    double flops = 4.0 * batch * (ctx + 1) * (double)m->n_heads * m->head_dim;
    double stream = kv / (p->gpu.hbm_bw.value * p->gpu.attn_eff.value);
    /* a calibrated profile: streaming K/V plus each query head's scores, softmax and sums at the
     * kernel's own rate (GQA models do more of that per byte: one rate cannot fit both) */
    if (p->gpu.attn_flops.value > 0 || p->gpu.attn_fixed.value > 0)
        return stream + (p->gpu.attn_flops.value > 0 ? flops / p->gpu.attn_flops.value : 0) + p->gpu.attn_fixed.value + p->gpu.launch.value;
    double t = flops / p->gpu.peak_flops.value;
    if (p->gpu.memory_floor) t = fmax(t, stream);
    return t + p->gpu.launch.value;
}

double hw_cpu_attn_time(const hw_profile *p, const kv_model *m, int batch, int ctx) {
    double kv = (double)batch * (ctx + 1) * (double)kv_model_kv_bytes_token_layer(m);
    double flops = 4.0 * batch * (ctx + 1) * (double)m->n_heads * m->head_dim;
    return fmax(flops / p->cpu.attn_flops.value, kv / p->cpu.mem_bw.value);
}

double hw_recompute_time(const hw_profile *p, const kv_model *m, int batch, int tokens) {
    if (tokens <= 0 || batch <= 0) return 0;
    return hw_gemm_time(p, (double)batch * tokens, m->hidden, 2.0 * kv_model_kv_dim(m), kv_dtype_bytes(m->dtype));
}

hw_layer_cost hw_decode_layer(const hw_profile *p, const kv_model *m, int batch, int ctx) {
    hw_layer_cost c;
    int e = kv_dtype_bytes(m->dtype);
    double h = m->hidden, q = (double)m->n_heads * m->head_dim, kv = kv_model_kv_dim(m);
    c.qkv = hw_gemm_time(p, batch, h, q + 2 * kv, e);
    c.attn = hw_attn_time(p, m, batch, ctx);
    c.out = hw_gemm_time(p, batch, q, h, e);
    c.mlp = hw_gemm_time(p, batch, h, (m->gated_mlp ? 2.0 : 1.0) * m->ffn, e) + hw_gemm_time(p, batch, m->ffn, h, e);
    /* Two norms and two residual adds, each reading and writing b*h elements. */
    c.other = 0;
    if (p->gpu.memory_floor) c.other = 4 * (2.0 * batch * h * e / hbm(p));
    c.other += 4 * p->gpu.launch.value;
    c.total = c.qkv + c.attn + c.out + c.mlp + c.other;
    return c;
}

hw_layer_cost hw_prefill_layer(const hw_profile *p, const kv_model *m, int batch, int prompt) {
    hw_layer_cost c;
    int e = kv_dtype_bytes(m->dtype);
    double rows = (double)batch * prompt, h = m->hidden, q = (double)m->n_heads * m->head_dim, kv = kv_model_kv_dim(m);
    c.qkv = hw_gemm_time(p, rows, h, q + 2 * kv, e);
    /* causal attention: 2 * batch * q * prompt * (prompt + 1) FLOPs at the GEMM rate of an M = prompt tile */
    double flops = 2.0 * batch * q * prompt * (prompt + 1.0);
    c.attn = flops / (p->gpu.peak_flops.value * hw_table_eval(&p->gpu.gemm_eff, prompt));
    if (p->gpu.memory_floor) c.attn = fmax(c.attn, rows * (2 * q * e + (double)kv_model_kv_bytes_token_layer(m)) / hbm(p));
    c.attn += p->gpu.launch.value;
    c.out = hw_gemm_time(p, rows, q, h, e);
    c.mlp = hw_gemm_time(p, rows, h, (m->gated_mlp ? 2.0 : 1.0) * m->ffn, e) + hw_gemm_time(p, rows, m->ffn, h, e);
    c.other = 0;
    if (p->gpu.memory_floor) c.other = 4 * (2.0 * rows * h * e / hbm(p));
    c.other += 4 * p->gpu.launch.value;
    c.total = c.qkv + c.attn + c.out + c.mlp + c.other;
    return c;
}

double hw_head_time(const hw_profile *p, const kv_model *m, int batch) {
    int e = kv_dtype_bytes(m->dtype);
    double norm = p->gpu.launch.value + (p->gpu.memory_floor ? 2.0 * batch * m->hidden * e / hbm(p) : 0);
    return norm + hw_gemm_time(p, batch, m->hidden, m->vocab, e);
}

hw_paper_cost hw_paper_layer(const hw_profile *p, const kv_model *m, int batch, int ctx, int l) {
    double b = batch, h = m->hidden, pe = kv_dtype_bytes(m->dtype);
    double vcom = p->link.h2d.bandwidth.value, vgpu = p->gpu.peak_flops.value;
    hw_paper_cost c;
    c.t_act = b * l * h * pe / vcom;
    c.t_kv = 2.0 * b * (ctx - l) * h * pe / vcom;
    c.t_rec = 4.0 * b * l * h * h / vgpu;
    c.total = c.t_act + fmax(c.t_rec, c.t_kv);
    return c;
}

double hw_paper_lstar(const hw_profile *p, const kv_model *m, int ctx) {
    double h = m->hidden, pe = kv_dtype_bytes(m->dtype);
    double vcom = p->link.h2d.bandwidth.value, vgpu = p->gpu.peak_flops.value;
    return ctx * pe * vgpu / (2.0 * h * vcom + pe * vgpu);
}

int hw_paper_runtime_split(const hw_profile *p, const kv_model *m, int prompt, int gen) {
    double l = floor(hw_paper_lstar(p, m, prompt + gen) + 0.5);
    return l < prompt ? (int)l : prompt;
}
