/* eng_budget: how long a kvpr-engine command will take on a machine a profile describes, so that a
 * GPU session (short, and paid by the second) can be planned on a machine without one. Decode
 * time comes from the simulator; the fixed costs are the rates below. They are assumptions, set on
 * the slow side of what such servers do; the GPU script logs each step's actual time next to its
 * prediction so the next session can correct them. */
#include "budget.h"
#include <math.h>
#include "../hwmodel/cost.h"
#include "../sim/sim.h"
#include "exec.h"

const eng_budget_rates eng_budget = {
    .start_s = 3.0,    /* process start, CUDA context, cuBLAS handle, module load */
    .pin_bps = 4e9,    /* cudaHostAlloc: the kernel zeroes and locks every page */
    .copy_bps = 10e9,  /* the set-up's replication, over up to 16 threads */
    .db_span_s = 4e-6, /* one span row in SQLite, inside the run's transaction */
};

kv_status eng_budget_run(const kv_model *m, const kv_plan *plans, int n, const hw_profile *p, double *setup_s, double *total_s) {
    const kv_plan *c = &plans[0];
    double dev, host;
    eng_plan_bytes(m, c, &dev, &host);
    double h = m->hidden, kv2 = 2.0 * kv_model_kv_dim(m), B = c->batch, P = c->prompt, L = kv_plan_layers(c, m), nb = c->nb;
    double krow = B * kv2 * 2, arow = B * h * 2, one = (P + c->gen) * (krow + arow);
    /* pin everything, fill one cache, prefill it on the device, replicate it */
    double prefill = hw_copy_time(p, HW_H2D, P * arow, 0, 0) + hw_gemm_time(p, P * B, h, kv2, 2) + hw_copy_time(p, HW_D2H, P * krow, 0, 0);
    double setup = eng_budget.start_s + host / eng_budget.pin_bps + (L * nb - 1) * one / eng_budget.copy_bps + prefill;
    double total = setup + host / (2 * eng_budget.pin_bps); /* unpinning at the end */
    sim_ctx *sx = sim_new();
    if (!sx) return kv_errorf(KV_ENOMEM, "out of memory");
    kv_status st = KV_OK;
    for (int i = 0; i < n && !st; i++) {
        sim_result r;
        kv_plan q = plans[i];
        if (q.policy == KV_POL_KVPR && q.split < 0) q.split = q.prompt * 3 / 4;
        if ((st = sim_run(sx, m, p, &q, &r))) break;
        double steps = kv_plan_steps(&q), wl = 2.0 * m->hidden * (m->n_heads * m->head_dim * 2.0 + kv2) +
                                                   2.0 * m->hidden * m->ffn * (m->gated_mlp ? 3 : 2);
        int thr = q.mode == KV_MODE_THROUGHPUT && q.policy != KV_POL_GPU;
        double upload = hw_copy_time(p, HW_H2D, (thr ? q.prefetch : L) * wl, 0, 0);
        if (q.policy == KV_POL_GPU) upload += hw_copy_time(p, HW_H2D, L * nb * P * krow, 0, 0);
        double spans = steps * L * nb * 7;
        /* upload, the warm-up step, the prompt pass and the timed steps, the results read back and written */
        total += upload + r.prefill_s + r.decode_s * (1 + 1 / steps) + spans * eng_budget.db_span_s + 0.05;
    }
    sim_free(sx);
    if (st) return st;
    *setup_s = setup;
    *total_s = total;
    return KV_OK;
}
