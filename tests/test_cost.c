/* Cost functions: known answers computed by hand from the profile values. */
#include "../hwmodel/cost.h"
#include "tests.h"


static void t_copy(void **s) {
    (void)s;
    hw_profile pp = hwp("paper-a100"), a = hwp("a100-40gb-pcie4");
    assert_rel(hw_copy_time(&pp, HW_H2D, 32e9, 0, 0), 1.0, 1e-15);
    assert_rel(hw_copy_time(&pp, HW_D2H, 16e6, 0, 1), 0.5e-3, 1e-15);
    assert_true(hw_copy_time(&pp, HW_H2D, 0, 0, 0) == 0);
    /* a100: 1 GB sits at the top of the size table (eff 1): alpha + bytes / 26 GB/s */
    assert_rel(hw_copy_time(&a, HW_H2D, 1e9, 0, 0), 5e-6 + 1e9 / 26e9, 1e-12);
    /* 10 MB: eff 0.76 */
    assert_rel(hw_copy_time(&a, HW_H2D, 1e7, 0, 0), 5e-6 + 1e7 / (26e9 * 0.76), 1e-12);
    /* both directions busy: H2D keeps 0.46 of its plateau */
    assert_rel(hw_copy_time(&a, HW_H2D, 1e9, 0, 1), 5e-6 + 1e9 / (26e9 * 0.46), 1e-12);
    /* pageable: 12 GB/s plateau */
    assert_rel(hw_copy_time(&a, HW_H2D, 1e9, 1, 0), 5e-6 + 1e9 / 12e9, 1e-12);
    /* the overhead dominates small copies: 32 KB reaches under a quarter of the link */
    assert_true(hw_copy_bw(&a, HW_H2D, 32768, 0, 0) < 0.25 * 26e9);
}

static void t_gemm(void **s) {
    (void)s;
    hw_profile pp = hwp("paper-a100"), a = hwp("a100-40gb-pcie4");
    /* paper: pure compute, no launch */
    assert_rel(hw_gemm_time(&pp, 8192, 8192, 8192, 2), 2.0 * 8192 * 8192 * 8192 / 312e12, 1e-15);
    assert_rel(hw_gemm_time(&pp, 1, 4096, 4096, 2), 2.0 * 4096 * 4096 / 312e12, 1e-15);
    /* a100, large: compute-bound at 0.75 of peak, plus 3 us launch */
    assert_rel(hw_gemm_time(&a, 8192, 8192, 8192, 2), 2.0 * 8192 * 8192 * 8192 / (312e12 * 0.75) + 3e-6, 1e-12);
    /* a100, M = 1: memory-bound, reads the 4096x4096 weights once at 90 % of the datasheet HBM rate */
    double bytes = (4096.0 + 4096.0 * 4096 + 4096.0) * 2;
    assert_rel(hw_gemm_time(&a, 1, 4096, 4096, 2), bytes / (1555e9 * 0.9) + 3e-6, 1e-12);
    /* a profile without the field reads at the datasheet rate */
    hw_profile nf = a;
    nf.gpu.hbm_eff.value = 1;
    assert_rel(hw_gemm_time(&nf, 1, 4096, 4096, 2), bytes / 1555e9 + 3e-6, 1e-12);
    assert_true(hw_gemm_time(&a, 0, 4096, 4096, 2) == 0);
    /* a calibrated host profile: the memory term adds to the compute term (operands converted, then
     * sgemm): 2 x 4096^2 / (312e12 x 0.75) ... at M = 1 eff is the table's first value */
    hw_profile ad = a;
    ad.gpu.gemm_additive = 1;
    double fl = 2.0 * 4096 * 4096;
    assert_rel(hw_gemm_time(&ad, 1, 4096, 4096, 2), fl / (312e12 * hw_table_eval(&a.gpu.gemm_eff, 1)) + bytes / (1555e9 * 0.9) + 3e-6, 1e-12);
}

/* Decode attention with the calibrated fields: streaming + per-head work + fixed + launch. */
static void t_attn_calibrated(void **s) {
    (void)s;
    hw_profile a = hwp("a100-40gb-pcie4");
    kv_model m = mdl("Llama-3-8B"); /* 32 query heads of 128 over 8 KV heads */
    /* without the fields: max(tensor rate, streaming) + launch; 8 x 1024 positions (ctx 1023 + the new one) */
    double kv = 8.0 * 1024 * 2 * 8 * 128 * 2, fl = 4.0 * 8 * 1024 * 32 * 128;
    assert_rel(hw_attn_time(&a, &m, 8, 1023), fmax(fl / 312e12, kv / (1555e9 * a.gpu.attn_eff.value)) + 3e-6, 1e-12);
    a.gpu.attn_flops.value = 20e12, a.gpu.attn_fixed.value = 4e-6;
    assert_rel(hw_attn_time(&a, &m, 8, 1023), kv / (1555e9 * a.gpu.attn_eff.value) + fl / 20e12 + 4e-6 + 3e-6, 1e-12);
}

