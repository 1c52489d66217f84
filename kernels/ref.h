/* kref: CPU versions of the engine's kernels. The double-precision references are what every
 * kernel (CUDA, and the host backend's float versions) is tested against.
 * Layouts as in engine/backend.h: q [B][nh*d]; kv [ctx][B][2*nkv*d], K then V in each row;
 * out [B][nh*d]; grouped-query attention maps query head h to KV head h / (nh / nkv). */
#ifndef KREF_H
#define KREF_H

#include <stddef.h>
#include <stdint.h>

/* fp16 bit pattern <-> float, round to nearest even */
float kref_h2f(uint16_t h);
/* the same as a table of all 65536 values (for loops that convert many) */
const float *kref_h2f_table(void);
uint16_t kref_f2h(float f);
/* max |a - ref| / max |ref| over n elements; infinite if an element of a is not finite (a poisoned
 * output element that a kernel left unwritten) */
double kref_relerr(const uint16_t *a, const double *ref, size_t n);

void kref_attention_d(const uint16_t *q, const uint16_t *kv, double *out, int B, int ctx, int nh, int nkv, int d);
void kref_attention_f(const uint16_t *q, const uint16_t *kv, uint16_t *out, int B, int ctx, int nh, int nkv, int d);
/* The CUDA kernel's flash-decoding arithmetic on the CPU, in float: the partition of
 * kattn_make_plan(B, ctx, nh, nkv, d, sms, ws_bytes) (kernels/attn_split.h), an online softmax per
 * position group in base 2, the groups merged per block, the splits merged last. Checks the split
 * and merge arithmetic where no GPU runs it. Returns the number of splits used. */
int kref_attention_split_f(const uint16_t *q, const uint16_t *kv, uint16_t *out, int B, int ctx, int nh, int nkv, int d, int sms,
                           size_t ws_bytes);
/* act 1: ReLU, out [rows][cols] from x [rows][cols]; act 2: x rows are [gate | up] (2*cols),
 * out [rows][cols] = silu(gate) * up. kref_activate_f may run in place for ReLU. */
void kref_activate_d(const uint16_t *x, double *out, int rows, int cols, int act);
void kref_activate_f(const uint16_t *x, uint16_t *out, int rows, int cols, int act);

/* out[r] = x[r] / sqrt(mean(x[r]^2) + 1e-6) */
void kref_rmsnorm_d(const uint16_t *x, double *out, int rows, int cols);
void kref_rmsnorm_f(const uint16_t *x, uint16_t *out, int rows, int cols);

/* 4-bit group-wise quantisation (--compress; the layout is sched/graph.h's: x viewed as
 * [outer][G][inner], groups of up to 64 along G, 36 bytes per group: 32 bytes of codes, the fp16
 * step (max - min) / 15 and the fp16 minimum; value = min + code * step). The reference finds min and
 * max and the codes in double (a code is round((x - min) / step), ties away from zero, clamped to
 * [0, 15]), with step and min rounded to fp16 first, as they are stored. kref_dequant_d gives the
 * reconstruction in double. */
#define KREF_QGROUP 64
#define KREF_QGROUP_BYTES 36
size_t kref_quant_bytes(size_t outer, int G, int inner);
void kref_quant_d(const uint16_t *x, uint8_t *q, size_t outer, int G, int inner);
void kref_dequant_d(const uint8_t *q, double *x, size_t outer, int G, int inner);
/* The bound the kernels are tested against, per element: half a step (round to nearest), the fp16
 * rounding of the stored step over 15 codes and of the minimum, and the fp16 rounding of the
 * output: |x' - x| <= 0.5 step + 2^-11 (15 step + |min| + |x'|) + 1e-7. */
double kref_quant_bound(double step, double mn, double xout);
/* The step and minimum of group g of packed data (for the bound). */
void kref_quant_group(const uint8_t *q, size_t g, double *step, double *mn);

#endif
