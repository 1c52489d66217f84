/* Experiment files: parsing never crashes; what parses has a plain name and a run list of the
 * size the sweep says, whatever the lists repeat. */
#include "../../core/kv_str.h"
#include "../../exp/exp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static exp_spec s;
    char *t = fuzz_text(data, size);
    if (exp_parse_text(t, "fuzz.exp", &s) == KV_OK) {
        FUZZ_CHECK(kv_str_is_name(s.name, EXP_NAME_MAX), "name '%s' accepted", s.name);
        exp_run *r;
        int n;
        if (exp_runs(&s, &r, &n) == KV_OK) {
            char key[512];
            for (int i = 0; i < n; i++) exp_run_key(&s, &r[i], key, sizeof key);
            free(r);
        }
    }
    free(t);
    return 0;
}