static void t_attention(void **s) {
    (void)s;
    hw_profile a = hwp("a100-40gb-pcie4");
    kv_model o = mdl("OPT-6.7B");
    /* reads K and V of 1024 + 1 positions, 16 KiB each, for 8 sequences, at 0.8 of 1555 GB/s */
    double kv = 8.0 * 1025 * 16384;
    assert_rel(hw_attn_time(&a, &o, 8, 1024), kv / (1555e9 * 0.8) + 3e-6, 1e-12);
    /* CPU: 164 GB/s and 0.164 TFLOP/s at 1 FLOP/byte: both limits agree */
    assert_rel(hw_cpu_attn_time(&a, &o, 8, 1024), fmax(4.0 * 8 * 1025 * 4096 / 0.164e12, kv / 164e9), 1e-12);
    hw_profile t4 = hwp("t4");
    /* FlexGen's T4 host: its fitted 0.0123 TFLOP/s dominates */
    assert_rel(hw_cpu_attn_time(&t4, &o, 8, 1024), 4.0 * 8 * 1025 * 4096 / 0.0123e12, 1e-12);
}

static void t_recompute_and_layer(void **s) {
    (void)s;
    hw_profile pp = hwp("paper-a100"), a = hwp("a100-40gb-pcie4");
    kv_model o = mdl("OPT-6.7B");
    /* paper: t_rec = 4 b l h^2 / v_gpu */
    assert_rel(hw_recompute_time(&pp, &o, 64, 448), 4.0 * 64 * 448 * 4096.0 * 4096 / 312e12, 1e-15);
    assert_true(hw_recompute_time(&pp, &o, 64, 0) == 0);
    hw_layer_cost c = hw_decode_layer(&a, &o, 64, 512);
    assert_rel(c.total, c.qkv + c.attn + c.out + c.mlp + c.other, 1e-15);
    assert_rel(c.qkv, hw_gemm_time(&a, 64, 4096, 3 * 4096, 2), 1e-15);
    assert_rel(c.mlp, hw_gemm_time(&a, 64, 4096, 16384, 2) + hw_gemm_time(&a, 64, 16384, 4096, 2), 1e-15);
    assert_rel(c.attn, hw_attn_time(&a, &o, 64, 512), 1e-15);
    /* a gated MLP reads the gate and up matrices */
    kv_model l3 = mdl("Llama-3-8B");
    hw_layer_cost g = hw_decode_layer(&a, &l3, 64, 512);
    assert_rel(g.mlp, hw_gemm_time(&a, 64, 4096, 2 * 14336, 2) + hw_gemm_time(&a, 64, 14336, 4096, 2), 1e-15);
}

static void t_paper_model(void **s) {
    (void)s;
    hw_profile pp = hwp("paper-a100");
    /* method.md: l*:s ~ 0.70 (6.7B), 0.66 (13B), 0.58 (30B) at 32 GB/s and 312 TFLOP/s */
    struct { const char *m; double r; } k[] = {{"OPT-6.7B", 0.70}, {"OPT-13B", 0.66}, {"OPT-30B", 0.58}};
    for (int i = 0; i < 3; i++) {
        kv_model m = mdl(k[i].m);
        double ls = hw_paper_lstar(&pp, &m, 1000);
        assert_true(fabs(ls / 1000 - k[i].r) < 0.006);
        hw_paper_cost c = hw_paper_layer(&pp, &m, 64, 1000, 700);
        assert_rel(c.total, c.t_act + fmax(c.t_rec, c.t_kv), 1e-15);
    }
    kv_model o = mdl("OPT-6.7B");
    /* exact closed form for h = 4096: l* = s * 624e12 / (2*4096*32e9 + 624e12) */
    assert_rel(hw_paper_lstar(&pp, &o, 640), 640 * 624e12 / (2.0 * 4096 * 32e9 + 624e12), 1e-14);
    /* at the real-valued l*, t_rec == t_kv: check through T at neighbouring integers */
    hw_paper_cost c0 = hw_paper_layer(&pp, &o, 64, 640, 0);
    assert_rel(c0.total, 2.0 * 64 * 640 * 4096 * 2 / 32e9, 1e-15);
    double ls = hw_paper_lstar(&pp, &o, 640);
    hw_paper_cost lo = hw_paper_layer(&pp, &o, 64, 640, (int)floor(ls)), hi = hw_paper_layer(&pp, &o, 64, 640, (int)ceil(ls));
    assert_true(lo.t_rec <= lo.t_kv && hi.t_rec >= hi.t_kv);
}

void group_cost(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_copy), cmocka_unit_test(t_gemm), cmocka_unit_test(t_attn_calibrated), cmocka_unit_test(t_attention),
                                   cmocka_unit_test(t_recompute_and_layer), cmocka_unit_test(t_paper_model)};
    RUN_GROUP(c, "cost", t);
}
