/* Hardware profiles: loading never crashes; what loads is in its physical ranges and prints as
 * JSON that loads back to exactly the same values. */
#include "../../hwmodel/profile.h"
#include "fuzz.h"

static int same_val(const hw_val *a, const hw_val *b) { return a->value == b->value && !strcmp(a->source, b->source); }

static int same_table(const hw_table *a, const hw_table *b) {
    if (a->n != b->n || strcmp(a->source, b->source)) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->x[i] != b->x[i] || a->y[i] != b->y[i]) return 0;
    return 1;
}

static int same_dir(const hw_link_dir *a, const hw_link_dir *b) {
    return same_val(&a->bandwidth, &b->bandwidth) && same_val(&a->overhead, &b->overhead) && same_val(&a->pageable, &b->pageable) &&
           same_val(&a->duplex, &b->duplex) && same_table(&a->size_eff, &b->size_eff);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *t = fuzz_text(data, size);
    hw_profile a, b;
    if (hw_profile_parse(t, "fuzz.json", &a) == KV_OK) {
        char *js = hw_profile_to_json(&a);
        FUZZ_CHECK(js, "a loaded profile cannot be printed");
        FUZZ_CHECK(hw_profile_parse(js, "again", &b) == KV_OK, "printed profile does not load back: %s", kv_errmsg());
        FUZZ_CHECK(!strcmp(a.name, b.name) && !strcmp(a.description, b.description) && !strcmp(a.gpu.name, b.gpu.name) &&
                       !strcmp(a.link.name, b.link.name) && !strcmp(a.cpu.name, b.cpu.name),
                   "names changed");
        FUZZ_CHECK(same_val(&a.gpu.peak_flops, &b.gpu.peak_flops) && same_val(&a.gpu.hbm_bw, &b.gpu.hbm_bw) &&
                       same_val(&a.gpu.mem_bytes, &b.gpu.mem_bytes) && same_val(&a.gpu.launch, &b.gpu.launch) &&
                       same_val(&a.gpu.attn_eff, &b.gpu.attn_eff) && same_val(&a.gpu.hbm_eff, &b.gpu.hbm_eff) && same_table(&a.gpu.gemm_eff, &b.gpu.gemm_eff) &&
                       a.gpu.memory_floor == b.gpu.memory_floor,
                   "gpu values changed");
        FUZZ_CHECK(same_dir(&a.link.h2d, &b.link.h2d) && same_dir(&a.link.d2h, &b.link.d2h), "link values changed");
        FUZZ_CHECK(same_val(&a.cpu.mem_bw, &b.cpu.mem_bw) && same_val(&a.cpu.mem_bytes, &b.cpu.mem_bytes) &&
                       same_val(&a.cpu.attn_flops, &b.cpu.attn_flops),
                   "cpu values changed");
        (void)hw_table_eval(&a.gpu.gemm_eff, 4096);
        free(js);
    }
    free(t);
    return 0;
}
