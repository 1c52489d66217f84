/* eng_quant (host): float (de)quantisation, the arithmetic of kernels/quant.cu step by step:
 * min and max in float (exact on fp16 inputs), step = fp16((max - min) / 15), min = fp16(min),
 * code = floor((x - min) / step + 0.5) clamped to [0, 15], value = fp16(fma(code, step, min)). */
#include "host_quant.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/ref.h"

void eng_quant_f(const eng_half *x, uint8_t *q, size_t outer, int G, int inner) {
    const float *h2f = kref_h2f_table();
    int ngrp = (G + KREF_QGROUP - 1) / KREF_QGROUP;
    for (size_t o = 0; o < outer; o++)
        for (int gr = 0; gr < ngrp; gr++)
            for (int i = 0; i < inner; i++) {
                uint8_t *p = q + (((size_t)o * ngrp + gr) * inner + i) * KREF_QGROUP_BYTES;
                int n = G - gr * KREF_QGROUP < KREF_QGROUP ? G - gr * KREF_QGROUP : KREF_QGROUP;
                const eng_half *xs = x + ((size_t)o * G + (size_t)gr * KREF_QGROUP) * inner + i;
                float mn = INFINITY, mx = -INFINITY;
                for (int j = 0; j < n; j++) {
                    float v = h2f[xs[(size_t)j * inner]];
                    mn = v < mn ? v : mn, mx = v > mx ? v : mx;
                }
                eng_half sh = kref_f2h((mx - mn) / 15.0f), mh = kref_f2h(mn);
                float step = h2f[sh], m0 = h2f[mh];
                memset(p, 0, 32);
                for (int j = 0; j < n; j++) {
                    float c = step > 0 ? floorf((h2f[xs[(size_t)j * inner]] - m0) / step + 0.5f) : 0.0f;
                    int code = c < 0 ? 0 : c > 15 ? 15 : (int)c;
                    p[j / 2] |= (uint8_t)(code << (4 * (j & 1)));
                }
                memcpy(p + 32, &sh, 2), memcpy(p + 34, &mh, 2);
            }
}

void eng_dequant_f(const uint8_t *q, eng_half *x, size_t outer, int G, int inner) {
    const float *h2f = kref_h2f_table();
    int ngrp = (G + KREF_QGROUP - 1) / KREF_QGROUP;
    for (size_t o = 0; o < outer; o++)
        for (int gr = 0; gr < ngrp; gr++)
            for (int i = 0; i < inner; i++) {
                const uint8_t *p = q + (((size_t)o * ngrp + gr) * inner + i) * KREF_QGROUP_BYTES;
                int n = G - gr * KREF_QGROUP < KREF_QGROUP ? G - gr * KREF_QGROUP : KREF_QGROUP;
                eng_half sh, mh;
                memcpy(&sh, p + 32, 2), memcpy(&mh, p + 34, 2);
                float step = h2f[sh], m0 = h2f[mh];
                eng_half *xs = x + ((size_t)o * G + (size_t)gr * KREF_QGROUP) * inner + i;
                for (int j = 0; j < n; j++) xs[(size_t)j * inner] = kref_f2h(fmaf((float)(p[j / 2] >> (4 * (j & 1)) & 15), step, m0));
            }
}

typedef struct {
    const eng_half *x;
    eng_half *y;
    const uint8_t *qs;
    uint8_t *qd;
    size_t outer;
    int G, inner;
} qarg;

static void run_quant(void *a) {
    qarg *q = a;
    eng_quant_f(q->x, q->qd, q->outer, q->G, q->inner);
    free(q);
}

static void run_dequant(void *a) {
    qarg *q = a;
    eng_dequant_f(q->qs, q->y, q->outer, q->G, q->inner);
    free(q);
}

/* the argument lives until the stream has run the function, which frees it */
static kv_status queue(eng_backend *b, int stream, void (*fn)(void *), const qarg *a) {
    qarg *c = malloc(sizeof *c);
    if (!c) return kv_errorf(KV_ENOMEM, "out of memory");
    *c = *a;
    kv_status st = eng_host_backend.host_fn(b, stream, fn, c);
    if (st) free(c);
    return st;
}

kv_status eng_host_quant(eng_backend *b, int stream, const eng_half *x, uint8_t *q, size_t outer, int G, int inner) {
    qarg a = {x, NULL, NULL, q, outer, G, inner};
    return outer ? queue(b, stream, run_quant, &a) : KV_OK;
}

kv_status eng_host_dequant(eng_backend *b, int stream, const uint8_t *q, eng_half *x, size_t outer, int G, int inner) {
    qarg a = {NULL, x, q, NULL, outer, G, inner};
    return outer ? queue(b, stream, run_dequant, &a) : KV_OK;
}
