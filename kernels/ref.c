/* kref: CPU references of the engine kernels. */
#include "ref.h"
#include "attn_split.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* fp16 -> float through a table: the compiler's conversion is a library call on CPUs without F16C,
 * and the host backend converts every GEMM operand, weights included, on every call */
static float h2f_table[65536];
static pthread_once_t h2f_once = PTHREAD_ONCE_INIT;

static void h2f_init(void) {
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        _Float16 x;
        memcpy(&x, &h, 2);
        h2f_table[i] = (float)x;
    }
}

const float *kref_h2f_table(void) {
    pthread_once(&h2f_once, h2f_init);
    return h2f_table;
}

float kref_h2f(uint16_t h) { return kref_h2f_table()[h]; }

uint16_t kref_f2h(float f) {
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

/* inside the functions below, after INIT: the table without the once-check per value */
#define INIT pthread_once(&h2f_once, h2f_init)
static double h2d(uint16_t h) { return (double)h2f_table[h]; }
static uint16_t f2h(float f) { return kref_f2h(f); }

double kref_relerr(const uint16_t *a, const double *ref, size_t n) {
    INIT;
    double mx = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        double x = h2d(a[i]);
        if (!isfinite(x)) return INFINITY;
        mx = fmax(mx, fabs(ref[i]));
        e = fmax(e, fabs(x - ref[i]));
    }
    return mx > 0 ? e / mx : e;
}

void kref_attention_d(const uint16_t *q, const uint16_t *kv, double *out, int B, int ctx, int nh, int nkv, int d) {
    INIT;
    int row = 2 * nkv * d, grp = nh / nkv;
    double *s = malloc(sizeof(double) * (size_t)(ctx > 0 ? ctx : 1));
    double scale = 1.0 / sqrt((double)d);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            const uint16_t *qv = q + ((size_t)b * nh + h) * d;
            int kh = h / grp;
            double mx = -INFINITY, sum = 0;
            for (int p = 0; p < ctx; p++) {
                const uint16_t *k = kv + ((size_t)p * B + b) * row + (size_t)kh * d;
                double dot = 0;
                for (int j = 0; j < d; j++) dot += h2d(qv[j]) * h2d(k[j]);
                s[p] = dot * scale;
                mx = fmax(mx, s[p]);
            }
            for (int p = 0; p < ctx; p++) sum += (s[p] = exp(s[p] - mx));
            double *o = out + ((size_t)b * nh + h) * d;
            for (int j = 0; j < d; j++) o[j] = 0;
            for (int p = 0; p < ctx; p++) {
                const uint16_t *v = kv + ((size_t)p * B + b) * row + (size_t)nkv * d + (size_t)kh * d;
                for (int j = 0; j < d; j++) o[j] += s[p] / sum * h2d(v[j]);
            }
        }
    free(s);
}

void kref_attention_f(const uint16_t *q, const uint16_t *kv, uint16_t *out, int B, int ctx, int nh, int nkv, int d) {
    INIT;
    int row = 2 * nkv * d, grp = nh / nkv;
    float *s = malloc(sizeof(float) * (size_t)(ctx > 0 ? ctx : 1)), *acc = malloc(sizeof(float) * (size_t)d);
    float scale = 1.0f / sqrtf((float)d);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            const uint16_t *qv = q + ((size_t)b * nh + h) * d;
            int kh = h / grp;
            float mx = -INFINITY, sum = 0;
            for (int p = 0; p < ctx; p++) {
                const uint16_t *k = kv + ((size_t)p * B + b) * row + (size_t)kh * d;
                float dot = 0;
                for (int j = 0; j < d; j++) dot += (float)h2d(qv[j]) * (float)h2d(k[j]);
                s[p] = dot * scale;
                mx = fmaxf(mx, s[p]);
            }
            for (int p = 0; p < ctx; p++) sum += (s[p] = expf(s[p] - mx));
            for (int j = 0; j < d; j++) acc[j] = 0;
            for (int p = 0; p < ctx; p++) {
                const uint16_t *v = kv + ((size_t)p * B + b) * row + (size_t)nkv * d + (size_t)kh * d;
                float w = s[p] / sum;
                for (int j = 0; j < d; j++) acc[j] += w * (float)h2d(v[j]);
            }
            uint16_t *o = out + ((size_t)b * nh + h) * d;
            for (int j = 0; j < d; j++) o[j] = f2h(acc[j]);
        }
    free(s);
    free(acc);
}

