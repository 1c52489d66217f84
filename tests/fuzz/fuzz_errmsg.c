/* Error messages and names: whatever bytes a file holds, a message is one line of UTF-8 without
 * control characters, copies cut between characters, and names are plain. */
#include "../../core/kv_err.h"
#include "../../core/kv_str.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *t = fuzz_text(data, size);
    kv_errorf(KV_EPARSE, "file: key '%s'", t);
    kv_errctx(KV_EPARSE, "%s: ", t);
    const char *m = kv_errmsg();
    for (const unsigned char *c = (const unsigned char *)m; *c; c++) FUZZ_CHECK(*c >= 0x20 && *c != 0x7f, "control byte 0x%02x", *c);
    FUZZ_CHECK(kv_str_utf8_ok(m), "message is not UTF-8");
    for (size_t n = 1; n < 80; n += 13) {
        char buf[80];
        int cut = kv_str_copy(buf, n, t);
        FUZZ_CHECK(strlen(buf) < n && (cut || !strcmp(buf, t)), "copy of %zu", n);
        if (kv_str_utf8_ok(t)) FUZZ_CHECK(kv_str_utf8_ok(buf), "cut inside a character");
    }
    if (kv_str_is_name(t, 63))
        FUZZ_CHECK(!strchr(t, '/') && t[0] != '.' && strlen(t) <= 63 && !strpbrk(t, "'\"`;$ \\"), "name '%s' is not plain", t);
    free(t);
    return 0;
}
