/* kattn: how the decode-attention kernel divides its work (flash-decoding), in plain C so that the
 * CUDA launcher and the CPU emulation in kernels/ref.c (tested where there is no GPU) use the same
 * partition.
 *
 * One block per (sequence, KV head, split of the context): it reads each position's K and V of its
 * KV head once, as 16-byte vectors (8 fp16 values per thread, `tpp` threads per position), and
 * serves every query head of the group that shares that KV head (GQA), up to KATTN_G heads per
 * pass. The block's threads form `groups` position groups; group w takes positions p0 + w,
 * p0 + w + groups, ... of its split, keeping an online softmax (running max m, sum l, weighted V
 * sum) per head. The groups are merged in the block, and when the context is split the splits are
 * merged by a second kernel: with M = max_s m_s, out = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).
 * Scores are kept in base 2: q is scaled by log2(e) / sqrt(d) once. */
#ifndef KATTN_SPLIT_H
#define KATTN_SPLIT_H

#include <stddef.h>

#define KATTN_THREADS 128   /* threads per block */
#define KATTN_G 8           /* query heads per pass at most */
#define KATTN_MIN_CHUNK 64  /* positions per split at least: fewer would cost more to merge than to read */
#define KATTN_MAX_SPLITS 128
#define KATTN_LOG2E 1.4426950408889634

typedef struct {
    int tpp;     /* threads per position: d/8 rounded up to a power of two, at least 4 */
    int groups;  /* position groups per block: KATTN_THREADS / tpp */
    int g;       /* heads per pass: the group size rounded up to 1, 2, 4 or 8 */
    int passes;  /* passes over a KV head's positions: ceil(group size / g) */
    int splits;  /* blocks along the context; every split holds at least one position */
    int chunk;   /* positions per split (the last may hold fewer) */
    int u;       /* positions per group loaded before use: 16-byte K and V loads in flight per thread */
} kattn_plan;

/* The load depths compiled for g heads per pass (kernels/attention.cu). The default is the one
 * measured faster (traces/nvidia-h200-2026-11-26/attn-tune.csv, make attn-tune): for one head per
 * pass, 2 (9 blocks resident per SM instead of 7: 100-103 % of a device copy's rate at batch 32-64,
 * context 2048-8192, against 79-94 % with 4); for 4 heads 4, for 8 heads 2 (more loads in flight
 * outweigh the lost occupancy). 2 heads were not measured and follow 1. */
static inline int kattn_u_default(int g) { return g <= 2 ? 2 : g == 4 ? 4 : 2; }
static inline int kattn_u_other(int g) { return g <= 2 ? 4 : g == 4 ? 2 : 1; }

/* The vectorised kernel needs 16-byte rows (d a multiple of 8) and at most 32 threads per position. */
static inline int kattn_vec_ok(int d) { return d > 0 && d % 8 == 0 && d <= 256; }

/* Workspace bytes per split: per (sequence, head) the d partial sums and (m, l). */
static inline size_t kattn_ws_per_split(int B, int nh, int d) { return (size_t)B * (size_t)nh * ((size_t)d + 2) * sizeof(float); }

/* Splits so that about four blocks per multiprocessor run (the rule before occupancy was known). */
static inline long kattn_splits_four(long base, int sms) {
    long target = 4L * (sms > 0 ? sms : 1);
    return base >= target ? 1 : (target + base - 1) / base;
}

/* Splits by waves: with `slots` blocks resident at once (multiprocessors x blocks per
 * multiprocessor), n blocks of equal length take ceil(n / slots) waves, so a grid of 1.1 waves
 * runs at 55 % of the device. The fewest splits (each one costs a merge) whose last wave is at
 * least 90 % full, else the best filled; at most `most`. */
static inline long kattn_splits_waves(long base, long slots, long most) {
    if (slots < 1) slots = 1;
    long best = 1;
    double best_eff = 0;
    for (long s = 1; s <= most; s++) {
        long n = base * s, waves = (n + slots - 1) / slots;
        double eff = (double)n / ((double)waves * (double)slots);
        if (eff >= 0.9) return s;
        if (eff > best_eff + 1e-12) best_eff = eff, best = s;
    }
    return best;
}

/* sms: the device's multiprocessors; per_sm: blocks of the chosen kernel resident per
 * multiprocessor (0: unknown, split for four per multiprocessor); ws_bytes: workspace available
 * for split results (0: no split). */
static inline kattn_plan kattn_make_plan_occ(int B, int ctx, int nh, int nkv, int d, int sms, int per_sm, size_t ws_bytes) {
    kattn_plan p;
    int v = (d + 7) / 8, t = 4;
    while (t < v) t *= 2;
    p.tpp = t;
    p.groups = KATTN_THREADS / t;
    int grp = nh / nkv;
    p.g = grp <= 1 ? 1 : grp <= 2 ? 2 : grp <= 4 ? 4 : KATTN_G;
    p.passes = (grp + p.g - 1) / p.g;
    p.u = kattn_u_default(p.g);
    long base = (long)B * nkv * p.passes;
    long most = ctx / KATTN_MIN_CHUNK;
    if (most > KATTN_MAX_SPLITS) most = KATTN_MAX_SPLITS;
    size_t per = kattn_ws_per_split(B, nh, d);
    if (most > 1 && (size_t)most * per > ws_bytes) most = (long)(ws_bytes / per);
    if (most < 1) most = 1;
    /* small batches would leave most multiprocessors idle: split the context */
    long s = per_sm > 0 ? kattn_splits_waves(base, (long)(sms > 0 ? sms : 1) * per_sm, most) : kattn_splits_four(base, sms);
    if (s > most) s = most;
    if (s < 1) s = 1;
    p.chunk = (int)((ctx + s - 1) / s);
    p.splits = (ctx + p.chunk - 1) / p.chunk; /* rounding can leave the last split empty: drop it */
    return p;
}

static inline kattn_plan kattn_make_plan(int B, int ctx, int nh, int nkv, int d, int sms, size_t ws_bytes) {
    return kattn_make_plan_occ(B, ctx, nh, nkv, d, sms, 0, ws_bytes);
}

#endif