int kref_attention_split_f(const uint16_t *q, const uint16_t *kv, uint16_t *out, int B, int ctx, int nh, int nkv, int d, int sms,
                           size_t ws_bytes) {
    INIT;
    kattn_plan p = kattn_make_plan(B, ctx, nh, nkv, d, sms, ws_bytes);
    int row = 2 * nkv * d, grp = nh / nkv;
    float qscale = (float)(KATTN_LOG2E / sqrt((double)d));
    /* per split: (m, l) and the partial sums of one (sequence, head) */
    float *sm = malloc(sizeof(float) * (size_t)p.splits), *sl = malloc(sizeof(float) * (size_t)p.splits);
    float *sacc = malloc(sizeof(float) * (size_t)p.splits * (size_t)d);
    /* per position group: the same, inside one block */
    float *gm = malloc(sizeof(float) * (size_t)p.groups), *gl = malloc(sizeof(float) * (size_t)p.groups);
    float *gacc = malloc(sizeof(float) * (size_t)p.groups * (size_t)d), *qs = malloc(sizeof(float) * (size_t)d);
    if (!sm || !sl || !sacc || !gm || !gl || !gacc || !qs) goto out;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            int kh = h / grp;
            for (int j = 0; j < d; j++) qs[j] = kref_h2f(q[((size_t)b * nh + h) * d + j]) * qscale;
            for (int s = 0; s < p.splits; s++) {
                int p0 = s * p.chunk, p1 = p0 + p.chunk < ctx ? p0 + p.chunk : ctx;
                for (int w = 0; w < p.groups; w++) {
                    float m = -INFINITY, l = 0;
                    float *acc = gacc + (size_t)w * d;
                    for (int j = 0; j < d; j++) acc[j] = 0;
                    for (int pos = p0 + w; pos < p1; pos += p.groups) {
                        const uint16_t *k = kv + ((size_t)pos * B + b) * row + (size_t)kh * d, *v = k + (size_t)nkv * d;
                        float dot = 0;
                        for (int j = 0; j < d; j++) dot += qs[j] * kref_h2f(k[j]);
                        float mn = fmaxf(m, dot), corr = exp2f(m - mn), pe = exp2f(dot - mn);
                        l = l * corr + pe;
                        for (int j = 0; j < d; j++) acc[j] = acc[j] * corr + pe * kref_h2f(v[j]);
                        m = mn;
                    }
                    gm[w] = m, gl[w] = l;
                }
                /* the block's merge of its groups */
                float M = -INFINITY, L = 0;
                for (int w = 0; w < p.groups; w++)
                    if (gl[w] > 0) M = fmaxf(M, gm[w]);
                for (int w = 0; w < p.groups; w++)
                    if (gl[w] > 0) L += gl[w] * exp2f(gm[w] - M);
                for (int j = 0; j < d; j++) {
                    float a = 0;
                    for (int w = 0; w < p.groups; w++)
                        if (gl[w] > 0) a += gacc[(size_t)w * d + j] * exp2f(gm[w] - M);
                    sacc[(size_t)s * d + j] = a;
                }
                sm[s] = M, sl[s] = L;
            }
            /* the merge of the splits (with one split, the block's own division) */
            float M = -INFINITY, L = 0;
            for (int s = 0; s < p.splits; s++)
                if (sl[s] > 0) M = fmaxf(M, sm[s]);
            for (int s = 0; s < p.splits; s++)
                if (sl[s] > 0) L += sl[s] * exp2f(sm[s] - M);
            for (int j = 0; j < d; j++) {
                float a = 0;
                for (int s = 0; s < p.splits; s++)
                    if (sl[s] > 0) a += sacc[(size_t)s * d + j] * exp2f(sm[s] - M);
                out[((size_t)b * nh + h) * d + j] = f2h(a / L);
            }
        }
out:
    free(sm), free(sl), free(sacc), free(gm), free(gl), free(gacc), free(qs);
    return p.splits;
}

static double silu(double x) { return x / (1 + exp(-x)); }

void kref_activate_d(const uint16_t *x, double *out, int rows, int cols, int act) {
    INIT;
    for (int r = 0; r < rows; r++) {
        double *o = out + (size_t)r * cols;
        if (act == 2) {
            const uint16_t *xr = x + (size_t)r * 2 * cols;
            for (int c = 0; c < cols; c++) o[c] = silu(h2d(xr[c])) * h2d(xr[cols + c]);
        } else {
            const uint16_t *xr = x + (size_t)r * cols;
            for (int c = 0; c < cols; c++) o[c] = act == 1 ? fmax(0, h2d(xr[c])) : h2d(xr[c]);
        }
    }
}

void kref_activate_f(const uint16_t *x, uint16_t *out, int rows, int cols, int act) {
    INIT;
    for (int r = 0; r < rows; r++) {
        uint16_t *o = out + (size_t)r * cols;
        if (act == 2) {
            const uint16_t *xr = x + (size_t)r * 2 * cols;
            for (int c = 0; c < cols; c++) {
                float g = (float)h2d(xr[c]);
                o[c] = f2h(g / (1 + expf(-g)) * (float)h2d(xr[cols + c]));
            }
        } else {
            const uint16_t *xr = x + (size_t)r * cols;
            for (int c = 0; c < cols; c++) o[c] = act == 1 && !(h2d(xr[c]) > 0) ? 0 : xr[c];
        }
    }
}

