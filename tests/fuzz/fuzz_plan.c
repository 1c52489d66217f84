/* Plans stored as JSON in results.db (shards come from other machines): reading one back never
 * crashes, and what reads back prints again. */
#include "../../core/plan.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *t = fuzz_text(data, size);
    kv_plan p;
    if (kv_plan_from_json(t, &p) == KV_OK) {
        char *js = kv_plan_json(&p);
        FUZZ_CHECK(js, "a plan that was read cannot be written");
        free(js);
        free(p.split_steps);
    }
    free(t);
    return 0;
}
