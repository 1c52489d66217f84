/* config.json: loading never crashes; an accepted model has every size exact (no overflow, which
 * UBSan would report), a positive K/V width and a UTF-8 name. */
#include "../../core/kv_str.h"
#include "../../core/model.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_model m;
    if (kv_model_parse_hf((const char *)data, size, "fuzz.json", &m) == KV_OK) {
        FUZZ_CHECK(kv_model_kv_dim(&m) > 0, "kv_dim %d", kv_model_kv_dim(&m));
        FUZZ_CHECK(kv_model_bytes_total(&m) >= kv_model_params_total(&m), "sizes wrap");
        FUZZ_CHECK(kv_model_kv_bytes_token_layer(&m) > 0, "zero K/V per token");
        FUZZ_CHECK(kv_str_utf8_ok(m.name) && kv_str_utf8_ok(m.family), "name is not UTF-8");
        (void)kv_model_decode_flops_layer(&m, 1, 1000);
        (void)kv_model_recompute_flops(&m, 1000);
    }
    return 0;
}