void kref_rmsnorm_d(const uint16_t *x, double *out, int rows, int cols) {
    INIT;
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += h2d(x[(size_t)r * cols + c]) * h2d(x[(size_t)r * cols + c]);
        double k = 1.0 / sqrt(ss / cols + 1e-6);
        for (int c = 0; c < cols; c++) out[(size_t)r * cols + c] = h2d(x[(size_t)r * cols + c]) * k;
    }
}

void kref_rmsnorm_f(const uint16_t *x, uint16_t *out, int rows, int cols) {
    INIT;
    for (int r = 0; r < rows; r++) {
        float ss = 0;
        for (int c = 0; c < cols; c++) {
            float v = (float)h2d(x[(size_t)r * cols + c]);
            ss += v * v;
        }
        float k = 1.0f / sqrtf(ss / (float)cols + 1e-6f);
        for (int c = 0; c < cols; c++) out[(size_t)r * cols + c] = f2h((float)h2d(x[(size_t)r * cols + c]) * k);
    }
}

/* ---- 4-bit group-wise quantisation --------------------------------------------------------- */

size_t kref_quant_bytes(size_t outer, int G, int inner) {
    return outer * (size_t)((G + KREF_QGROUP - 1) / KREF_QGROUP) * (size_t)inner * KREF_QGROUP_BYTES;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v & 0xff), p[1] = (uint8_t)(v >> 8); }

void kref_quant_group(const uint8_t *q, size_t g, double *step, double *mn) {
    INIT;
    const uint8_t *p = q + g * KREF_QGROUP_BYTES;
    *step = h2d(rd16(p + 32)), *mn = h2d(rd16(p + 34));
}

double kref_quant_bound(double step, double mn, double xout) {
    return 0.5 * step + ldexp(15 * step + fabs(mn) + fabs(xout), -11) + 1e-7;
}

void kref_quant_d(const uint16_t *x, uint8_t *q, size_t outer, int G, int inner) {
    INIT;
    int ngrp = (G + KREF_QGROUP - 1) / KREF_QGROUP;
    for (size_t o = 0; o < outer; o++)
        for (int gr = 0; gr < ngrp; gr++)
            for (int i = 0; i < inner; i++) {
                size_t g = ((size_t)o * ngrp + gr) * inner + i;
                uint8_t *p = q + g * KREF_QGROUP_BYTES;
                int n = G - gr * KREF_QGROUP < KREF_QGROUP ? G - gr * KREF_QGROUP : KREF_QGROUP;
                const uint16_t *xs = x + ((size_t)o * G + (size_t)gr * KREF_QGROUP) * inner + i;
                double mn = INFINITY, mx = -INFINITY;
                for (int j = 0; j < n; j++) mn = fmin(mn, h2d(xs[(size_t)j * inner])), mx = fmax(mx, h2d(xs[(size_t)j * inner]));
                uint16_t sh = f2h((float)((mx - mn) / 15)), mh = f2h((float)mn);
                double step = h2d(sh), m0 = h2d(mh);
                memset(p, 0, 32);
                for (int j = 0; j < n; j++) {
                    double c = step > 0 ? floor((h2d(xs[(size_t)j * inner]) - m0) / step + 0.5) : 0;
                    int code = c < 0 ? 0 : c > 15 ? 15 : (int)c;
                    p[j / 2] |= (uint8_t)(code << (4 * (j & 1)));
                }
                wr16(p + 32, sh), wr16(p + 34, mh);
            }
}

void kref_dequant_d(const uint8_t *q, double *x, size_t outer, int G, int inner) {
    INIT;
    int ngrp = (G + KREF_QGROUP - 1) / KREF_QGROUP;
    for (size_t o = 0; o < outer; o++)
        for (int gr = 0; gr < ngrp; gr++)
            for (int i = 0; i < inner; i++) {
                size_t g = ((size_t)o * ngrp + gr) * inner + i;
                const uint8_t *p = q + g * KREF_QGROUP_BYTES;
                int n = G - gr * KREF_QGROUP < KREF_QGROUP ? G - gr * KREF_QGROUP : KREF_QGROUP;
                double step = h2d(rd16(p + 32)), mn = h2d(rd16(p + 34));
                for (int j = 0; j < n; j++)
                    x[((size_t)o * G + (size_t)gr * KREF_QGROUP + j) * inner + i] = mn + step * (p[j / 2] >> (4 * (j & 1)) & 15);
            }
}
